import numpy as np
import pytest

from tuner.build import build
from tuner.candidate import Candidate
from tuner.measure import measure
from tuner.measure.latency import LatencyPolicy, median_ci, summarize, time_calls


def test_median_ci_brackets_the_median():
    rng = np.random.default_rng(0)
    s = np.sort(rng.lognormal(0, 0.3, 401))
    lo, hi = median_ci(s)
    assert lo < np.median(s) < hi
    # With more samples the interval narrows.
    s2 = np.sort(rng.lognormal(0, 0.3, 4001))
    lo2, hi2 = median_ci(s2)
    assert hi2 - lo2 < hi - lo


def test_summarize_known_values():
    stats = summarize(list(range(1, 101)))
    assert stats.median_ms == 50.5 and stats.samples == 100
    assert 95 <= stats.p95_ms <= 96
    assert stats.ci_low_ms <= 50.5 <= stats.ci_high_ms


def test_time_calls_stops_when_ci_is_tight():
    calls = []
    stats = time_calls(lambda x: calls.append(x), 1, LatencyPolicy(warmup=3, min_samples=20, max_samples=500))
    assert len(calls) == 3 + stats.samples
    assert 20 <= stats.samples <= 500


@pytest.mark.parametrize("candidate", [
    Candidate(batch_size=4),
    Candidate(placement="ort-cpu", precision="int8", batch_size=3),
])
def test_measure_reports_consistent_figures(workload, candidate):
    m = measure(build(workload, candidate), workload.data, LatencyPolicy(max_seconds=0.5))
    assert 0.0 <= m.accuracy <= 1.0 and m.accuracy > 0.5
    assert m.latency_ci_ms[0] <= m.latency_ms <= m.latency_ci_ms[1]
    assert m.per_sample_ms == pytest.approx(m.latency_ms / candidate.batch_size)
    assert m.throughput == pytest.approx(1000 * candidate.batch_size / m.latency_ms)
    assert m.samples >= 30 and m.params > 0 and m.macs > 0 and m.size_mb > 0
    assert m.executed_precision == candidate.precision


def test_unfused_int8_reports_what_really_ran(workload):
    """With graph optimization off, ORT runs QDQ as float convs: the figure is not counted as int8."""
    c = Candidate(placement="ort-cpu", precision="int8", graph_opt="disable")
    assert measure(build(workload, c), workload.data, LatencyPolicy(max_seconds=0.3)).executed_precision == "fp32"


def test_hopeless_accuracy_pass_stops_early(workload):
    """An untrained model cannot reach 90%: the pass stops long before the end of the split."""
    import torch

    from tuner.errors import HopelessCandidate
    from tuner.measure.accuracy import top1
    from tuner.runtimes.torch_runtime import TorchSession

    torch.manual_seed(0)
    session = TorchSession(workload.builder(num_classes=10), "cpu", torch.float32, threads=1)
    with pytest.raises(HopelessCandidate, match=r"stopped after (\d+) of 359") as err:
        top1(session, workload.data, batch_size=8, min_accuracy=0.9)
    seen = int(str(err.value).split("after ")[1].split(" of")[0])
    assert seen < 100
    assert top1(session, workload.data, batch_size=8, min_accuracy=0.0) < 0.9  # without a bound it runs to the end
