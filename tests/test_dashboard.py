"""The study where users look: a finished tuner study served by optuna-dashboard (the registry's package, run
here on loopback) shows its trials, its objectives by name, each trial's constraint, and the figures users sort by
as plain numbers; the re-measure is kept on the study as plain values too."""

import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import optuna
import pytest

from tuner.record import read_remeasure
from tuner.study.storage import CONSTRAINT_PREFIX, FLAT_METRICS, REMEASURED_PREFIX, write_remeasure

pytestmark = pytest.mark.slow  # end to end: studies, exports and processes (pytest -m "not slow" skips)

pytest.importorskip("optuna_dashboard", reason="optuna-dashboard is in the test extra: pip install -e '.[test]'")
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback only, never through a proxy


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> dict:
    with _DIRECT.open(url, timeout=30) as response:
        return json.loads(response.read().decode())


def _dashboard_command(storage: str, port: int) -> list[str]:
    script = Path(sys.executable).parent / "optuna-dashboard"  # the command users run
    args = [storage, "--host", "127.0.0.1", "--port", str(port)]
    if script.is_file():
        return [str(script), *args]
    return [
        sys.executable,
        "-c",
        (f"import optuna_dashboard; optuna_dashboard.run_server({storage!r}, host='127.0.0.1', port={port})"),
    ]


@pytest.fixture(scope="module")
def served(small_study, tmp_path_factory):
    """A copy of the session's small study (with a re-measure kept on it) served by optuna-dashboard on loopback
    for the length of this module, at most 10 minutes."""
    folder = tmp_path_factory.mktemp("dashboard")
    db = folder / "small.db"
    shutil.copyfile(Path(small_study["studies_dir"]) / "small.db", db)
    url = f"sqlite:///{db}"
    study = optuna.load_study(study_name=small_study["name"], storage=url)
    front = [t.number for t in study.best_trials]
    write_remeasure(
        study,
        {
            "rounds": 3,
            "trials": {
                str(n): {"per_sample_ms": 0.001 * (i + 1), "median_ms": 0.001 * (i + 1)} for i, n in enumerate(front)
            },
        },
    )
    port = _free_port()
    server = subprocess.Popen(
        ["timeout", "600", *_dashboard_command(url, port)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                studies = _get(f"{base}/api/studies")["study_summaries"]
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    server.terminate()
                    pytest.fail(f"optuna-dashboard did not start: {server.communicate(timeout=10)[1][-2000:]}")
                time.sleep(0.3)
        study_id = next(s["study_id"] for s in studies if s["study_name"] == small_study["name"])
        yield {"study": study, "detail": _get(f"{base}/api/studies/{study_id}"), "front": front}
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=10)


def _attrs(serialized: list[dict]) -> dict[str, str]:
    return {a["key"]: a["value"] for a in serialized}


def test_dashboard_shows_the_trials_and_the_objectives_by_name(served):
    detail, study = served["detail"], served["study"]
    assert detail["objective_names"] == ["accuracy", "per_sample_ms"]
    assert detail["directions"] == ["maximize", "minimize"]
    assert [t["number"] for t in detail["trials"]] == [t.number for t in study.trials]
    complete = [t for t in detail["trials"] if t["state"] == "Complete"]
    assert len(complete) >= 3
    assert {t["number"] for t in detail["best_trials"]} >= {t.number for t in study.best_trials}


def test_dashboard_shows_each_trials_constraint(served):
    """tuner writes constraints through ``Trial.set_constraint`` only (Optuna's public API), named by the constraint
    in words; optuna-dashboard 0.21 reads only the older unnamed list in its constraints column, so each trial's
    violation is a plain user attr too, which the dashboard shows: the same figure Optuna reads."""
    detail, study = served["detail"], served["study"]
    by_number = {t.number: t for t in study.trials}
    complete = [t for t in detail["trials"] if t["state"] == "Complete"]
    name = "accuracy_drop <= 20"  # the small study's bound: a 20-point drop
    for t in complete:
        frozen = by_number[t["number"]]
        assert frozen.constraints == {name: pytest.approx(frozen.user_attrs["metrics"]["accuracy_drop"] - 20)}
        assert float(_attrs(t["user_attrs"])[CONSTRAINT_PREFIX + name]) == pytest.approx(frozen.constraints[name])
    assert _attrs(detail["user_attrs"])["constraints"] == f'["{name}"]'  # the study's constraints, in order


def test_dashboard_sorts_by_plain_figures(served):
    """The figures users sort by are plain numbers (sortable in the dashboard's table), the metrics dict stays."""
    detail, study = served["detail"], served["study"]
    sortable = {a["key"] for a in detail["union_user_attrs"] if a["sortable"]}
    measured = [k for k in FLAT_METRICS if k != "corruption_drop"]  # scored only when asked (--corruptions)
    assert set(measured) <= sortable
    by_number = {t.number: t for t in study.trials}
    for t in (t for t in detail["trials"] if t["state"] == "Complete"):
        attrs, metrics = _attrs(t["user_attrs"]), by_number[t["number"]].user_attrs["metrics"]
        for key in measured:
            assert float(attrs[key]) == pytest.approx(metrics[key]), key
        # The whole dict, as the dashboard shows it: JSON, cut at its 1024 characters (a recovery's proxy curve or
        # many classes' top-1 run past that).
        shown = attrs["metrics"]
        assert shown == json.dumps(metrics)[: len(shown)] and shown.startswith('{"accuracy": ')


def test_remeasure_is_kept_as_plain_study_values(served):
    detail, front = served["detail"], served["front"]
    attrs = _attrs(detail["user_attrs"])
    for i, n in enumerate(front):
        assert float(attrs[f"{REMEASURED_PREFIX}{n}"]) == pytest.approx(0.001 * (i + 1))
    assert set(read_remeasure(served["study"])) == set(front)


def test_a_later_remeasure_clears_figures_it_did_not_retime():
    study = optuna.create_study()
    write_remeasure(study, {"trials": {"1": {"per_sample_ms": 0.5}, "2": {"per_sample_ms": 0.7}}})
    write_remeasure(study, {"trials": {"2": {"per_sample_ms": 0.6}, "3": {"error": "crashed"}}})
    flat = {k: v for k, v in study.user_attrs.items() if k.startswith(REMEASURED_PREFIX)}
    assert flat == {f"{REMEASURED_PREFIX}1": None, f"{REMEASURED_PREFIX}2": 0.6}
