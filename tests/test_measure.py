import dataclasses
import os
import sys
import threading
import time

import numpy as np
import pytest

from tuner import hardware
from tuner.candidate import Candidate
from tuner.measure import host, measure
from tuner.measure.latency import LatencyPolicy, median_ci, summarize_latency, time_calls
from tuner.passes.chain import build


def test_median_ci_covers_the_true_median_95_percent_of_the_time():
    """A 95% CI: over many draws from a known distribution (lognormal, median 1) it holds the true median about
    95% of the time, at small and large sample counts; a wrong z or order statistic moves that share."""
    rng = np.random.default_rng(0)
    for n in (31, 101, 400):
        covered = []
        for _ in range(2000):
            lo, hi = median_ci(np.sort(rng.lognormal(0, 0.3, n)))
            covered.append(lo <= 1.0 <= hi)
        assert 0.93 <= np.mean(covered) <= 0.975, (n, np.mean(covered))
    # With more samples the interval narrows.
    s = np.sort(rng.lognormal(0, 0.3, 401))
    s2 = np.sort(rng.lognormal(0, 0.3, 4001))
    assert np.subtract(*median_ci(s2)[::-1]) < np.subtract(*median_ci(s)[::-1])


def test_summarize_latency_known_values():
    stats = summarize_latency(list(range(1, 101)))
    assert stats.median_ms == 50.5 and stats.samples == 100
    assert stats.p95_ms == pytest.approx(95.05)
    # n = 100: ranks 50 -+ 1.96 * sqrt(100) / 2 = 40.2 and 59.8, floored and ceiled: the 41st and 61st values
    assert (stats.ci_low_ms, stats.ci_high_ms) == (41.0, 61.0)
    # Over block medians the CI comes from those, widened to hold the median of all calls where it lies outside:
    # 3 blocks give their lowest and highest (1 and 3); the calls' median, 5, lies above.
    blocks = summarize_latency([1.0] * 5 + [5.0] * 6, block_medians_ms=[1.0, 2.0, 3.0])
    assert (blocks.median_ms, blocks.ci_low_ms, blocks.ci_high_ms) == (5.0, 1.0, 5.0)


def test_time_calls_keeps_at_most_max_samples():
    """A call far faster than a block: one block of 1 ms already holds more calls than the cap (with the
    real host probe: quiet or not is the host's business, the figures hold exactly the cap either way)."""
    calls = []
    stats = time_calls(
        lambda x: calls.append(x), 1, LatencyPolicy(warmup=3, min_samples=20, max_samples=500, block_seconds=0.001)
    )
    assert stats.samples == 500 < len(calls)


def _spin(ms: float) -> None:
    end = time.perf_counter() + ms / 1000
    while time.perf_counter() < end:
        pass


class _Host:
    """A host that is contended in every `period`-th probe window and then runs `spin` twice as slow."""

    def __init__(self, contended_every: int, reported: bool = True):
        self.n, self.every, self.reported, self.slow = 0, contended_every, reported, False

    def probe(self) -> host.HostState:
        self.n += 1
        self.slow = self.every > 0 and self.n % self.every == 0
        return host.HostState((0.2 if self.slow and self.reported else 0.1, 0.1), 0.1)

    def run(self, _: object) -> None:
        _spin(2.0 if self.slow else 1.0)


@pytest.mark.alone
def test_time_calls_stops_when_ci_is_tight():
    """A steady 1 ms call on a quiet host: the CI of the median is tight at once, so the timing ends at
    min_seconds, long before max_seconds; asked for a CI of +-0 it runs to max_seconds instead."""
    h = _Host(contended_every=0)
    policy = LatencyPolicy(
        warmup=1, warmup_seconds=0.0, min_samples=30, min_seconds=0.2, max_seconds=5.0, rel_ci=0.02, block_seconds=0.01
    )
    start = time.perf_counter()
    stats = time_calls(h.run, None, policy, probe=h.probe)
    assert time.perf_counter() - start < 2.5
    assert (stats.ci_high_ms - stats.ci_low_ms) / 2 <= 0.02 * stats.median_ms and stats.samples >= 30
    start = time.perf_counter()
    time_calls(h.run, None, dataclasses.replace(policy, rel_ci=0.0, max_seconds=0.5), probe=h.probe)
    assert time.perf_counter() - start >= 0.5


@pytest.mark.alone
@pytest.mark.parametrize("reported", [True, False], ids=["canary-sees-it", "only-the-block-shows-it"])
def test_time_calls_drops_contended_blocks(reported):
    """Contention the probe sees, or that only makes a whole block slow, is left out of the figures."""
    h = _Host(contended_every=3, reported=reported)
    policy = LatencyPolicy(warmup=2, min_samples=30, max_seconds=1.0, rel_ci=0.0, block_seconds=0.01)
    stats = time_calls(h.run, None, policy, probe=h.probe)
    assert stats.quiet
    assert 0.9 < stats.median_ms < 1.3 and stats.p95_ms < 1.5  # the 2 ms blocks are gone
    assert 0.2 < stats.contended_share < 0.5 if reported else stats.contended_share == 0.0  # every third block
    probes = h.n
    unguarded = time_calls(h.run, None, dataclasses.replace(policy, quiet_host=False), probe=h.probe)
    assert h.n == probes and unguarded.contended_share == 0.0  # no probing, nothing dropped


def test_fast_cluster_keeps_enough_samples_past_one_lucky_block():
    from tuner.measure.latency import _fast_cluster

    lucky, usual = (True, 1.0, [1.0] * 5), (True, 1.3, [1.3] * 5)  # 1.3 > FAST_CLUSTER x the lucky block
    blocks = [usual] * 4 + [lucky] + [usual] * 6 + [(True, 2.6, [2.6] * 5)] * 3
    assert _fast_cluster(blocks, at_least=5) == [lucky]  # enough: the fast phase alone
    kept = _fast_cluster(blocks, at_least=30)  # not enough: the next fastest blocks, never the slow phase
    assert kept == [lucky] + [usual] * 5
    assert len(_fast_cluster(blocks[:3], at_least=30)) == 3  # fewer samples than asked: all there are


def test_ci_counts_blocks_not_calls():
    """Calls in one block share the host's moment: the CI of the median comes from the block medians."""
    rng = np.random.default_rng(0)
    levels = rng.uniform(1.0, 1.1, 20)  # the host's state per block: +-5%
    samples = [x for level in levels for x in level + rng.normal(0, 0.002, 50)]
    per_call = summarize_latency(samples)
    per_block = summarize_latency(
        samples, block_medians_ms=[float(np.median(level + np.zeros(50))) for level in levels]
    )
    assert per_call.median_ms == per_block.median_ms and per_call.samples == per_block.samples == 1000
    assert (per_block.ci_high_ms - per_block.ci_low_ms) > 4 * (per_call.ci_high_ms - per_call.ci_low_ms)
    # What the wider CI buys: repeated over many such measurements, the per-block CI holds the median of the
    # host's states (1.05) about as often as a 95% CI should; the per-call CI, too narrow, mostly misses it.
    block_hits = call_hits = 0
    for _ in range(200):
        levels = rng.uniform(1.0, 1.1, 20)
        samples = [x for level in levels for x in level + rng.normal(0, 0.002, 50)]
        per_call = summarize_latency(samples)
        per_block = summarize_latency(
            samples, block_medians_ms=[float(np.median(level + np.zeros(50))) for level in levels]
        )
        block_hits += per_block.ci_low_ms <= 1.05 <= per_block.ci_high_ms
        call_hits += per_call.ci_low_ms <= 1.05 <= per_call.ci_high_ms
    assert block_hits >= 0.9 * 200 and call_hits <= 0.5 * 200, (block_hits, call_hits)


@pytest.mark.alone
def test_time_calls_on_a_host_that_never_goes_quiet_says_so():
    h = _Host(contended_every=1)
    policy = LatencyPolicy(warmup=1, min_samples=10, max_seconds=0.2, max_wait_seconds=0.3, block_seconds=0.01)
    start = time.perf_counter()
    stats = time_calls(h.run, None, policy, probe=h.probe)
    assert time.perf_counter() - start < 2.0  # gave up waiting
    assert not stats.quiet and stats.contended_share == 1.0 and stats.median_ms > 1.8


def test_host_probe_reads_every_cpu_and_keeps_the_fastest(monkeypatch):
    monkeypatch.setattr(host, "_fastest_ms", None)  # this process's full speed is restored afterwards
    state = host.probe()
    assert len(state.canary_ms) == hardware.cores() and min(state.canary_ms) > 0
    assert state.reference_ms == host.reference_ms() <= min(state.canary_ms)
    host.remember(state.reference_ms / 2)  # an earlier process saw the host faster: that is full speed
    assert host.reference_ms() == state.reference_ms / 2
    host.remember(state.reference_ms * 4)  # a slower one changes nothing
    assert host.reference_ms() == state.reference_ms / 2
    assert host.probe().reference_ms == state.reference_ms / 2  # later probes judge against the remembered speed


@pytest.mark.alone
@pytest.mark.parametrize(
    "candidate",
    [
        Candidate(batch_size=4),
        Candidate(placement="ort-cpu", precision="int8", batch_size=3),
    ],
)
def test_measure_reports_consistent_figures(workload, candidate):
    from tuner.train import torch_accuracy

    m = measure(build(workload, candidate), workload.data, LatencyPolicy(max_seconds=0.5))
    # the accuracy of the reference model as torch scores it (one image either way for another batching);
    # int8 within 2 points
    reference = torch_accuracy(workload.reference_model(), workload.data)
    tolerance = 0.02 if candidate.precision == "int8" else 1 / len(workload.data.val)
    assert m.accuracy == pytest.approx(reference, abs=tolerance + 1e-9) and m.accuracy > 0.5
    # the CI is an interval, of the per-batch median: above the per-sample figure (a per-sample CI at batch 3-4
    # would lie at a third or a quarter of the median)
    lo, hi = m.latency_ci_ms
    assert m.per_sample_ms < lo < hi
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
    with pytest.raises(HopelessCandidate, match=rf"stopped after (\d+) of {len(workload.data.val)} ") as err:
        top1(session, workload.data, batch_size=8, min_accuracy=0.9)
    seen = int(str(err.value).split("after ")[1].split(" of")[0])
    assert seen < 100
    assert top1(session, workload.data, batch_size=8, min_accuracy=0.0) < 0.9  # without a bound it runs to the end


@pytest.mark.skipif(host.ALLOWED is None or len(host.ALLOWED) < 2, reason="needs two CPUs to choose between")
def test_a_runtime_on_fewer_threads_follows_the_quietest_cpu():
    import os
    import threading

    a, b = host.ALLOWED[:2]
    pool = threading.Thread(target=time.sleep, args=(2,))  # stands in for a runtime's worker thread
    pool.start()
    with host.QuietestCpus(threads=1) as cpus:
        assert cpus.follow(host.HostState((0.2, 0.1), 0.1, (a, b))) == (b,)  # a is contended: run on b
        assert os.sched_getaffinity(0) == {b} and os.sched_getaffinity(pool.native_id) == {b}
        assert cpus.follow(host.HostState((0.1, 0.1), 0.1, (a, b))) == (b,)  # b still quiet: stay
        assert cpus.follow(host.HostState((0.1, 0.2), 0.1, (a, b))) == (a,)  # b went slow: move
        assert os.sched_getaffinity(0) == {a}
    assert os.sched_getaffinity(0) == os.sched_getaffinity(pool.native_id) == set(host.ALLOWED)  # given back
    with host.QuietestCpus(threads=len(host.ALLOWED)) as every:  # a runtime on every CPU is never pinned
        assert every.follow(host.HostState((0.2, 0.1), 0.1, (a, b))) is None
    assert host.HostState((0.2, 0.1), 0.1, (a, b)).quiet_on((b,)) and not host.HostState((0.2, 0.1), 0.1).quiet
    pool.join()


def test_a_cpu_shared_by_time_slices_is_crowded_though_the_canary_reads_full_speed():
    """Other processes' runnable threads plus the CPUs a runtime holds, more than the CPUs there are: some wait for
    a time slice (a tiny CNN on 2 threads went from 0.13 to 76 ms a call beside a 2-thread matmul, canary 1.2x)."""
    both = host.HostState((0.1, 0.1), 0.1, (0, 1), others=1)
    assert both.quiet and both.crowded() and both.crowded((0, 1)) and not both.crowded((1,))  # 1 CPU held: room
    assert not host.HostState((0.1, 0.1), 0.1, (0, 1)).crowded()
    crowded = dataclasses.replace(both, others=2)
    assert crowded.crowded((1,))
    # the timing takes such blocks for contended ones: never quiet, however fast the canary
    stats = time_calls(
        lambda _: _spin(1.0),
        None,
        LatencyPolicy(warmup=1, min_samples=10, max_seconds=0.2, max_wait_seconds=0.2, block_seconds=0.01),
        probe=lambda: crowded,
    )
    assert not stats.quiet and stats.contended_share == 1.0


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="reads Linux's /proc")
def test_runnable_others_counts_other_processes_threads_and_not_this_ones():
    import subprocess

    import torch

    # this process's own busy threads (a runtime's pool mid-call) are not others
    big = torch.randn(1024, 1024)
    busy = threading.Thread(target=lambda: [big @ big for _ in range(40)])
    busy.start()
    time.sleep(0.05)
    own = host._own_running()
    busy.join()
    assert own >= 2  # the asking thread and the one multiplying
    # two busy processes beside it are
    spin = [sys.executable, "-c", "while True: pass"]
    children = [subprocess.Popen(spin) for _ in range(2)]
    try:
        time.sleep(0.3)
        seen = [host.runnable_others() for _ in range(5)]
        state = host.probe()
    finally:
        for c in children:
            c.kill()
            c.wait()
    assert max(seen) >= 2 and state.others >= 1 and state.crowded()
