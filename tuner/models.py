"""Model registry: built-in ResNets, torchvision / timm names, and a user's ``module:callable``.

Every model is built as torchvision's builders are: ``builder(num_classes=N)``. The built-in
ResNets use torchvision's parameter names, so a torchvision state_dict loads as is.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tuner.errors import ModelError

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

    def _make_layer(self, block: type[BasicBlock | Bottleneck], planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
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
    except Exception as err:  # noqa: BLE001 - a user's callable can raise anything; report it in one line
        raise ModelError(f"model {name!r} could not be built with num_classes={num_classes}: {err}") from None
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
    except Exception as err:  # noqa: BLE001 - a user's module can raise anything on import
        raise ModelError(f"cannot import {target!r} for model {spec!r}: {type(err).__name__}: {err}") from None
    builder = getattr(module, attr, None)
    if not callable(builder):
        raise ModelError(f"{target!r} has no callable {attr!r}; pass module:callable naming a model builder.")
    return builder


def _torchvision_builder(name: str) -> Callable[..., nn.Module] | None:
    try:
        import torchvision.models as tvm
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


# ---------------------------------------------------------------- weights


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Load a state_dict safely (weights_only: no code runs from the file)."""
    p = Path(path)
    if not p.is_file():
        raise ModelError(f"weights file {p} does not exist; pass --weights with a saved state_dict.")
    try:
        obj: Any = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - a file that is not a state_dict fails in many ways
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ModelError(f"weights file {p} is not a loadable PyTorch state_dict ({first[:160]}); "
                         "save it with torch.save(model.state_dict(), PATH).") from None
    for key in ("state_dict", "model", "model_state_dict"):  # common checkpoint wrappers
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ModelError(f"weights file {p} holds no state_dict of tensors; "
                         "save it with torch.save(model.state_dict(), PATH).")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def classifier_classes(state_dict: dict[str, torch.Tensor]) -> int | None:
    """Number of classes of the last 2-D weight (the classifier), if there is one."""
    weights = [v for k, v in state_dict.items() if k.endswith("weight") and v.ndim == 2]
    return int(weights[-1].shape[0]) if weights else None


def load_weights(model: nn.Module, state_dict: dict[str, torch.Tensor], source: str) -> None:
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    if missing or unexpected:
        detail = f"missing {missing[:3]}" if missing else f"unexpected {unexpected[:3]}"
        raise ModelError(f"weights {source} do not match the model ({len(missing)} missing, "
                         f"{len(unexpected)} unexpected keys, e.g. {detail}); pass weights saved from this model.")
    for k, v in state_dict.items():
        if own[k].shape != v.shape:
            raise ModelError(f"weights {source}: {k} has shape {tuple(v.shape)} but the model expects "
                             f"{tuple(own[k].shape)}; the weights belong to another model or class count.")
    model.load_state_dict(state_dict)
