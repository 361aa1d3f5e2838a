"""What a study found, as data (``summarize``) and as text (the Pareto table, the progress bar)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import TrialState

from tuner import results
from tuner.candidate import Candidate, compression, int8_settings
from tuner.metric import metric_words
from tuner.record import TrialRecord, read_study, read_trials
from tuner.study.budget import duration
from tuner.study.costs import account
from tuner.study.counts import count_trials
from tuner.table import aligned

if TYPE_CHECKING:
    from tuner.objectives import Objectives
    from tuner.study.loop import Progress


def _trial_entry(
    r: TrialRecord, base: TrialRecord | None, speed: str | None, remeasured: dict[int, dict[str, Any]]
) -> dict[str, Any]:
    ms, lo, hi, fresh = results.trusted_ms(r.metrics or {}, remeasured.get(r.number))
    return {
        "number": r.number,
        "params": r.candidate or {},
        "metrics": r.metrics or {},
        "feasible": results.is_feasible(r),
        "speedup": results.speedup_over(base, r, speed, remeasured),
        "baseline": r.baseline,
        # the figure shown: fresh processes' median and range where re-timed, else this process's and its CI
        "ms": {"per_sample": ms, "low": lo, "high": hi, "source": "fresh processes" if fresh else "one process"},
    }


def summarize(study: optuna.Study, objectives: Objectives) -> dict[str, Any]:
    """The study's front and pick as data; in a study under load speedups are in its throughput objective."""
    base = results.baseline_trial(study)
    speed = results.speed_metric(study)
    remeasured = read_study(study).remeasure
    pick = results.fastest_feasible(results.points(study))
    states = [t.state for t in study.get_trials(deepcopy=False)]
    best = next((t for t in results.completed(study) if t.number == pick.point.number), None) if pick else None
    return {
        "objectives": dict(zip(objectives.names, objectives.directions)),
        "constraints": [str(c) for c in objectives.constraints],
        "reference_accuracy": read_study(study).reference.get("accuracy"),
        "metric": metric_words(read_study(study).metric),  # what "accuracy" is: top-1, or the user's metric
        "baseline": base.metrics if base else None,
        "baseline_entry": _trial_entry(base, base, speed, remeasured) if base else None,  # its figure as shown
        "trials": {s.name.lower(): states.count(s) for s in TrialState if states.count(s)},
        "repeats": count_trials(study).repeats,  # finished trials that reused an earlier trial's outcome
        "speed": speed or "per_sample_ms",  # the figure "fastest" and the speedups go by
        "pareto": sorted(
            (_trial_entry(t, base, speed, remeasured) for t in results.front(study)), key=lambda e: e["number"]
        ),
        "best_feasible": {**_trial_entry(best, base, speed, remeasured), "by_remeasure": pick.by_remeasure}  # type: ignore[union-attr]
        if best is not None
        else None,
        # where the last run's time went (tuner.study.costs.account); None for a study run before it was kept
        "time": account(read_trials(study), kept_time) if (kept_time := read_study(study).time) else None,
    }


TIME_WORDS = {
    "setup": "setup (data, baseline, reference)",
    "recovery": "recovery (distillation)",
    "calibration": "int8 calibration and sensitivity",
    "export": "export and conversion",
    "accuracy": "accuracy",
    "latency": "latency",
    "re-measure": "re-measure (fresh processes)",
    "overhead": "idle and overhead (processes, storage)",
}


def time_table(summary: dict[str, Any]) -> str:
    """Where the run's time (its budget, when it had one) went, by category, with each one's share."""
    spent = summary.get("time")
    if not spent:
        return ""
    wall, budget = spent["wall_s"], spent["budget_s"]
    head = (
        f"time: {duration(wall)} of the {duration(budget)} budget ({wall / budget:.0%})"
        if budget
        else f"time: {duration(wall)}"
    ) + f", {spent['trials']} trials:"
    rows = [(f"  {TIME_WORDS[k]}", f"{v:.1f} s", f"{v / wall:.0%}" if wall else "-") for k, v in spent["parts"].items()]
    tail = (
        [f"  {spent['skipped']} proposals not started: they would not have ended within the budget"]
        if spent["skipped"]
        else []
    )
    return "\n".join([head, *aligned(rows), *tail] + ([f"  {spent['ended']}"] if spent["ended"] else []))


def precision_cell(c: dict[str, Any], m: dict[str, Any]) -> str:
    """The precision, its int8 settings, and what ran where that differs: ``int8 (compute ops, 2 float; ran
    mixed)``."""
    ran = f"ran {m['executed_precision']}" if m["executed_precision"] != c["precision"] else ""
    inner = "; ".join(x for x in (int8_settings(c), ran) if x)
    return c["precision"] + (f" ({inner})" if inner else "")


def pareto_table(summary: dict[str, Any]) -> str:
    """The front as a table; a study under load gets its serving settings and figures under load too."""
    loaded = summary.get("speed", "per_sample_ms") != "per_sample_ms"
    fresh = [e for e in summary["pareto"] if _shown_ms(e)["source"] == "fresh processes"]
    metric = summary.get("metric", "top-1 accuracy")
    guarded = any("flip_rate" in e["metrics"] for e in summary["pareto"])  # a study made before guardrails: none
    robust = any("corruption_drop" in e["metrics"] for e in summary["pareto"])  # measured where asked (--corruptions)
    rows = [
        ("trial", "placement", "precision", "compression", "bs", "fold", "graph", "thr", metric, "drop")
        + (("worst class", "flips") if guarded else ())
        + (("corruption drop",) if robust else ())
        + ("ms/sample (range)" if fresh else "ms/sample (within-process CI)", "speedup")
        + (("streams", "req", "samples/s", "p95 ms", "open samples/s", "open p95 ms") if loaded else ())
    ]
    ref = summary["reference_accuracy"] or 0.0
    for e in summary["pareto"]:
        c, m = e["params"], e["metrics"]
        ms = _shown_ms(e)
        rows.append(
            (
                f"#{e['number']}",
                c["placement"],
                precision_cell(c, m),
                compression(Candidate.fill(c)),
                str(c["batch_size"]),
                "y" if c["fold_bn"] else "n",
                c["graph_opt"] if c["placement"].startswith("ort") else "-",
                str(m["threads"]),
                f"{m['accuracy']:.2%}",
                f"{100 * (ref - m['accuracy']):+.2f}",
            )
            + ((_num(m.get("worst_class_drop"), "+.2f"), _num(m.get("flip_rate"), ".1%")) if guarded else ())
            + ((_num(m.get("corruption_drop"), "+.2f"),) if robust else ())
            + (
                f"{ms['per_sample']:.3f} ({ms['low']:.3f}-{ms['high']:.3f})"
                + ("" if ms["source"] == "fresh processes" or not fresh else " *"),
                f"{e['speedup']:.1f}x" if e["speedup"] else "-",
            )
            + (
                (
                    str(m.get("streams", 1)),
                    str(m.get("requests", 1)),
                    _num(m.get("load_throughput"), ".0f"),
                    _num(m.get("load_p95_ms"), ".3f"),
                    _num(m.get("open_throughput"), ".0f"),
                    _num(m.get("open_p95_ms"), ".3f"),
                )
                if loaded
                else ()
            )
        )
    head = f"Pareto front ({len(summary['pareto'])} trials; {metric}, drop in points vs the reference's {ref:.2%}"
    head += (
        "; worst class: the largest drop of one class's share predicted right, in points; flips: images "
        "predicted otherwise than by the reference"
        if guarded
        else ""
    )
    head += (
        "; corruption drop: the drop of the share predicted right of the corrupted validation images (noise, "
        "blur, JPEG, contrast, resize), in points"
        if robust
        else ""
    ) + "):"
    best = summary["best_feasible"]
    if best and loaded:
        m, speed = best["metrics"], summary["speed"]
        tail = (
            f"most throughput, feasible: trial #{best['number']}, {m[speed]:.0f} samples/s ({speed}) at p95 "
            f"{m[results.SPEED_UNDER_LOAD[speed]]:.3f} ms"
            + (f", {best['speedup']:.1f}x the baseline's" if best["speedup"] else "")
        )
    else:
        tail = (
            f"fastest feasible: trial #{best['number']}, {_shown_ms(best)['per_sample']:.3f} ms/sample"
            + (f", {best['speedup']:.1f}x the baseline{_baseline_words(summary)}" if best["speedup"] else "")
            if best
            else ""
        )
    if best and tail and best["by_remeasure"]:
        tail += " (chosen by the re-measured figures)"
    if best and tail and "flip_rate" in best["metrics"]:
        tail += "; " + guard_words(best["metrics"])
    if best and tail and "corruption_drop" in best["metrics"]:
        tail += f"; corruption drop {best['metrics']['corruption_drop']:+.2f} points"
    no_base = [] if summary.get("baseline") else [NO_BASELINE]
    return "\n".join([head, *aligned(rows), tail or "no feasible trial yet", _latency_note(summary), *no_base])


def guard_words(m: dict[str, Any]) -> str:
    """A point's guardrail figures in words (``tuner.guardrails``): what its top-1 does not say."""
    return (
        f"worst class {m['worst_class_drop']:+.2f} points, {m['flip_rate']:.1%} of the images predicted "
        f"otherwise than by the reference ({m['flip_rate_correct']:.1%} of those it had right), ECE "
        f"{m['ece']:.3f} ({m['ece_increase']:+.3f})"
    )


def _baseline_words(summary: dict[str, Any]) -> str:
    """`` (#0 torch-cpu fp32 bs 1, 2 threads: 20.268 ms/sample)``: what every speedup is against, its threads said."""
    base = summary.get("baseline_entry")
    if not base:
        return ""
    c, m = base["params"], base["metrics"]
    return (
        f" (#{base['number']} {c.get('placement')} {c.get('precision')} bs {c.get('batch_size')}, "
        f"{m.get('threads')} thread{'s' * (m.get('threads') != 1)}: {_shown_ms(base)['per_sample']:.3f} ms/sample)"
    )


def _shown_ms(entry: dict[str, Any]) -> dict[str, Any]:
    """An entry's latency as the table shows it (``summarize``'s ``ms``; a summary made before it: the study's)."""
    if "ms" in entry:
        return entry["ms"]
    ms, lo, hi, _ = results.trusted_ms(entry["metrics"], None)
    return {"per_sample": ms, "low": lo, "high": hi, "source": "one process"}


def _latency_note(summary: dict[str, Any]) -> str:
    """What the latency column's interval is: the spread between fresh processes where the front was re-timed;
    else one process's own 95% CI, said to be that (fresh processes fall outside it most of the time)."""
    sources = {_shown_ms(e)["source"] for e in summary["pareto"]}
    if "fresh processes" in sources:
        return (
            "ms/sample: the median of the fresh processes that re-timed the front and the baseline at the end of "
            "the study (range: their lowest and highest round); speedups by those figures"
            + ("; * not re-timed: one process's median and its within-process 95% CI" if len(sources) > 1 else "")
        )
    return (
        "ms/sample: one process's median and its within-process 95% CI, which other processes often fall "
        "outside; --remeasure-rounds re-times the front in fresh processes"
    )


NO_BASELINE = "no speedups: the study has no completed baseline trial (it failed, or has not run yet)"


def _num(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def format_load(record: dict[str, Any], batch_size: int) -> str:
    """The two loops of a load measurement (``Metrics.load``) in two lines."""
    lines = []
    for key, what in (("closed", "closed loop"), ("open", "open loop ")):
        s = record[key]
        load = f"{s['in_flight']} in flight" if key == "closed" else f"{s['rate']:.0f} requests/s (Poisson)"
        lo, hi = s["ci"]["p95"]
        lines.append(
            f"{what}    {load}: {s['throughput']:.0f} samples/s, per request of {batch_size}: p50 "
            f"{s['p50_ms']:.3f}, p95 {s['p95_ms']:.3f} (95% CI {lo:.3f}-{hi:.3f}), p99 {s['p99_ms']:.3f} ms; "
            f"{s['answered']} requests in {s['seconds']:.1f} s"
            + (
                ""
                if s["quiet"]
                else f"; host busy in {s['contended_share']:.0%} of the windows (up to "
                f"{s.get('others_runnable', 0)} other runnable threads)"
            )
            + ("; OVERLOADED: the backlog grew, later arrivals were not let in" if s.get("overloaded") else "")
        )
    return "\n".join(lines)


class ProgressBar:
    """Trials done, Pareto size, best feasible speedup and the last trial: a tqdm bar on a terminal; elsewhere (a
    pipe, a file, CI) one plain line per trial, never a bar's frames. ``say`` prints any other line (a trial's
    progress) without breaking the bar."""

    def __init__(self, total: int | None, log: Callable[[str], None]):
        self.total, self.log = total, log
        self.tty = sys.stderr.isatty()
        self.bar: Any = None  # drawn at the first finished trial, so setup errors stay one line

    def say(self, line: str) -> None:
        if self.bar is not None:
            self.bar.write(line, file=sys.stderr)
        else:
            self.log(line)

    def update(self, p: Progress) -> None:
        status = (
            f"pareto {p.pareto}"
            + (f", best {p.best_speedup:.1f}x" if p.best_speedup else "")
            + (f", {p.repeats} repeats not counted" if p.repeats else "")
            + (f", {duration(max(0.0, p.budget_left))} of the budget left" if p.budget_left is not None else "")
        )
        if not self.tty:
            count = f"{p.done}" if self.total is None else f"{min(p.done, self.total)}/{self.total}"
            self.log(f"[{count} trials; {status}] {p.last}")
            return
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(
                total=self.total,
                unit="trial",
                file=sys.stderr,
                dynamic_ncols=True,
                bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} trials [{elapsed}{postfix}]",
            )
        self.bar.n = p.done if self.total is None else min(p.done, self.total)
        self.bar.set_postfix_str(status)
        self.bar.write(p.last, file=sys.stderr)

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.close()
