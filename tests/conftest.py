from __future__ import annotations

import fcntl
import glob
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
# Timing windows a fifth as long (tuner.measure.latency.QUICK_TIMING): a small trial's cost is mostly its timing.
# Set before anything imports the tuner; the subprocesses the tests start inherit it. A test of the timing's own
# statistics passes its policy explicitly.
os.environ.setdefault("TUNER_TIMING", "quick")
TINY = str(ROOT / "tests" / "tiny_models.py")


# Seconds the costliest modules take on 2 vCPUs (`pytest --durations=0` summed by module, mean of two runs,
# 2026-12-07). xdist hands whole modules to its workers (--dist loadscope) in collection order
# (--no-loadscope-reorder): the longest first, so that both workers end together. By xdist's own order (most
# tests first) a module of a few long tests came last while the other worker idled: 11% of worker time.
# Unlisted modules (seconds each) follow in file order; a stale figure only costs speed.
MODULE_SECONDS = {
    "test_docs": 210, "test_hostile": 141, "test_budget_study": 114, "test_distributed": 104, "test_study": 85,
    "test_inputs": 69, "test_resources": 65, "test_any_model": 63, "test_onnx_model": 60, "test_serving": 58,
    "test_remeasure": 57, "test_bad_input": 54, "test_resume": 49, "test_export_faults": 48,
    "test_native_export": 43, "test_report": 42, "test_compress": 42, "test_claims": 41, "test_export": 41,
    "test_api_result": 38, "test_corruptions": 37, "test_decoded": 33, "test_examples": 33, "test_isolation": 32,
    "test_explain": 25, "test_model_zoo": 24, "test_cli_measure": 24, "test_load": 16, "test_guardrails_study": 16,
    "test_measure": 15,
}  # fmt: skip


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The longest modules first (a stable sort: each module's tests keep their order)."""
    items.sort(key=lambda item: -MODULE_SECONDS.get(item.path.stem, 0))


def _lock(path: Path, how: int) -> Any:
    f = open(path, "a")  # noqa: SIM115 - held past this function; closing it releases the lock
    fcntl.flock(f, how)
    return f


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None):
    """Under xdist, a test marked ``alone`` runs while no other worker runs a test (its setup included): its
    timing is what it asserts, and another worker's builds would be in it. A readers-writer lock over the run's
    workers: every test holds ``turn`` shared, an ``alone`` test exclusively; ``gate`` stops new tests from
    starting while one waits for its turn, so that it is not starved."""
    uid = os.environ.get("PYTEST_XDIST_TESTRUNUID")
    if uid is None:  # one process: nothing runs beside it
        yield
        return
    folder = Path(tempfile.gettempdir())
    gate, turn = folder / f"tuner-tests-{uid}.gate", folder / f"tuner-tests-{uid}.turn"
    if item.get_closest_marker("alone"):
        held = [_lock(gate, fcntl.LOCK_EX), _lock(turn, fcntl.LOCK_EX)]
    else:
        _lock(gate, fcntl.LOCK_SH).close()  # waits while an alone test waits or runs
        held = [_lock(turn, fcntl.LOCK_SH)]
    try:
        yield
    finally:
        for f in reversed(held):
            f.close()


def make_image_folder(root: Path, classes: int = 3, per_class: int = 12, size: int = 20, split: bool = True) -> Path:
    """A learnable ImageFolder: each class is a colour with a noisy stripe pattern."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for part, n in (("train", per_class), ("val", per_class // 2)) if split else ((".", per_class),):
        for c in range(classes):
            d = root / part / f"class_{c}"
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                img = rng.integers(0, 60, (size, size, 3), dtype=np.uint8)
                img[:, :, c % 3] += 150
                img[c :: classes + 1, :, :] = 255
                Image.fromarray(img).save(d / f"{i}.png")
    return root


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("images"))


@pytest.fixture(scope="session")
def studies_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One studies/ (and cache) for the session: trained baselines are reused across tests."""
    return tmp_path_factory.mktemp("studies")


@pytest.fixture(scope="session")
def workload(studies_dir: Path):
    """The tiny CNN on digits at 16 px with a short trained baseline, shared by build/measure tests."""
    from tuner.workload import load_workload
    from tuner.workload_spec import WorkloadSpec

    spec = WorkloadSpec(
        model=f"{TINY}:conv_net",
        data="digits",
        resolution=16,
        train_steps=80,
        recover_steps=20,
        cache_dir=str(studies_dir / "cache"),
    )
    return load_workload(spec)


# PostgreSQL is real: .ci/run installs Debian's package; the fixture starts a throwaway server on loopback per module.
# Without the package the tests that use it skip locally and fail under CI (CI never skips them).
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_postgres(cmd: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


@pytest.fixture(scope="module")
def postgres_url():
    """The URL of a throwaway PostgreSQL server on loopback (trust auth: any password works)."""
    bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not bins:
        message = "PostgreSQL is not installed: apt-get install postgresql (Debian), or see docs/study.md"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    bindir = Path(bins[-1]).parent
    data = Path(tempfile.mkdtemp(prefix="tuner-pg-"))
    if os.geteuid() == 0:
        shutil.chown(data, "postgres", "postgres")
    port = _free_port()
    subprocess.run(
        _as_postgres([str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust"]),
        check=True,
        capture_output=True,
    )
    subprocess.run(
        _as_postgres(
            [
                str(bindir / "pg_ctl"),
                "-D",
                str(data),
                "-w",
                "-l",
                str(data / "log"),
                "-o",
                f"-p {port} -k {data} -c listen_addresses=127.0.0.1",
                "start",
            ]
        ),
        check=True,
        capture_output=True,
    )
    try:
        yield f"postgresql://postgres:s3cret@127.0.0.1:{port}/postgres"  # trust auth: any password works
    finally:
        subprocess.run(
            _as_postgres([str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]), capture_output=True
        )
        shutil.rmtree(data, ignore_errors=True)


def run_tuner(*args: str, cwd: Path | None = None, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "tuner", *args],
        capture_output=True,
        text=True,
        cwd=cwd or ROOT,
        env=env,
        timeout=timeout,
    )


# A small real study shared by the report and export tests: torch-cpu and ort-cpu (fp32/int8) on the
# tiny CNN. Every ort-cpu trial is int8 and the accuracy bound (a 20-point drop, SMALL_MAX_DROP) is loose:
# a 0.5 prune of the tiny CNN loses about 6 points, so nothing is stopped early as hopeless and every
# proposal completes (under a 5-point bound the pruned trials were stopped at "at most 88.3-88.6%" against
# 88.59% required: a coin toss, which left the ort-cpu side to whatever TPE proposed later). The seeded
# sampler's random start-up proposals (trials #1 and #2) are an ort-cpu int8 and a torch-cpu fp32 candidate,
# both pruned 0.5, beside the unpruned torch-cpu baseline (#0): the completed trials always hold both
# placements and both prune ratios (so accuracy varies, the front has more than one candidate to rank, and
# fANOVA has something to explain in both objectives).
SMALL_MAX_DROP = 20  # points
SMALL_SPACE = {
    "placement": {"choices": ["torch-cpu", "ort-cpu"]},
    "precision": {"per": "placement", "choices": {"torch-cpu": ["fp32"], "ort-cpu": ["int8"]}},
    "prune_ratio": {"choices": [0.0, 0.5]},
    "fold_bn": {"choices": [False, True]},
    "graph_opt": {"choices": ["extended", "all"], "when": {"placement": ["ort-cpu"]}},  # QDQ fuses from "extended"
    "batch_size": {"choices": [1, 8]},
    "threads": 1,
}


def once_per_run(tmp_path_factory: pytest.TempPathFactory, name: str, make: Callable[[Path], Any]) -> Any:
    """``make(folder)``'s JSON-able result, made once per pytest run however many xdist workers ask: the first
    makes it in ``folder`` (shared by every worker) under a lock, the others wait and read it. A failed ``make``
    records nothing, so the next worker to ask tries again (and fails alike)."""
    base = tmp_path_factory.getbasetemp()
    root = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base  # xdist: the workers' common folder
    folder, done = root / name, root / f"{name}.json"
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, also when this worker dies
        if not done.exists():
            folder.mkdir(exist_ok=True)
            done.write_text(json.dumps(make(folder)))
        return json.loads(done.read_text())


@pytest.fixture(scope="session")
def small_study(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """{"name", "studies_dir", "storage"} of an 8-trial study run once per test run (all xdist workers read it; no
    test writes to it: those that change it take a copy) through the CLI."""

    def make(studies_dir: Path) -> dict[str, str]:
        import yaml

        space, objectives = studies_dir / "space.yaml", studies_dir / "objectives.yaml"
        space.write_text(yaml.safe_dump(SMALL_SPACE))
        objectives.write_text(
            yaml.safe_dump(
                {
                    "objectives": {"accuracy": "maximize", "per_sample_ms": "minimize"},
                    "constraints": {"accuracy_drop": {"max": SMALL_MAX_DROP}},
                }
            )
        )
        r = run_tuner(
            "--model",
            f"{TINY}:conv_net",
            "--resolution",
            "16",
            "--train-steps",
            "80",
            "--recover-steps",
            "20",
            "--studies-dir",
            str(studies_dir),
            "--space",
            str(space),
            "--objectives",
            str(objectives),
            "--n-trials",
            "8",
            "--study",
            "small",
            "--remeasure-rounds",
            "0",
            "--seed",
            "3",
        )
        assert r.returncode == 0, r.stderr
        return {"name": "small", "studies_dir": str(studies_dir), "storage": f"sqlite:///{studies_dir}/small.db"}

    return once_per_run(tmp_path_factory, "small_study", make)


PLAIN_TRIALS = 12  # issue 28: a plain CNN completes 12 trials of the default space


@dataclass(frozen=True)
class PlainStudy:
    """The plain CNN's study command as it ran, and where its study lives."""

    returncode: int
    stdout: str
    stderr: str
    storage: str  # its study is "plain-cnn" there


@pytest.fixture(scope="session")
def plain_cnn_study(tmp_path_factory: pytest.TempPathFactory) -> PlainStudy:
    """The tiny CNN on the default space, PLAIN_TRIALS trials through the CLI with its output piped, run once per
    test run: what a plain CNN cannot take is capped (tests/test_any_model.py), and progress on a pipe is one plain
    line per trial (tests/test_progress.py)."""

    def make(studies_dir: Path) -> dict[str, Any]:
        r = run_tuner(
            "--model",
            f"{TINY}:conv_net",
            "--resolution",
            "16",
            "--train-steps",
            "80",
            "--recover-steps",
            "6",
            "--studies-dir",
            str(studies_dir),
            "--n-trials",
            str(PLAIN_TRIALS),
            "--study",
            "plain-cnn",
            "--remeasure-rounds",
            "0",
            "--json",
            timeout=900,
        )
        return {
            "returncode": r.returncode,
            "stdout": r.stdout,
            "stderr": r.stderr,
            "storage": f"sqlite:///{studies_dir}/plain-cnn.db",
        }

    return PlainStudy(**once_per_run(tmp_path_factory, "plain_cnn_study", make))
