"""Hostile input, as a new user brings it: odd image folders, odd weights, odd model files, odd YAML, odd numbers,
odd storage URLs and output paths. Each case runs the real CLI in a subprocess and must end with the documented
exit code (2: bad input), exactly one line on stderr that starts "tuner: error:" and names the offending thing,
no traceback, and nothing written or lost: every file and folder under the case's directory (its inputs, its
--studies-dir, its output paths) is listed before and after and must be the same.

Cases fail fast, before any model work: the suite runs its subprocesses a few at a time (most take about a
second) to stay well under a minute and a half on two CPUs. More bad-input cases live in test_bad_input.py."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import sys
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.conftest import ROOT, TINY, make_image_folder

pytestmark = pytest.mark.slow  # end to end: studies, exports and processes (pytest -m "not slow" skips)

HOSTILE = str(ROOT / "tests" / "hostile_models.py")
PARALLEL = 4  # subprocesses at a time: most of a case is interpreter and import start-up
SPACE_OK = "placement: torch-cpu\nprecision: fp32\n"
OBJ_OK = "objectives:\n  accuracy: maximize\n  per_sample_ms: minimize\n"


@dataclass(frozen=True)
class Case:
    id: str
    setup: Callable[[Path], list[str]]  # writes the case's inputs under its directory, returns the CLI arguments
    needle: str  # what the one error line must contain (the offending thing)
    code: int = 2


# ---------------------------------------------------------------- inputs


def _write(path: Path, text: str | bytes) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return str(path)


def _config(d: Path, text: str = "precision: fp32\n") -> str:
    return _write(d / "config.yaml", text)


def _measure(d: Path, *extra: str, config: str | None = None, model: str = f"{TINY}:conv_net") -> list[str]:
    return [
        "measure",
        "--model",
        model,
        "--resolution",
        "16",
        "--train-steps",
        "2",
        "--recover-steps",
        "2",
        "--studies-dir",
        str(d / "studies"),
        "--config",
        config or _config(d),
        *extra,
    ]


def _run(d: Path, *extra: str) -> list[str]:
    """A study on a one-placement space (probing every placement of the default one takes seconds)."""
    space = [] if "--space" in extra else ["--space", _write(d / "space.yaml", SPACE_OK)]
    return [
        "run",
        "--model",
        f"{TINY}:conv_net",
        "--resolution",
        "16",
        "--train-steps",
        "2",
        "--recover-steps",
        "2",
        "--studies-dir",
        str(d / "studies"),
        "--n-trials",
        "2",
        "--remeasure-rounds",
        "0",
        *space,
        *extra,
    ]


def _folder(d: Path, split: bool = True, per_class: int = 4, classes: int = 3) -> Path:
    return make_image_folder(d / "images", classes=classes, per_class=per_class, size=20, split=split)


def _data(mutate: Callable[[Path], object], split: bool = True, per_class: int = 4) -> Callable[[Path], list[str]]:
    def setup(d: Path) -> list[str]:
        root = _folder(d, split, per_class)
        mutate(root)
        return _measure(d, "--data", str(root))

    return setup


def _jpeg(path: Path, keep: float = 1.0) -> None:
    from PIL import Image

    img = np.random.default_rng(1).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(img).save(path, format="JPEG", quality=90)
    raw = path.read_bytes()
    path.write_bytes(raw[: int(len(raw) * keep)])


def _png_header(width: int, height: int) -> bytes:
    """A PNG that claims width x height pixels (PIL reads the size before any pixel: the bomb check's input)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


def _rm_images(folder: Path, keep: int) -> None:
    for p in sorted(folder.iterdir())[keep:]:
        p.unlink()


def _weights(make: Callable[[dict], object]) -> Callable[[Path], list[str]]:
    def setup(d: Path) -> list[str]:
        import torch

        from tests.tiny_models import conv_net

        torch.manual_seed(0)
        path = d / "weights.pt"
        torch.save(make(conv_net(10).state_dict()), path)
        return _measure(d, "--weights", str(path))

    return setup


def _replace(key: str, f: Callable) -> Callable[[dict], dict]:
    return lambda sd: {**sd, key: f(sd[key])}


def _nan_everywhere(sd: dict) -> dict:
    return {k: v.clone().fill_(float("nan")) if v.is_floating_point() else v for k, v in sd.items()}


def _one_inf(w):
    w = w.clone()
    w[0, 0] = float("inf")
    return w


def _quantized(w):
    import warnings

    import torch

    with warnings.catch_warnings():  # torch deprecates quantized tensors: users still have files holding them
        warnings.simplefilter("ignore")
        return torch.quantize_per_tensor(w, 0.1, 0, torch.qint8)


def _meta(w):
    import torch

    return torch.empty(w.shape, device="meta")


def _whole_module(sd: dict) -> object:
    from tests.tiny_models import conv_net

    return conv_net(10)  # a pickled module, not a state_dict: weights_only refuses to run its code


def _model(name: str) -> Callable[[Path], list[str]]:
    return lambda d: _measure(d, model=f"{HOSTILE}:{name}")


def _model_file(text: str) -> Callable[[Path], list[str]]:
    def setup(d: Path) -> list[str]:
        return _measure(d, model=f"{_write(d / 'user_model.py', text)}:net")

    return setup


def _onnx(
    run: bool = False, config: str = "placement: ort-cpu\n", extra: tuple[str, ...] = (), **variant: object
) -> Callable[[Path], list[str]]:
    """A study or measurement of an ONNX file that breaks one rule (tests/hostile_models.write_onnx)."""

    def setup(d: Path) -> list[str]:
        from tests.hostile_models import write_onnx

        model = write_onnx(str(d / "model.onnx"), **variant)  # type: ignore[arg-type]
        if run:
            return [
                *_run(d, "--space", _write(d / "space.yaml", "placement: ort-cpu\nprecision: fp32\n"), *extra),
                "--model",
                model,
            ]
        return _measure(d, *extra, config=_config(d, config), model=model)

    return setup


def _onnx_file(content: str | bytes | None) -> Callable[[Path], list[str]]:
    """A measurement of a model.onnx holding ``content`` (None: no such file)."""

    def setup(d: Path) -> list[str]:
        model = str(d / "model.onnx") if content is None else _write(d / "model.onnx", content)
        return _measure(d, config=_config(d, "placement: ort-cpu\n"), model=model)

    return setup


def _measure_config(text: str | bytes) -> Callable[[Path], list[str]]:
    return lambda d: _measure(d, config=_write(d / "config.yaml", text))


def _space(text: str | bytes) -> Callable[[Path], list[str]]:
    return lambda d: _run(d, "--space", _write(d / "my_space.yaml", text))


def _objectives(text: str | bytes) -> Callable[[Path], list[str]]:
    return lambda d: _run(d, "--objectives", _write(d / "objectives.yaml", text))


def _flags(command: str, *flags: str) -> Callable[[Path], list[str]]:
    makers = {"measure": _measure, "run": _run}
    if command in makers:
        return lambda d: makers[command](d, *flags)
    return lambda d: [command, *flags]


def _study(d: Path) -> Path:
    """An existing (empty) study under d/studies, as `tuner run` leaves one."""
    import optuna

    studies = d / "studies"
    studies.mkdir(parents=True, exist_ok=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    optuna.create_study(study_name="s", storage=f"sqlite:///{studies / 's.db'}")
    return studies


def _report(extra: Callable[[Path], list[str]]) -> Callable[[Path], list[str]]:
    return lambda d: ["report", "--study", "s", "--studies-dir", str(_study(d)), *extra(d)]


def _mkdir(path: Path) -> str:
    path.mkdir(parents=True)
    return str(path)


def _export(out: Callable[[Path], Path], *flags: str) -> Callable[[Path], list[str]]:
    def setup(d: Path) -> list[str]:
        studies = _study(d)
        pick = list(flags) or ["--trial", "0"]
        return ["export", "--study", "s", "--studies-dir", str(studies), *pick, "--out", str(out(d))]

    return setup


def _verify(make: Callable[[Path], Path]) -> Callable[[Path], list[str]]:
    return lambda d: ["verify", str(make(d))]


def _export_dir(d: Path, config: str | bytes | None, artifact: bool = True) -> Path:
    out = d / "deploy"
    out.mkdir(parents=True)
    if config is not None:
        _write(out / "config.yaml", config)
    if artifact:
        _write(out / "model.onnx", b"onnx")
    return out


def _format() -> str:
    from tuner.names import EXPORT_FORMAT

    return EXPORT_FORMAT


def _complete_config() -> str:
    """Every section verify needs, for an export whose artifact file is gone."""
    return yaml.safe_dump(
        {
            "format": _format(),
            "candidate": {"precision": "fp32", "placement": "ort-cpu"},
            "artifact": {"file": "model.onnx"},
            "metrics": {"export": {}},
            "workload": {"data": "digits"},
            "data": {},
        }
    )


def _drop(part: str) -> Callable[[Path], None]:
    return lambda root: shutil.rmtree(root / part)


def _user_file(d: Path, name: str) -> Path:
    (d / "out").mkdir(parents=True, exist_ok=True)
    _write(d / "out" / name, "the user's own file\n")
    return d / "out"


# ---------------------------------------------------------------- the cases


CASES = [
    # ------------------------------------------------ image folders
    Case("jpeg-truncated", _data(lambda r: _jpeg(r / "train" / "class_0" / "cut.jpg", keep=0.5)), "cut.jpg"),
    Case(
        "png-truncated",
        _data(
            lambda r: _write(r / "val" / "class_1" / "cut.png", (r / "val" / "class_1" / "0.png").read_bytes()[:-40])
        ),
        "cut.png",
    ),
    Case(
        "image-garbage-bytes",
        _data(lambda r: _write(r / "train" / "class_2" / "photo.jpg", b"\xff\xd8 not a jpeg")),
        "photo.jpg",
    ),
    Case("image-empty-file", _data(lambda r: _write(r / "train" / "class_1" / "empty.png", b"")), "empty.png"),
    Case("text-named-png", _data(lambda r: _write(r / "val" / "class_0" / "readme.png", "# notes\n")), "readme.png"),
    Case(
        "decompression-bomb",
        _data(lambda r: _write(r / "train" / "class_0" / "bomb.png", _png_header(20000, 20000))),
        "bomb.png",
    ),
    Case(
        "decompression-bomb-warning-size",
        _data(lambda r: _write(r / "train" / "class_0" / "huge.png", _png_header(10000, 10000))),
        "huge.png",
    ),
    Case("class-too-few-training-images", _data(lambda r: _rm_images(r / "train" / "class_1", keep=1)), "'class_1'"),
    Case("class-too-few-without-split", _data(lambda r: _rm_images(r / "class_2", keep=2), split=False), "'class_2'"),
    Case("empty-class-folder", _data(lambda r: _rm_images(r / "val" / "class_2", keep=0)), "class_2"),
    Case("train-without-val", _data(_drop("val")), "no val/"),
    Case("val-without-train", _data(_drop("train")), "no train/"),
    Case("train-val-classes-differ", _data(lambda r: (r / "val" / "class_2").rename(r / "val" / "class_9")), "class_9"),
    Case(
        "only-hidden-class-folders",
        _data(lambda r: [(r / "train" / c).rename(r / "train" / f".{c}") for c in ("class_0", "class_1", "class_2")]),
        "class folder",
    ),
    Case("data-path-is-a-file", lambda d: _measure(d, "--data", _write(d / "images.zip", b"PK\x03\x04")), "is a file"),
    # ------------------------------------------------ weights
    Case("weights-all-nan", _weights(_nan_everywhere), "NaN/inf in 0.weight"),
    Case("weights-one-inf", _weights(_replace("9.weight", _one_inf)), "NaN/inf in 9.weight"),
    Case("weights-int-keys", _weights(lambda sd: dict(enumerate(sd.values()))), "key 0"),
    Case("weights-non-tensor-value", _weights(lambda sd: {**sd, "epoch": 3}), "epoch"),
    Case("weights-sparse-tensor", _weights(_replace("9.weight", lambda w: w.to_sparse())), "sparse"),
    Case("weights-quantized-tensor", _weights(_replace("9.weight", _quantized)), "quantized"),
    Case("weights-complex-tensor", _weights(_replace("9.weight", lambda w: w * (1 + 1j))), "complex"),
    Case("weights-meta-tensor", _weights(_replace("9.weight", _meta)), "meta tensor"),
    Case("weights-int-dtype-for-float", _weights(_replace("9.weight", lambda w: w.long())), "int64"),
    Case("weights-empty-dict", _weights(lambda sd: {}), "empty mapping"),
    Case("weights-a-list", _weights(lambda sd: list(sd.values())), "holds a list"),
    Case("weights-a-tensor", _weights(lambda sd: sd["9.weight"]), "holds a Tensor"),
    Case(
        "weights-module-prefix-collision",
        _weights(lambda sd: {**sd, **{f"module.{k}": v for k, v in sd.items()}}),
        "'module.' prefix",
    ),
    Case("weights-pickled-module", _weights(_whole_module), "not a loadable PyTorch state_dict"),
    Case("weights-empty-file", lambda d: _measure(d, "--weights", _write(d / "w.pt", b"")), "w.pt"),
    Case("weights-is-a-directory", lambda d: _measure(d, "--weights", _mkdir(d / "w.pt")), "w.pt"),
    # ------------------------------------------------ user models
    Case("model-two-inputs", _model("two_inputs"), "2 required inputs"),
    Case("model-returns-tuple", _model("tuple_output"), "returns a tuple"),
    Case("model-output-extra-axis", _model("extra_axis"), "(2, 10, 2)"),
    Case("model-ignores-num-classes", _model("fixed_classes"), "(2, 5)"),
    Case("model-builder-sys-exit", _model("exits_in_builder"), "sys.exit(3)"),
    Case("model-forward-sys-exit", _model("exits_in_forward"), "sys.exit"),
    Case("model-builder-raises", _model("raises_in_builder"), "CUDA is required"),
    Case("model-forward-raises", _model("raises_in_forward"), "only takes 224 px"),
    Case("model-tuple-in-training-mode", _model("aux_in_training"), "training mode"),
    Case("model-builder-without-num-classes", _model("no_num_classes"), "num_classes"),
    Case("model-file-exits-on-import", _model_file("import sys\nsys.exit('no GPU here')\n"), "sys.exit"),
    Case("model-file-syntax-error", _model_file("def net(num_classes:\n"), "SyntaxError"),
    Case("model-empty-module-name", lambda d: _measure(d, model=":net"), "cannot import"),
    # ------------------------------------------------ ONNX files
    Case("onnx-garbage-bytes", _onnx_file(b"\x08\x07garbage\xff\xfe"), "not a valid ONNX model"),
    Case("onnx-a-text-file", _onnx_file("# not a model\n"), "model.onnx"),
    Case("onnx-missing-file", _onnx_file(None), "does not exist"),
    Case("onnx-two-inputs", _onnx(inputs=2), "has 2 inputs"),
    Case("onnx-two-outputs", _onnx(outputs=2), "has 2 outputs"),
    Case("onnx-wrong-class-count", _onnx(classes=5), "5 output classes"),
    Case("onnx-wrong-class-count-run", _onnx(run=True, classes=5), "5 output classes"),
    Case("onnx-flat-input", _onnx(shape=("N", 768)), "N x 3 x H x W"),
    Case("onnx-one-channel", _onnx(shape=("N", 1, 16, 16)), "N x 3 x H x W"),
    Case("onnx-uint8-input", _onnx(elem=2), "not float32"),
    Case("onnx-not-square", _onnx(shape=("N", 3, 16, 20)), "16 x 20"),
    Case("onnx-other-resolution", _onnx(shape=(1, 3, 24, 24)), "--resolution 24"),
    Case("onnx-relies-on-fixed-batch", _onnx(shape=(1, 3, 16, 16), reshape_to_batch=1), "batch of 1 is fixed"),
    Case("onnx-with-weights", _onnx(extra=("--weights", "w.pt")), "--weights applies to torch models"),
    Case("onnx-pruned-config", _onnx(config="placement: ort-cpu\nprune_ratio: 0.3\n"), "needs the model's torch graph"),
    Case("onnx-torch-placement-config", _onnx(config="placement: torch-cpu\n"), "needs the model's torch graph"),
    # ------------------------------------------------ configuration files (measure --config)
    Case(
        "yaml-duplicate-key",
        _measure_config("precision: fp32\nbatch_size: 1\nprecision: int8\n"),
        "'precision' is given twice",
    ),
    Case("yaml-non-utf8", _measure_config("precision: fp32\n# caf\xe9\n".encode("latin-1")), "not UTF-8"),
    Case("yaml-a-list", _measure_config("- precision: fp32\n"), "YAML list"),
    Case("yaml-a-scalar", _measure_config("fp32\n"), "YAML str"),
    Case("yaml-empty", _measure_config(""), "empty file"),
    Case("yaml-python-tag", _measure_config("precision: !!python/object/apply:os.system ['true']\n"), "not valid YAML"),
    Case("yaml-is-a-directory", lambda d: _measure(d, config=_mkdir(d / "c.yaml")), "is a directory"),
    Case("config-threads-over-cpus", _measure_config("threads: 4096\n"), "threads: 4096"),
    Case("config-batch-beyond-memory", _measure_config("batch_size: 100000000\n"), "batch_size 100000000"),
    Case("config-batch-nan", _measure_config("batch_size: .nan\n"), "batch_size"),
    Case("config-prune-ratio-nan", _measure_config("prune_ratio: .nan\n"), "prune_ratio"),
    Case("config-threads-negative", _measure_config("threads: -1\n"), "threads"),
    Case("config-batch-true", _measure_config("batch_size: true\n"), "batch_size"),
    # ------------------------------------------------ search spaces
    Case("space-duplicate-key", _space(SPACE_OK + "batch_size: 1\nbatch_size: 8\n"), "'batch_size' is given twice"),
    Case("space-non-utf8", _space(b"placement: torch-cpu\n# \xff\xfe\n"), "not UTF-8"),
    Case("space-a-list", _space("- placement\n"), "a search space is a mapping"),
    Case("space-threads-choice-over-cpus", _space(SPACE_OK + "threads: {choices: [1, 4096]}\n"), "threads: 4096"),
    Case("space-threads-fixed-over-cpus", _space(SPACE_OK + "threads: 4096\n"), "threads: 4096"),
    Case("space-threads-high-over-cpus", _space(SPACE_OK + "threads: {low: 1, high: 4096}\n"), "threads: 4096"),
    Case(
        "space-batch-beyond-memory",
        _space(SPACE_OK + "batch_size: {choices: [1, 100000000]}\n"),
        "batch_size 100000000",
    ),
    Case("space-step-inf", _space(SPACE_OK + "prune_ratio: {low: 0.0, high: 0.5, step: .inf}\n"), "step"),
    # ------------------------------------------------ objectives files
    Case("objectives-duplicate-key", _objectives(OBJ_OK + "  accuracy: minimize\n"), "'accuracy' is given twice"),
    Case(
        "objectives-constraint-nan",
        _objectives(OBJ_OK + "constraints:\n  accuracy_drop: {max: .nan}\n"),
        "accuracy_drop",
    ),
    Case("objectives-constraint-inf", _objectives(OBJ_OK + "constraints:\n  size_mb: {max: .inf}\n"), "size_mb"),
    Case(
        "objectives-min-above-max",
        _objectives(OBJ_OK + "constraints:\n  accuracy: {min: 0.9, max: 0.5}\n"),
        "min 0.9 > max 0.5",
    ),
    Case(
        "objectives-constraints-a-list",
        _objectives(OBJ_OK + "constraints:\n  - accuracy_drop\n"),
        "constraints must map",
    ),
    Case("objectives-a-scalar", _objectives("accuracy\n"), "expected the keys"),
    # ------------------------------------------------ command-line numbers
    Case("mean-nan", _flags("measure", "--mean", "nan", "0.5", "0.5"), "--mean R is nan"),
    Case("mean-inf", _flags("measure", "--mean", "0.5", "inf", "0.5"), "--mean G is inf"),
    Case("mean-two-values", _flags("measure", "--mean", "0.5", "0.5"), "--mean"),
    Case("std-negative", _flags("measure", "--std", "0.2", "0.2", "-0.2"), "-0.2 for B"),
    Case("std-nan", _flags("measure", "--std", "nan", "0.2", "0.2"), "--std R is nan"),
    Case("seed-negative", _flags("measure", "--seed", "-1"), "--seed"),
    Case("seed-beyond-32-bit", _flags("run", "--seed", str(2**40)), "--seed"),
    Case("resolution-zero", _flags("measure", "--resolution", "0"), "--resolution"),
    Case("resolution-huge", _flags("run", "--resolution", "100000"), "--resolution"),
    Case("resolution-not-a-number", _flags("measure", "--resolution", "224px"), "invalid int value"),
    Case("train-steps-negative", _flags("measure", "--train-steps", "-5"), "--train-steps"),
    Case("recover-steps-negative", _flags("run", "--recover-steps", "-1"), "--recover-steps"),
    Case("n-trials-negative", _flags("run", "--n-trials", "-3"), "--n-trials"),
    Case("timeout-zero", _flags("run", "--timeout", "0"), "--timeout"),
    Case("timeout-negative", _flags("run", "--timeout", "-60"), "--timeout"),
    Case("timeout-nan", _flags("run", "--timeout", "nan"), "--timeout"),
    Case("timeout-inf", _flags("run", "--timeout", "inf"), "--timeout"),
    Case("heartbeat-zero", _flags("run", "--heartbeat", "0"), "--heartbeat"),
    Case("heartbeat-nan", _flags("run", "--heartbeat", "nan"), "--heartbeat"),
    Case("max-retries-negative", _flags("run", "--max-retries", "-1"), "--max-retries"),
    Case("remeasure-rounds-negative", _flags("run", "--remeasure-rounds", "-2"), "--remeasure-rounds"),
    Case("latency-tolerance-nan", lambda d: ["verify", str(d), "--latency-tolerance", "nan"], "--latency-tolerance"),
    Case(
        "latency-tolerance-negative", lambda d: ["verify", str(d), "--latency-tolerance", "-0.1"], "--latency-tolerance"
    ),
    Case("max-drop-nan", _export(lambda d: d / "out", "--max-drop", "nan"), "--max-drop"),
    Case("max-drop-negative", _export(lambda d: d / "out", "--max-drop", "-1"), "--max-drop"),
    Case("max-drop-a-fraction", _export(lambda d: d / "out", "--max-drop", "0.01"), "--max-drop 0.01 is ambiguous"),
    Case("max-latency-zero", _export(lambda d: d / "out", "--max-latency-ms", "0"), "--max-latency-ms"),
    Case("max-latency-inf", _export(lambda d: d / "out", "--max-latency-ms", "inf"), "--max-latency-ms"),
    Case("trial-negative", _export(lambda d: d / "out", "--trial", "-1"), "--trial"),
    Case(
        "studies-dir-is-a-file",
        lambda d: [*_measure(d), "--studies-dir", _write(d / "studies.txt", "x")],
        "--studies-dir",
    ),
    Case(
        "run-studies-dir-is-a-file",
        lambda d: [*_run(d), "--studies-dir", _write(d / "studies.txt", "x")],
        "--studies-dir",
    ),
    # ------------------------------------------------ storage URLs
    Case(
        "storage-sqlite-dir-missing",
        lambda d: _run(d, "--storage", f"sqlite:///{d}/no/such/dir/s.db"),
        "does not exist",
    ),
    Case("storage-sqlite-is-a-directory", lambda d: _run(d, "--storage", f"sqlite:///{d}"), "is a directory"),
    Case("storage-http-url", _flags("run", "--storage", "https://example.com/studies"), "not a database URL"),
    Case("storage-bare-path", _flags("run", "--storage", "studies.db"), "not a database URL"),
    # ------------------------------------------------ output paths
    Case("report-out-is-a-directory", _report(lambda d: ["--out", _mkdir(d / "html")]), "is a directory"),
    Case("report-out-under-a-file", _report(lambda d: ["--out", f"{_write(d / 'f.txt', 'x')}/r.html"]), "is a file"),
    Case("report-csv-is-a-directory", _report(lambda d: ["--csv", _mkdir(d / "csv")]), "is a directory"),
    *(
        [Case("report-out-unwritable-dir", _report(lambda d: ["--out", "/proc/sys/report.html"]), "not writable")]
        if Path("/proc/sys").is_dir()
        else []
    ),  # root may write anywhere else: /proc/sys refuses even root
    Case(
        "report-csv-same-as-out",
        _report(lambda d: ["--out", str(d / "r.html"), "--csv", str(d / "r.html")]),
        "same file",
    ),
    Case("export-out-holds-user-files", _export(lambda d: _user_file(d, "notes.txt")), "not a previous export"),
    Case("export-out-is-a-file", _export(lambda d: Path(_write(d / "deploy.txt", "x"))), "is a file"),
    Case("export-out-under-a-file", _export(lambda d: Path(_write(d / "deploy.txt", "x")) / "out"), "is a file"),
    Case("verify-no-config", _verify(lambda d: _export_dir(d, None)), "config.yaml"),
    Case("verify-config-not-yaml", _verify(lambda d: _export_dir(d, "format: [tuner\n")), "config.yaml"),
    Case("verify-config-non-utf8", _verify(lambda d: _export_dir(d, b"format: \xff\xfe\n")), "config.yaml"),
    Case("verify-config-a-list", _verify(lambda d: _export_dir(d, "- format\n")), "config.yaml"),
    Case(
        "verify-config-incomplete",
        _verify(lambda d: _export_dir(d, f"format: {_format()}\ncandidate: {{}}\n")),
        "incomplete",
    ),
    Case(
        "verify-artifact-missing", _verify(lambda d: _export_dir(d, _complete_config(), artifact=False)), "model.onnx"
    ),
    Case("verify-path-is-a-file", _verify(lambda d: Path(_write(d / "deploy.zip", "x"))), "deploy.zip"),
]


# ---------------------------------------------------------------- running them


def _listing(root: Path) -> dict[str, tuple[bool, int, int]]:
    """Every file and folder under root: (is a folder, size, mtime) by relative path."""
    out = {}
    for p in sorted(root.rglob("*")):
        st = p.lstat()
        out[str(p.relative_to(root))] = (p.is_dir(), 0 if p.is_dir() else st.st_size, st.st_mtime_ns)
    return out


def _tuner(args: list[str]) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONDONTWRITEBYTECODE": "1"}  # no __pycache__ beside inputs
    return subprocess.run(
        [sys.executable, "-m", "tuner", *args], capture_output=True, text=True, cwd=ROOT, env=env, timeout=300
    )


@dataclass
class Outcome:
    result: subprocess.CompletedProcess[str]
    before: dict[str, tuple[bool, int, int]]
    after: dict[str, tuple[bool, int, int]]
    root: Path


@pytest.fixture(scope="module")
def outcomes(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Outcome]:
    """Set up every selected case, then run them PARALLEL at a time (each in its own directory)."""
    selected = {
        item.callspec.id
        for item in request.session.items
        if item.originalname == "test_hostile_input" and hasattr(item, "callspec")
    }
    base = tmp_path_factory.mktemp("hostile")
    prepared = {}
    for case in CASES:
        if case.id in selected:
            root = base / case.id
            root.mkdir()
            args = case.setup(root)
            prepared[case.id] = (args, root, _listing(root))

    def go(item: tuple[str, tuple[list[str], Path, dict]]) -> tuple[str, Outcome]:
        name, (args, root, before) = item
        result = _tuner(args)
        return name, Outcome(result, before, _listing(root), root)

    with ThreadPoolExecutor(PARALLEL) as pool:
        return dict(pool.map(go, prepared.items()))


def test_there_are_at_least_60_cases_with_distinct_ids():
    assert len(CASES) >= 60
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_input(case: Case, outcomes: dict[str, Outcome]):
    o = outcomes[case.id]
    r = o.result
    everything = r.stdout + r.stderr
    assert "Traceback" not in everything, everything[-3000:]
    assert r.returncode == case.code, (r.returncode, r.stdout[-1000:], r.stderr[-2000:])
    # the error's one line, after any line of progress ("decoding N images ..." of a new folder)
    lines = [line for line in r.stderr.splitlines() if line.strip() and not line.startswith("decoding ")]
    assert len(lines) == 1 and lines[0].startswith("tuner: error:"), r.stderr[-2000:]
    assert case.needle in lines[0], lines[0]
    assert not r.stdout.strip(), r.stdout[-1000:]
    assert o.after == o.before, {
        "new": sorted(set(o.after) - set(o.before)),
        "gone": sorted(set(o.before) - set(o.after)),
        "changed": sorted(k for k in o.before if k in o.after and o.before[k] != o.after[k]),
    }


# ---------------------------------------------------------------- what is fine stays fine (in process, fast)


def test_non_image_files_are_ignored_and_a_split_holds_every_class(tmp_path):
    from tuner.data import load_dataset

    root = make_image_folder(tmp_path / "flat", classes=3, per_class=3, split=False)
    _write(root / "class_0" / "notes.txt", "not an image")
    _write(root / "class_1" / ".DS_Store", b"\x00\x01")
    _write(root / "LICENSE", "x")
    d = load_dataset(str(root), resolution=16)
    assert len(d.train) + len(d.val) == 9
    assert set(d.val.labels) == {0, 1, 2} and set(d.train.labels) == {0, 1, 2}


def test_yaml_merge_keys_and_a_byte_order_mark_are_fine(tmp_path):
    from tuner.candidate import read_yaml

    path = Path(_write(tmp_path / "a.yaml", "base: &b {x: 1, y: 2}\nthis:\n  <<: *b\n  x: 5\n"))
    assert read_yaml(path)["this"] == {"x": 5, "y": 2}
    bom = tmp_path / "bom.yaml"
    bom.write_bytes(b"\xef\xbb\xbfprecision: fp32\n")
    assert read_yaml(bom) == {"precision": "fp32"}


def test_space_threads_up_to_cores_is_fine(tmp_path):
    from tuner import hardware
    from tuner.space import load_space

    space = load_space(_write(tmp_path / "s.yaml", SPACE_OK + "threads: {low: 1, high: cores}\n"))
    assert space.values("threads") == (1, hardware.cores())


def test_check_fits_limits():
    from tuner.hardware import ACTIVATION_FACTOR, check_fits, cores

    gib = 2**30
    assert check_fits(1, 224, 0, memory=8 * gib) is None
    assert check_fits(1, 224, cores(), memory=None) is None
    assert "CPUs" in check_fits(1, 224, cores() + 1, memory=None)
    one = 3 * 224 * 224 * 4
    fits = int(4 * gib / (one * ACTIVATION_FACTOR))  # the largest batch whose estimate is half of 8 GiB
    assert check_fits(fits, 224, 0, memory=8 * gib) is None
    assert "activations" in check_fits(fits + 1, 224, 0, memory=8 * gib)
    assert "input batch alone" in check_fits(10**6, 224, 0, memory=8 * gib)
