"""The remaining inputs (issue 32, item 6): high-bit-depth images, a resolution beyond memory, unusable studies
dirs, storage files a failed command would create, a closed or full output, a model whose outputs vary between
identical evaluations, metric values that are not finite numbers, and a study without a completed baseline.

Refusals follow tests/test_hostile.py's rule: the documented exit code, one line on stderr starting
"tuner: error:" and naming the offending thing, no traceback, and every file under the case's directory the
same before and after."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import TINY, run_tuner
from tests.test_hostile import _listing, _tuner

pytestmark = pytest.mark.slow  # end to end: studies, exports and processes (pytest -m "not slow" skips)

HOSTILE = str(Path(__file__).resolve().parent / "hostile_models.py")


def _refused(args: list[str], root: Path, needle: str, code: int = 2) -> str:
    """Run the CLI; assert the one-line refusal and that nothing under ``root`` changed. Returns the line."""
    before = _listing(root)
    r = _tuner(args)
    assert "Traceback" not in r.stdout + r.stderr, r.stderr[-3000:]
    assert r.returncode == code, (r.returncode, r.stderr[-2000:])
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("tuner: error:"), r.stderr[-2000:]
    assert needle in lines[0], lines[0]
    assert not r.stdout.strip(), r.stdout[-1000:]
    assert _listing(root) == before
    return lines[0]


# ---------------------------------------------------------------- 16-bit and other high-bit-depth images


def _png16_rgb(path: Path, rgb16: np.ndarray) -> None:
    """A 48-bit RGB PNG (PIL cannot write one): 16 bits per channel, big-endian, filter 0 on each row."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    h, w, _ = rgb16.shape
    raw = b"".join(b"\x00" + rgb16[y].astype(">u2").tobytes() for y in range(h))
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


def _grey_twins(root: Path, classes: int = 3, per_class: int = 10, size: int = 20) -> tuple[Path, Path]:
    """The same learnable grey images twice: 8-bit PNGs, and 16-bit ones (each value x 257, the same brightness).
    A class is a brightness and a stripe spacing; much of each image is brighter than 1/257 of full scale, which a
    decoder that clips 16-bit values at 255 turns white."""
    from PIL import Image

    rng = np.random.default_rng(0)
    eight, sixteen = root / "grey8", root / "grey16"
    for part, n in (("train", per_class), ("val", per_class // 2)):
        for c in range(classes):
            for folder in (eight, sixteen):
                (folder / part / f"class_{c}").mkdir(parents=True, exist_ok=True)
            for i in range(n):
                img = rng.integers(0, 40, (size, size)).astype(np.uint8) + np.uint8(30 + 60 * c)
                img[:: c + 2, :] = 250
                Image.fromarray(img).save(eight / part / f"class_{c}" / f"{i}.png")
                Image.fromarray(img.astype(np.uint16) * 257).save(sixteen / part / f"class_{c}" / f"{i}.png")
    return eight, sixteen


def test_16_bit_images_decode_as_their_8_bit_twins(tmp_path):
    """Grey 16-bit PNG and TIFF (PIL mode I;16) and 48-bit RGB PNG give the 8-bit twin's pixels exactly."""
    from PIL import Image

    from tuner.images import load_image, rgb8

    rng = np.random.default_rng(1)
    grey = rng.integers(0, 256, (30, 40), dtype=np.uint8)
    rgb = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
    Image.fromarray(grey).save(tmp_path / "g8.png")
    Image.fromarray(grey.astype(np.uint16) * 257).save(tmp_path / "g16.png")
    Image.fromarray(grey.astype(np.uint16) * 257).save(tmp_path / "g16.tif")
    Image.fromarray(rgb).save(tmp_path / "c24.png")
    _png16_rgb(tmp_path / "c48.png", rgb.astype(np.uint16) * 257)
    assert Image.open(tmp_path / "g16.png").mode == "I;16"  # the mode PIL's convert("RGB") clipped at 255
    want = load_image(tmp_path / "g8.png", 16)
    assert np.array_equal(load_image(tmp_path / "g16.png", 16), want)
    assert np.array_equal(load_image(tmp_path / "g16.tif", 16), want)
    assert np.array_equal(load_image(tmp_path / "c48.png", 16), load_image(tmp_path / "c24.png", 16))
    big_endian = Image.frombytes("I;16B", (40, 30), (grey.astype(np.uint16) * 257).astype(">u2").tobytes())
    assert np.array_equal(np.asarray(rgb8(big_endian, tmp_path / "be.tif"))[..., 0], grey)


def test_float_and_negative_pixels_are_refused_naming_the_file(tmp_path):
    from PIL import Image

    from tuner.errors import DataError
    from tuner.images import load_image

    Image.fromarray(np.full((8, 8), 0.5, np.float32)).save(tmp_path / "f.tif")
    Image.fromarray(np.full((8, 8), -5, np.int32)).save(tmp_path / "neg.tif")
    with pytest.raises(DataError, match=r"f\.tif holds floating-point pixels"):
        load_image(tmp_path / "f.tif", 8)
    with pytest.raises(DataError, match=r"neg\.tif holds negative pixel values"):
        load_image(tmp_path / "neg.tif", 8)


def test_a_16_bit_data_set_gives_the_same_top1_as_its_8_bit_twin(tmp_path):
    """The acceptance case: the same measurement (a baseline trained on each, then scored) on both folders."""
    import json

    eight, sixteen = _grey_twins(tmp_path)
    config = tmp_path / "config.yaml"
    config.write_text("placement: torch-cpu\nprecision: fp32\n")
    found = {}
    for folder in (eight, sixteen):
        r = run_tuner(
            "measure",
            "--model",
            f"{TINY}:conv_net",
            "--data",
            str(folder),
            "--resolution",
            "16",
            "--train-steps",
            "40",
            "--holdout",
            "0",
            "--studies-dir",
            str(tmp_path / "studies"),
            "--config",
            str(config),
            "--json",
        )
        assert r.returncode == 0, r.stderr[-2000:]
        found[folder.name] = json.loads(r.stdout)["accuracy"]
    assert found["grey16"] == found["grey8"], found
    assert found["grey8"] > 0.5, found  # learnable: a clipped (white) twin would not score the same


# ---------------------------------------------------------------- a resolution beyond memory


def test_a_decoded_data_set_is_bounded_by_memory_before_allocation():
    from tuner.dataset import DECODE_PEAK, check_decoded_fits
    from tuner.errors import DataError

    gib = 2**30
    check_decoded_fits(1797, 512, "digits", memory=8 * gib)  # 1.3 GiB decoded, 2.6 while decoding: fits in 4
    check_decoded_fits(10**9, 2048, "x", memory=None)  # memory unknown: nothing refused
    with pytest.raises(DataError, match=r"--resolution 2048: the 1,797 images of digits") as err:
        check_decoded_fits(1797, 2048, "digits", memory=8 * gib)
    side = int(str(err.value).split("use --resolution ")[1].split()[0])
    check_decoded_fits(1797, side, "digits", memory=8 * gib)  # the suggested resolution fits
    assert 1797 * 3 * (side + 1) ** 2 * DECODE_PEAK > 4 * gib  # and is the largest that does


def test_resolution_2048_on_digits_is_refused_in_one_line(tmp_path):
    from tuner.hardware import available_memory

    memory = available_memory()
    if memory is None or memory > 80 * 2**30:
        pytest.skip(f"{memory} bytes available: digits at 2048 px (21 GiB decoded) fits here")
    config = tmp_path / "config.yaml"
    config.write_text("precision: fp32\n")
    _refused(
        [
            "measure",
            "--model",
            f"{TINY}:conv_net",
            "--resolution",
            "2048",
            "--studies-dir",
            str(tmp_path / "studies"),
            "--config",
            str(config),
        ],
        tmp_path,
        "--resolution 2048",
    )


# ---------------------------------------------------------------- unusable studies dirs


def _measure_in(tmp_path: Path, studies: str) -> list[str]:
    config = tmp_path / "config.yaml"
    config.write_text("precision: fp32\n")
    return [
        "measure",
        "--model",
        f"{TINY}:conv_net",
        "--resolution",
        "16",
        "--train-steps",
        "2",
        "--studies-dir",
        studies,
        "--config",
        str(config),
    ]


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="no /proc here")
@pytest.mark.parametrize("studies", ["/proc/x", "/proc/x/y"])
def test_a_studies_dir_that_cannot_be_created_is_refused(tmp_path, studies):
    _refused(_measure_in(tmp_path, studies), tmp_path, f"--studies-dir {studies} cannot be created")
    assert not Path(studies).exists()


def test_a_studies_dir_under_a_file_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    _refused(_measure_in(tmp_path, str(tmp_path / "notes.txt" / "studies")), tmp_path, "is a file")


@pytest.fixture
def read_only_dir(tmp_path):
    """A directory this process cannot write: a read-only tmpfs where root may mount one, else a mode-555 folder
    (which root could write anyway)."""
    folder = tmp_path / "ro"
    folder.mkdir()
    if os.geteuid() == 0:
        mounted = (
            subprocess.run(
                ["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(folder)], capture_output=True
            ).returncode
            == 0
        )
        if not mounted:
            pytest.skip("root, but cannot mount a read-only tmpfs here (a mode-555 folder is writable to root)")
        yield folder
        subprocess.run(["umount", str(folder)], check=True)
    else:
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)


@pytest.mark.parametrize("inside", ["", "studies"])
def test_a_read_only_studies_dir_is_refused(tmp_path, read_only_dir, inside):
    studies = read_only_dir / inside if inside else read_only_dir
    needle = "cannot be created" if inside else "is not writable"
    _refused(_measure_in(tmp_path, str(studies)), tmp_path, needle)


# ---------------------------------------------------------------- a closed or full output


def _closed_pipe_run(*args: str) -> subprocess.CompletedProcess[str]:
    """The CLI with its stdout a pipe whose reader has already left (as `| head -c 20` leaves it)."""
    read, write = os.pipe()
    os.close(read)
    try:
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
        return subprocess.run(
            [sys.executable, "-m", "tuner", *args],
            stdout=write,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            timeout=120,
        )
    finally:
        os.close(write)


@pytest.mark.parametrize("args", [["--help"], ["report", "--help"]])
def test_a_closed_pipe_ends_quietly_with_141(args):
    r = _closed_pipe_run(*args)
    assert r.returncode == 141, r.stderr
    assert r.stderr == ""  # no traceback, no "Exception ignored" at exit


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="no /dev/full here")
def test_a_full_output_is_one_line_and_74(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    with open("/dev/full", "w") as full:
        r = subprocess.run(
            [sys.executable, "-m", "tuner", "measure", "--help"],
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            timeout=120,
        )
    assert r.returncode == 74, r.stderr
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("tuner: error: cannot write to stdout (No space left"), r.stderr


def test_a_usage_error_points_at_the_help_that_exists():
    r = run_tuner("--no-such-flag")
    assert r.returncode == 2
    assert "(see 'tuner --help')" in r.stderr, r.stderr


# ---------------------------------------------------------------- nothing created by a failed command


@pytest.mark.parametrize("command", ["report", "export"])
def test_report_or_export_on_a_missing_sqlite_file_creates_nothing(tmp_path, command):
    db = tmp_path / "new.db"
    pick = ["--trial", "0", "--out", str(tmp_path / "out")] if command == "export" else []
    _refused([command, "--study", "s", "--storage", f"sqlite:///{db}", *pick], tmp_path, f"names {db}")
    assert not db.exists()
    db.write_bytes(b"")  # an empty file: Optuna would turn it into a 112 KB database
    _refused([command, "--study", "s", "--storage", f"sqlite:///{db}", *pick], tmp_path, "an empty file")
    assert db.stat().st_size == 0


# ---------------------------------------------------------------- a model whose outputs vary


def test_a_model_whose_outputs_vary_is_warned_about_once_where_the_reference_is_scored(tmp_path):
    from tuner.logs import to
    from tuner.pipeline import reference
    from tuner.workload import load_workload
    from tuner.workload_spec import WorkloadSpec

    lines: list[str] = []
    for model in (f"{HOSTILE}:dropout_always_on", f"{TINY}:conv_net"):
        spec = WorkloadSpec(model=model, data="digits", resolution=16, train_steps=2, cache_dir=str(tmp_path / "cache"))
        workload = load_workload(spec)
        with to(lines.append):  # the lines the study shows
            found = reference(workload)
        assert 0 <= found["accuracy"] <= 1
    assert len(lines) == 1, lines  # the dropout model only, once
    assert lines[0].startswith("warning: the model's outputs differ between two evaluations"), lines


# ---------------------------------------------------------------- metric values, and a study without a baseline


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("0.9", "'0.9' (a str)"),
        (None, "None"),
        (True, "True (a bool)"),
        (float("nan"), "nan"),
        (float("inf"), "inf"),
        (1 + 2j, "(a complex)"),
    ],
)
def test_a_metric_value_that_is_not_a_finite_number_is_refused_with_its_name(value, shown):
    from tuner.errors import MeasurementError
    from tuner.metric import make_metric

    metric = make_metric(lambda logits, labels: value, name="my_f1")
    with pytest.raises(MeasurementError, match="metric my_f1 returned") as err:
        metric.score(np.zeros((4, 3), np.float32), np.zeros(4, np.int64))
    assert shown in str(err.value)


def test_real_numbers_of_any_kind_are_scores():
    import torch

    from tuner.metric import make_metric

    for value in (0.5, 1, np.float32(0.5), np.int64(1), torch.tensor(0.5), torch.tensor([0.5])):
        assert make_metric(lambda logits, labels, v=value: v).score(
            np.zeros((2, 2), np.float32), np.zeros(2, np.int64)
        ) == pytest.approx(float(value))


def test_a_metric_returning_a_string_on_the_reference_is_one_config_error(tmp_path):
    from tuner import tune
    from tuner.errors import ConfigError

    with pytest.raises(ConfigError) as err:
        tune(
            f"{TINY}:conv_net",
            "digits",
            metric=lambda logits, labels: "0.9",
            resolution=16,
            train_steps=2,
            n_trials=2,
            remeasure_rounds=0,
            studies_dir=str(tmp_path / "studies"),
            space={"placement": "torch-cpu", "precision": "fp32"},
            log=lambda m: None,
            progress=False,
        )
    message = str(err.value)
    assert "metric <lambda> returned '0.9' (a str)" in message and "reference model" in message
    assert "\n" not in message


def test_a_study_without_a_completed_baseline_says_so_where_speedups_would_be():
    from tuner.summary import NO_BASELINE, pareto_table

    metrics = {
        "accuracy": 0.9,
        "per_sample_ms": 0.5,
        "latency_ms": 0.5,
        "latency_ci_ms": [0.4, 0.6],
        "threads": 1,
        "executed_precision": "fp32",
        "batch_size": 1,
    }
    entry = {
        "number": 3,
        "params": {
            "placement": "torch-cpu",
            "precision": "fp32",
            "prune_ratio": 0.0,
            "batch_size": 1,
            "fold_bn": False,
            "graph_opt": "all",
        },
        "metrics": metrics,
        "feasible": True,
        "speedup": None,
        "baseline": False,
        "by_remeasure": False,
    }
    summary = {
        "reference_accuracy": 0.9,
        "baseline": None,
        "pareto": [entry],
        "best_feasible": entry,
        "speed": "per_sample_ms",
    }
    text = pareto_table(summary)
    assert "fastest feasible: trial #3, 0.500 ms/sample" in text and "no feasible trial yet" not in text
    assert text.splitlines()[-1] == NO_BASELINE
    with_base = pareto_table(
        {
            **summary,
            "baseline": metrics,
            "best_feasible": {**entry, "speedup": 2.0},
            "pareto": [{**entry, "speedup": 2.0}],
        }
    )
    assert NO_BASELINE not in with_base and "2.0x the baseline" in with_base


def test_the_reports_findings_say_there_is_no_baseline_to_compare_with():
    import warnings

    import optuna

    from tuner.report.writer import report_info

    study = optuna.create_study(directions=["maximize", "minimize"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(["accuracy", "per_sample_ms"])
    study.set_user_attr("reference", {"accuracy": 0.95, "validation_images": 400})
    candidate = {
        "placement": "ort-cpu",
        "precision": "fp32",
        "prune_ratio": 0.0,
        "batch_size": 1,
        "fold_bn": False,
        "graph_opt": "all",
        "threads": 1,
    }
    metrics = {
        "accuracy": 0.95,
        "per_sample_ms": 1.0,
        "latency_ms": 1.0,
        "latency_ci_ms": [0.98, 1.02],
        "executed_precision": "fp32",
        "accuracy_drop": 0.0,
    }
    study.add_trial(
        optuna.trial.create_trial(
            state=optuna.trial.TrialState.FAIL, user_attrs={"candidate": candidate, "baseline": True}
        )
    )
    study.add_trial(
        optuna.trial.create_trial(values=[0.95, 1.0], user_attrs={"metrics": metrics, "candidate": candidate})
    )
    first = report_info(study).findings[0]
    assert first.startswith("the fastest feasible trial is #1") and "no completed baseline trial" in first, first
