"""Model registry: built-in ResNets, torchvision / timm names, and a user's ``module:callable`` (its weights
read and checked: tuner.weights).

Every model is built as torchvision's builders are: ``builder(num_classes=N)``. The built-in
ResNets use torchvision's parameter names, so a torchvision state_dict loads as is.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import sys
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from tuner.errors import ModelError, one_line

# ---------------------------------------------------------------- built-in ResNets (torchvision layout)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + identity)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.relu(self.bn3(self.conv3(out)) + identity)


class ResNet(nn.Module):
    def __init__(self, block: type[BasicBlock | Bottleneck], layers: list[int], num_classes: int = 1000):
        super().__init__()
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = self._make_layer(block, 64, layers[0])
        self.layer2 = self._make_layer(block, 128, layers[1], 2)
        self.layer3 = self._make_layer(block, 256, layers[2], 2)
        self.layer4 = self._make_layer(block, 512, layers[3], 2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512 * block.expansion, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def _make_layer(
        self, block: type[BasicBlock | Bottleneck], planes: int, blocks: int, stride: int = 1
    ) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride, bias=False),
                nn.BatchNorm2d(planes * block.expansion),
            )
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


BUILTIN: dict[str, Callable[..., nn.Module]] = {
    "resnet18": lambda num_classes=1000: ResNet(BasicBlock, [2, 2, 2, 2], num_classes),
    "resnet34": lambda num_classes=1000: ResNet(BasicBlock, [3, 4, 6, 3], num_classes),
    "resnet50": lambda num_classes=1000: ResNet(Bottleneck, [3, 4, 6, 3], num_classes),
}

# ---------------------------------------------------------------- resolving a --model name


def resolve_builder(name: str) -> Callable[..., nn.Module]:
    """Map a --model value to a builder taking ``num_classes=``; raise ModelError if none fits."""
    if is_saved_module(name):
        return _saved_builder(Path(name))
    if name in BUILTIN:
        return BUILTIN[name]
    if ":" in name:
        return _user_callable(name)
    for lookup in (_torchvision_builder, _timm_builder):
        builder = lookup(name)
        if builder is not None:
            return builder
    raise ModelError(
        f"unknown model {name!r}; use one of {', '.join(BUILTIN)}, a torchvision or timm name "
        "(with that package installed), or module:callable / path/to/file.py:callable."
    )


def create_model(name: str, num_classes: int) -> nn.Module:
    builder = resolve_builder(name)
    try:
        model = builder(num_classes=num_classes)
    except SystemExit as err:  # a builder that exits must not end the tuner without a word
        raise ModelError(
            f"model {name!r} called sys.exit({err.code!r}) while being built; a model builder "
            "must return the module, not exit."
        ) from None
    except Exception as err:  # noqa: BLE001 - a user's callable can raise anything; report it in one line
        raise ModelError(
            f"model {name!r} could not be built with num_classes={num_classes} ({one_line(err, 200, whole=True)}); "
            "fix the builder, or pass another --model."
        ) from None
    if not isinstance(model, nn.Module):
        raise ModelError(f"model {name!r} returned {type(model).__name__}, not a torch.nn.Module.")
    return model


def _user_callable(spec: str) -> Callable[..., nn.Module]:
    target, _, attr = spec.rpartition(":")
    try:
        if target.endswith(".py"):
            path = Path(target)
            if not path.is_file():
                raise ModelError(f"model file {target} does not exist; pass path/to/file.py:callable.")
            module_spec = importlib.util.spec_from_file_location(f"_tuner_user_{path.stem}", path)
            assert module_spec is not None and module_spec.loader is not None
            module = importlib.util.module_from_spec(module_spec)
            sys.modules[module_spec.name] = module  # lets pickling / spawn find the classes
            module_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(target)
    except ModelError:
        raise
    except SystemExit as err:
        raise ModelError(
            f"importing {target!r} for model {spec!r} called sys.exit({err.code!r}); guard its "
            "script code with `if __name__ == '__main__':`."
        ) from None
    except Exception as err:  # noqa: BLE001 - a user's module can raise anything on import
        raise ModelError(f"cannot import {target!r} for model {spec!r}: {one_line(err, 200, whole=True)}") from None
    builder = getattr(module, attr, None)
    if not callable(builder):
        raise ModelError(f"{target!r} has no callable {attr!r}; pass module:callable naming a model builder.")
    return builder


# ---------------------------------------------------------------- a module given to tuner.tune in memory

SAVED_MODULE, SAVED_META, SAVED_FORMAT = "module.pt", "module.json", "tuner-module/1"


def save_module(module: nn.Module, out: Path, how: str, name: str) -> Path:
    """Save a whole module (a torch.fx GraphModule, or a module whose class is importable) with its weights, so
    that a trial's process, the re-measure and export rebuild it (``tune`` saves it once, keyed by content)."""
    import json

    torch.save(module, out / SAVED_MODULE)
    (out / SAVED_META).write_text(json.dumps({"format": SAVED_FORMAT, "how": how, "class": name}))
    return out / SAVED_MODULE


def is_saved_module(name: str) -> bool:
    path = Path(name)
    return path.name == SAVED_MODULE and (path.parent / SAVED_META).is_file()


def carries_weights(name: str) -> bool:
    """The model brings its own trained weights (a saved module): no --weights, no baseline to train."""
    return is_saved_module(name)


def _saved_builder(path: Path) -> Callable[..., nn.Module]:
    def build(num_classes: int) -> nn.Module:  # the module's classifier is what it is: check_forward tells
        # Not weights_only: the file is the tuner's own (save_module), in the cache tune() wrote it to; it holds
        # the module's code (fx-generated, or a reference to an importable class) as well as its weights.
        return torch.load(path, map_location="cpu", weights_only=False)

    return build


def _torchvision_builder(name: str) -> Callable[..., nn.Module] | None:
    from tuner.zoo import torchvision_models

    try:
        tvm = torchvision_models()  # importable beside the CPU torch wheel too (see tuner.zoo)
    except Exception:  # noqa: BLE001 - not installed, or an ABI-mismatched build: treat as absent
        return None
    if name not in tvm.list_models():
        return None
    return lambda num_classes: tvm.get_model(name, weights=None, num_classes=num_classes)


def _timm_builder(name: str) -> Callable[..., nn.Module] | None:
    try:
        import timm
    except Exception:  # noqa: BLE001 - as torchvision above
        return None
    if not timm.is_model(name):
        return None
    return lambda num_classes: timm.create_model(name, pretrained=False, num_classes=num_classes)


def source_id(name: str) -> str:
    """What defines the model's code, for cache keys: the hash of a user's file (``file.py:callable`` or the
    module's file of ``module:callable``), of this file for the built-in ResNets, or the version of the
    torchvision / timm package. (A user's file is hashed alone: edits to modules it imports are not seen.)"""
    if is_saved_module(name):  # the saved file holds the module's code and weights
        return f"file:{_file_hash(Path(name))}"
    if name in BUILTIN:
        return f"tuner.models:{_file_hash(Path(__file__))}"
    if ":" in name:
        target = name.rpartition(":")[0]
        path: Path | None = Path(target) if target.endswith(".py") else None
        if path is None:
            try:
                found = importlib.util.find_spec(target)
            except (ImportError, ValueError):
                found = None
            origin = getattr(found, "origin", None)
            path = Path(origin) if origin and Path(origin).is_file() else None
        return f"file:{_file_hash(path)}" if path is not None and path.is_file() else f"module:{target}"
    from importlib import metadata

    package = "torchvision" if _torchvision_builder(name) is not None else "timm"
    try:
        return f"{package}=={metadata.version(package)}"
    except metadata.PackageNotFoundError:
        return package


def _file_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:20]


def check_forward(model: nn.Module, example: torch.Tensor, num_classes: int, name: str, train: bool = False) -> None:
    """Run one real batch through the model as the tuner will (one input, (batch, classes) logits out), so that
    a model that takes two inputs, returns a tuple or exits fails here, in one line, and not deep in a trial."""
    mode = "training" if train else "evaluation"
    required = _required_inputs(model)
    if required is not None and required != 1:
        raise ModelError(
            f"model {name!r}: forward takes {required} required inputs; the tuner calls forward(x) with "
            "one image batch (batch, 3, H, W): give the others defaults, or wrap the model."
        )
    was_training = model.training
    model.train(train)
    try:
        with torch.random.fork_rng(devices=[]), torch.set_grad_enabled(train):
            out = model(example)
    except SystemExit as err:
        raise ModelError(f"model {name!r} called sys.exit({err.code!r}) in forward; it must return logits.") from None
    except Exception as err:  # noqa: BLE001 - the user's forward can raise anything
        raise ModelError(
            f"model {name!r} fails on a batch of {len(example)} images {tuple(example.shape)} in "
            f"{mode} mode ({one_line(err, 200, whole=True)}); it must take one (batch, 3, H, W) tensor."
        ) from None
    finally:
        model.train(was_training)
    expected = (len(example), num_classes)
    if not isinstance(out, torch.Tensor):
        raise ModelError(
            f"model {name!r} returns a {type(out).__name__} in {mode} mode, not a tensor; return the "
            f"logits alone, shaped (batch, classes) = {expected}."
        )
    if tuple(out.shape) != expected:
        raise ModelError(
            f"model {name!r} returns shape {tuple(out.shape)} for a batch of {len(example)}; expected "
            f"(batch, classes) = {expected} logits (the data has {num_classes} classes: build the "
            "classifier with num_classes)."
        )


def _required_inputs(model: nn.Module) -> int | None:
    try:
        params = inspect.signature(model.forward).parameters.values()
    except (TypeError, ValueError):  # a builtin or C forward: let the call tell
        return None
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    if any(p.kind == inspect.Parameter.VAR_POSITIONAL for p in params):
        return None
    return sum(1 for p in params if p.kind in positional and p.default is inspect.Parameter.empty)
