"""The load generator (tuner.measure.load): on lanes whose timing is known (sleeps: no CPU needed, so the figures
hold on a busy machine) and on a real tiny model in each CPU runtime; and the refusal of concurrency settings that
cannot be honoured, before any work."""

from __future__ import annotations

import time

import numpy as np
import optuna
import pytest

from tests.conftest import TINY, run_tuner
from tuner import hardware
from tuner.candidate import Candidate
from tuner.errors import ConfigError, MeasurementError, UnsupportedCombination
from tuner.measure import measure
from tuner.measure.latency import grouped_quantile, quantile_ci
from tuner.measure.load import LoadPolicy, closed_window, open_window, replaying, run_load
from tuner.passes.chain import build
from tuner.runtimes.registry import PLACEMENTS, check_supported

pytestmark = pytest.mark.slow  # end to end: studies, exports and processes (pytest -m "not slow" skips)

QUICK = LoadPolicy(warmup_seconds=0.05, min_seconds=0.3, max_seconds=0.6, min_requests=50, window_seconds=0.1)


def _sleep(ms: float):
    return lambda: time.sleep(ms / 1000)


def test_closed_loop_keeps_its_requests_in_flight_and_answers_every_one():
    # One lane per request: two 2 ms lanes answer about twice what one does, each request taking its 2 ms.
    one, issued_one, _ = closed_window([_sleep(2)], 1, 0.3)
    two, issued_two, overloaded = closed_window([_sleep(2), _sleep(2)], 2, 0.3)
    assert issued_one == len(one) > 0 and issued_two == len(two) and not overloaded
    assert 1.6 < len(two) / len(one) < 2.4
    assert min(two) >= 2.0
    # Four requests in flight on one lane: each waits for the three ahead of it (Little's law: 4x the service time).
    queued, issued, _ = closed_window([_sleep(2)], 4, 0.3)
    assert issued == len(queued) and 3.3 < np.median(queued) / np.median(one) < 4.7


@pytest.mark.alone
def test_open_loop_counts_queueing_and_bounds_an_overload():
    # At 10% of a 2 ms lane's capacity a request rarely waits: the median is the service time.
    light, issued, overloaded = open_window([_sleep(2)], 50.0, 0.4, seed=0)
    assert issued == len(light) > 5 and not overloaded and 2.0 <= np.median(light) < 4.0
    # Arrivals at 4x its capacity: requests wait ever longer; past 50 ms no later arrival is let in, and every one
    # let in is answered, so the window ends soon after its 0.4 s.
    start = time.perf_counter()
    heavy, issued, overloaded = open_window([_sleep(2)], 2000.0, 0.4, seed=0, max_wait_ms=50.0)
    assert overloaded and issued == len(heavy) and max(heavy) >= 50.0
    assert time.perf_counter() - start < 1.5 and issued < 0.4 * 2000 * 0.5
    # The same seed, the same arrival times: two runs at a light load answer the same number of requests.
    _, issued_again, _ = open_window([_sleep(2)], 50.0, 0.4, seed=0)
    assert issued_again == len(light)


def test_a_failing_request_ends_the_measurement_without_a_hang():
    def broken() -> None:
        raise RuntimeError("kernel exploded")

    for window in (
        lambda: closed_window([broken, _sleep(1)], 2, 0.1),
        lambda: closed_window([broken], 3, 0.1),
        lambda: open_window([broken, _sleep(1)], 200.0, 0.1, seed=0),
    ):
        with pytest.raises(MeasurementError, match="kernel exploded"):
            window()


def test_run_load_figures_cover_every_request():
    closed, opened = run_load([_sleep(1), _sleep(1)], batch_size=4, in_flight=2, threads=None, policy=QUICK)
    for s in (closed, opened):
        assert s.answered == s.issued > 0 and s.windows >= 1 and s.seconds >= QUICK.min_seconds * 0.9
        assert 1.0 <= s.p50_ms <= s.p95_ms <= s.p99_ms <= s.max_ms
        lo, hi = s.ci["p95"]
        assert lo <= s.p95_ms <= hi
        assert s.throughput == pytest.approx(4 * s.answered / s.seconds)  # samples: 4 per request
    assert opened.rate == pytest.approx(QUICK.utilisation * closed.requests_per_second)
    assert opened.requests_per_second < closed.requests_per_second  # half the capacity offered, and answered
    # Measured again the same way: by the same rule (a share of the fresh closed loop's rate), or at a given rate.
    again = replaying({"load": {"open": opened.to_dict(), "policy": {"utilisation": 0.3, "open_rate": None}}})
    assert again is not None and (again.utilisation, again.open_rate) == (0.3, None)
    assert replaying({"load": {"policy": {"utilisation": 0.5, "open_rate": 120.0}}}).open_rate == 120.0
    assert replaying({"accuracy": 0.9}) is None
    with pytest.raises(MeasurementError, match="cannot keep"):
        run_load([_sleep(1), _sleep(1)], 1, in_flight=1, threads=None, policy=QUICK)


def test_quantile_ci_covers_the_true_quantile():
    """A 95% CI of the p95: over many draws from a known distribution it holds the true p95 about 95% of the time;
    grouping widens it to the groups' spread, never narrows it."""
    rng = np.random.default_rng(0)
    true_p95 = float(np.exp(0.3 * 1.6448536))  # lognormal(0, 0.3)
    covered = [
        lo <= true_p95 <= hi for lo, hi in (quantile_ci(np.sort(rng.lognormal(0, 0.3, 400)), 0.95) for _ in range(2000))
    ]
    assert 0.93 <= np.mean(covered) <= 0.975
    samples = rng.lognormal(0, 0.3, 400)
    value, lo, hi = grouped_quantile(samples, 0.95)
    _, glo, ghi = grouped_quantile(samples, 0.95, [list(samples[:200]), list(samples[200:] * 1.5)])
    assert lo <= value <= hi and glo <= lo and ghi >= hi


@pytest.mark.parametrize(
    "candidate",
    [
        Candidate(placement="ort-cpu", precision="fp32", threads=1, streams=2, requests=3),  # a queue before 2 sessions
        Candidate(placement="ov-cpu", precision="fp32", threads=1, streams=2),
        Candidate(placement="torch-cpu", precision="fp32", threads=1, streams=2),
    ],
    ids=["ort-cpu", "ov-cpu", "torch-cpu"],
)
def test_a_tiny_model_under_load(workload, candidate):
    if candidate.streams > hardware.cores():
        pytest.skip("needs 2 CPUs")
    m = measure(build(workload, candidate), workload.data, load=QUICK)
    assert (m.streams, m.requests, m.threads) == (candidate.streams, candidate.in_flight, 1)
    assert m.load_throughput > 0 and m.open_throughput > 0
    assert m.load_p50_ms <= m.load_p95_ms <= m.load_p99_ms and m.open_p50_ms <= m.open_p95_ms <= m.open_p99_ms
    closed, opened = m.load["closed"], m.load["open"]
    assert closed["answered"] == closed["issued"] > 0 and opened["answered"] == opened["issued"] > 0  # none lost
    assert closed["in_flight"] == candidate.in_flight
    serving = m.load["serving"]
    assert serving["streams"] == 2
    if candidate.placement == "ort-cpu":  # one session per stream, each on its own thread
        assert serving["sessions"] == 2 and serving["intra_op_threads"] == [1, 1] and m.load["lanes"] == 2
    if candidate.placement == "ov-cpu":  # read back from the compiled model
        assert serving["NUM_STREAMS"] == 2 and serving["INFERENCE_NUM_THREADS"] == 2 and serving["infer_requests"] == 2


def test_measure_without_load_stays_single_stream(workload):
    m = measure(build(workload, Candidate(placement="ort-cpu", threads=1)), workload.data)
    assert m.load is None and m.load_throughput is None and (m.streams, m.requests) == (1, 1)


def test_unsupported_concurrency_is_refused_before_any_work(tmp_path):
    with pytest.raises(ConfigError, match=r"requests must be 0 .* or an integer >= streams"):
        Candidate(streams=2, requests=1)
    with pytest.raises(ConfigError, match="streams must be an integer >= 1"):
        Candidate(streams=0)
    cpus = hardware.cores()
    if cpus >= 2:
        assert "threads x streams" in hardware.check_fits(1, 32, threads=cpus, streams=2, memory=None)
    assert "streams: " in hardware.check_fits(1, 32, streams=cpus + 1, memory=None)
    assert hardware.check_fits(1, 32, threads=0, streams=cpus, memory=None) is None  # 0: the CPUs shared out
    assert hardware.threads_per_stream(0, cpus) == 1 and hardware.threads_per_stream(0, 1) == cpus
    # A GPU runs one stream: refused with the reason, whatever this machine has.
    for name in ("ort-cuda", "ort-tensorrt", "torch-cuda"):
        assert "serves one stream" in PLACEMENTS[name].refuse_serving(2, 2)
        assert PLACEMENTS[name].refuse_serving(1, 4) is None  # more requests queue for the one stream
    assert PLACEMENTS["ov-cpu"].refuse_serving(2, 4) is None
    if PLACEMENTS["torch-cuda"].unavailable() is None:
        with pytest.raises(UnsupportedCombination, match="serves one stream"):
            check_supported(Candidate(placement="torch-cuda", streams=2))
    # The CLI: one line, exit 2, before the data loads or a baseline trains.
    config = tmp_path / "c.yaml"
    config.write_text(f"placement: ort-cpu\nthreads: {cpus}\nstreams: {cpus + 1}\n")
    r = run_tuner(
        "measure",
        "--model",
        f"{TINY}:conv_net",
        "--studies-dir",
        str(tmp_path / "s"),
        "--config",
        str(config),
        "--load",
    )
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "CPUs" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "s").exists()


def test_a_space_sample_that_breaks_a_rule_together_is_refused(tmp_path):
    import yaml

    from tuner.space import load_space

    path = tmp_path / "space.yaml"
    path.write_text(
        yaml.safe_dump({"placement": "ov-cpu", "streams": {"choices": [1, 2]}, "requests": {"choices": [0, 1]}})
    )
    space = load_space(str(path))
    assert space.sample(optuna.trial.FixedTrial({"streams": 2, "requests": 0})).in_flight == 2
    with pytest.raises(UnsupportedCombination, match="requests must be"):
        space.sample(optuna.trial.FixedTrial({"streams": 2, "requests": 1}))
