"""The study report: one self-contained HTML page (and a CSV) of what a study found.

As in ``optuna.visualization``, the figures are drawn from a data object computed first:
``_report_info(study) -> ReportInfo`` holds the trial table, the accuracy-vs-latency Pareto
front, the hypervolume history, parameter importances and findings in words; ``render_html``
and ``write_csv`` only draw it. Tests check the info, not the pixels.
"""

from __future__ import annotations

import html
import json
import math
import statistics
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import optuna
from optuna.trial import TrialState

from tuner.errors import ConfigError
from tuner.remeasure import remeasured_trials
from tuner.study import baseline_trial, check_study_name, is_feasible, mask_url

# Two medians count as different only when their 95% CIs do not overlap AND they differ by this much.
MIN_EFFECT = 0.05
PARAMS = ("placement", "precision", "prune_ratio", "batch_size", "fold_bn", "graph_opt", "threads")


# ---------------------------------------------------------------- loading an existing study


def study_storage(name: str, storage: str | None, studies_dir: str) -> str:
    """The storage URL of an existing study (``run``'s default: SQLite under --studies-dir)."""
    check_study_name(name)
    if storage:
        return storage
    path = Path(studies_dir) / f"{name}.db"
    if not path.is_file():  # optuna would silently create an empty database here
        raise ConfigError(f"no study {name!r}: {path} does not exist; pass the --study name that `tuner run` "
                          "printed, and its --studies-dir or --storage.")
    return f"sqlite:///{path}"


def load_existing_study(name: str, storage: str | None, studies_dir: str) -> optuna.Study:
    url = study_storage(name, storage, studies_dir)
    try:
        return optuna.load_study(study_name=name, storage=url)
    except KeyError:
        try:
            known = [s.study_name for s in optuna.get_all_study_summaries(storage=url)]
        except Exception:
            known = []
        raise ConfigError(f"no study {name!r} in {mask_url(url)}"
                          + (f"; it holds {', '.join(known)}." if known else ".")) from None
    except Exception as err:
        raise ConfigError(f"cannot open storage {mask_url(url)} ({type(err).__name__}); "
                          "check the --storage URL.") from None


# ---------------------------------------------------------------- the data


@dataclass(frozen=True)
class TrialRow:
    number: int
    state: str  # complete | pruned | fail | running | waiting
    params: dict[str, Any]  # the candidate
    metrics: dict[str, Any]  # tuner.measure.Metrics + accuracy_drop ({} unless complete)
    feasible: bool
    pareto: bool  # on the feasible front of accuracy (max) vs per-sample latency (min)
    baseline: bool
    speedup: float | None  # baseline per-sample latency / this one
    duplicate_of: int | None  # the earlier trial whose figures it reused
    note: str  # why it failed or was refused
    remeasure: dict[str, Any] | None = None  # the end-of-study re-measure (tuner.remeasure.RemeasureEntry.to_dict())

    @property
    def complete(self) -> bool:
        return self.state == "complete" and "per_sample_ms" in self.metrics

    @property
    def accuracy(self) -> float:
        return float(self.metrics["accuracy"])

    @property
    def ms(self) -> float:
        return float(self.metrics["per_sample_ms"])

    @property
    def ms_ci(self) -> tuple[float, float]:
        """95% CI of the per-sample median."""
        lo, hi = self.metrics.get("latency_ci_ms") or (self.metrics["latency_ms"],) * 2
        bs = self.params.get("batch_size") or self.metrics.get("batch_size") or 1
        return lo / bs, hi / bs

    @property
    def remeasured_ms(self) -> float | None:
        """The re-measured per-sample median (fresh processes, interleaved rounds), where there is one."""
        value = (self.remeasure or {}).get("per_sample_ms")
        return float(value) if isinstance(value, (int, float)) else None

    @property
    def remeasured_diff(self) -> float:
        """(re-measured - study) / study; 0 where not re-measured."""
        return float((self.remeasure or {}).get("rel_diff") or 0.0)

    def label(self) -> str:
        c = self.params
        return (f"#{self.number} {c.get('placement')} {c.get('precision')}, prune {c.get('prune_ratio', 0):.2f}, "
                f"batch {c.get('batch_size')}")


@dataclass(frozen=True)
class ReportInfo:
    study: str
    objectives: dict[str, str]  # metric -> maximize | minimize
    reference_accuracy: float | None
    validation_images: int | None
    hardware: dict[str, Any]
    workload: dict[str, Any]
    trials: list[TrialRow]
    pareto: list[int]  # feasible Pareto trials, by latency
    baseline: int | None
    hypervolume: list[tuple[int, float]]  # (trial number, hypervolume of the feasible front so far)
    hypervolume_reference: tuple[float, float] | None  # (accuracy, ms/sample)
    importances: dict[str, dict[str, float]]  # objective -> param -> importance
    importance_notes: list[str]
    findings: list[str]
    states: dict[str, int] = field(default_factory=dict)

    @property
    def completed(self) -> list[TrialRow]:
        return [r for r in self.trials if r.complete]

    def row(self, number: int) -> TrialRow:
        return next(r for r in self.trials if r.number == number)


def _report_info(study: optuna.Study) -> ReportInfo:
    trials = study.get_trials(deepcopy=False)
    remeasured = remeasured_trials(study)
    base = baseline_trial(study)
    base_ms = base.user_attrs["metrics"]["per_sample_ms"] if base is not None and "metrics" in base.user_attrs else None
    raw = []
    for t in trials:
        metrics = dict(t.user_attrs.get("metrics", {})) if t.state == TrialState.COMPLETE else {}
        reason = t.user_attrs.get("error") or t.system_attrs.get("fail_reason") or ""
        raw.append(dict(number=t.number, state=t.state.name.lower(), params=dict(t.user_attrs.get("candidate", {})),
                        metrics=metrics, feasible=is_feasible(t) and bool(metrics),
                        baseline=bool(t.user_attrs.get("baseline")),
                        speedup=(base_ms / metrics["per_sample_ms"]
                                 if base_ms and metrics.get("per_sample_ms") else None),
                        duplicate_of=t.user_attrs.get("duplicate_of"), remeasure=remeasured.get(t.number),
                        note=str(reason).splitlines()[0][:200] if reason else ""))
    front = _pareto([(r["number"], r["metrics"]["accuracy"], r["metrics"]["per_sample_ms"])
                     for r in raw if r["feasible"] and "per_sample_ms" in r["metrics"]])
    rows = [TrialRow(pareto=r["number"] in front, **r) for r in raw]
    reference = study.user_attrs.get("reference") or {}
    hv, hv_ref = _hypervolume_history(rows)
    importances, notes = _importances(study, rows)
    info = ReportInfo(
        study=study.study_name,
        objectives=dict(zip(study.metric_names or [f"objective {i}" for i in range(len(study.directions))],
                            (d.name.lower() for d in study.directions))),
        reference_accuracy=reference.get("accuracy"), validation_images=reference.get("validation_images"),
        hardware=study.user_attrs.get("fingerprint", {}), workload=study.user_attrs.get("workload", {}),
        trials=rows, pareto=sorted(front, key=lambda n: next(r.ms for r in rows if r.number == n)),
        baseline=base.number if base is not None else None, hypervolume=hv, hypervolume_reference=hv_ref,
        importances=importances, importance_notes=notes, findings=[],
        states=dict(Counter(r.state for r in rows)),
    )
    return ReportInfo(**{**info.__dict__, "findings": findings(info)})


def _pareto(points: list[tuple[int, float, float]]) -> set[int]:
    """Numbers of the (number, accuracy, ms) points no other point beats on both."""
    return {n for n, a, m in points
            if not any(a2 >= a and m2 <= m and (a2 > a or m2 < m) for _, a2, m2 in points)}


def hypervolume(points: Iterable[tuple[float, float]], ref: tuple[float, float]) -> float:
    """Area dominated by (accuracy, ms) points, maximizing accuracy and minimizing ms, up to ``ref``."""
    pts = [(a, m) for a, m in points if a > ref[0] and m < ref[1]]
    front = sorted({(a, m) for a, m in pts
                    if not any(a2 >= a and m2 <= m and (a2, m2) != (a, m) for a2, m2 in pts)}, key=lambda p: p[1])
    area, below = 0.0, ref[0]
    for a, m in front:  # along the front, latency and accuracy both rise
        area += (ref[1] - m) * (a - below)
        below = a
    return area


def _hypervolume_history(rows: list[TrialRow]) -> tuple[list[tuple[int, float]], tuple[float, float] | None]:
    done = [r for r in rows if r.complete]
    if not done:
        return [], None
    # Reference point: a little worse than the worst completed trial on both axes.
    ref = (max(0.0, min(r.accuracy for r in done) - 0.01), max(r.ms for r in done) * 1.1)
    history, seen = [], []
    for r in sorted(done, key=lambda r: r.number):
        if r.feasible:
            seen.append((r.accuracy, r.ms))
        history.append((r.number, hypervolume(seen, ref)))
    return history, ref


def _importances(study: optuna.Study, rows: list[TrialRow]) -> tuple[dict[str, dict[str, float]], list[str]]:
    """fANOVA importance of each candidate field for each objective.

    Computed over the candidates (every field of every trial, the baseline included) rather than
    the study's own params, which are conditional (precision@placement) and absent for the baseline.
    """
    done = [r for r in rows if r.complete and r.duplicate_of is None]
    names = list(study.metric_names or [])
    if not names:
        return {}, ["no importances: the study has no named objectives"]
    varied = [p for p in PARAMS if len({json.dumps(r.params.get(p)) for r in done}) > 1]
    if len(done) < 4 or not varied:
        return {}, [f"no parameter importances: {len(done)} distinct completed trials "
                    f"{'vary no parameter' if done and not varied else 'are too few (4 needed)'}"]
    distributions = {p: optuna.distributions.CategoricalDistribution(
        sorted({r.params[p] for r in done}, key=lambda v: (str(type(v)), v))) for p in varied}
    out: dict[str, dict[str, float]] = {}
    notes: list[str] = []
    for name, direction in zip(names, study.directions):
        values = [r.metrics.get(name) for r in done]
        if any(v is None or not math.isfinite(float(v)) for v in values):
            notes.append(f"no importances for {name}: some trials did not record it")
            continue
        shadow = optuna.create_study(direction=direction)
        shadow.add_trials([optuna.trial.create_trial(params={p: r.params[p] for p in varied},
                                                     distributions=distributions, value=float(v))
                           for r, v in zip(done, values)])
        try:
            found = optuna.importance.get_param_importances(
                shadow, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0), target=lambda t: t.value)
            out[name] = {k: float(v) for k, v in found.items()}
        except Exception as err:  # fANOVA needs variation in the target; a handful of trials may not have it
            notes.append(f"no importances for {name}: {type(err).__name__}: {str(err).splitlines()[0][:120]}")
    return out, notes


# ---------------------------------------------------------------- findings in words


def _faster(a: TrialRow, b: TrialRow) -> bool:
    """a is measurably faster per sample than b: CIs apart and at least MIN_EFFECT."""
    return a.ms_ci[1] < b.ms_ci[0] and a.ms < b.ms * (1 - MIN_EFFECT)


def _x(a: TrialRow, b: TrialRow) -> str:
    return f"{max(a.ms, b.ms) / min(a.ms, b.ms):.1f}x"


def _fastest(rows: Iterable[TrialRow]) -> TrialRow:
    return min(rows, key=lambda r: (r.ms, r.number))


def _groups(rows: list[TrialRow], key: Callable[[TrialRow], Any]) -> dict[Any, list[TrialRow]]:
    out: dict[Any, list[TrialRow]] = defaultdict(list)
    for r in rows:
        out[key(r)].append(r)
    return out


def _pts(delta: float) -> str:
    return f"{100 * delta:.1f} points"


def findings(info: ReportInfo) -> list[str]:
    """A small set of generic rules over the trial table; each states only what the data shows.

    Comparisons use the fastest trial of each side within a matched group (the other search
    knobs, fold_bn / graph_opt / threads, are taken at their best) and call a difference real only
    when the 95% CIs of the two medians do not overlap.
    """
    rows = [r for r in info.completed if r.duplicate_of is None]
    out: list[str] = []
    if not rows:
        return ["no trial completed yet: nothing to compare."]
    out += _best_vs_baseline(info, rows)
    out += _placements_at_equal_accuracy(info, rows)
    out += _precision_rule(rows)
    out += _pruning_rule(rows)
    out += _batch_rule(rows)
    out += _executed_precision_rule(rows)
    out += _remeasure_rule(info, rows)
    out += _bookkeeping(info)
    return out


def _best_vs_baseline(info: ReportInfo, rows: list[TrialRow]) -> list[str]:
    feasible = [r for r in rows if r.feasible]
    if not feasible:
        return ["no completed trial met the constraints."]
    best = _fastest(feasible)
    if info.baseline is None or best.number == info.baseline:
        return [f"the fastest feasible trial is {best.label()} at {best.ms:.3f} ms/sample"
                + (" — the baseline itself: nothing searched beat it." if best.number == info.baseline else ".")]
    base = info.row(info.baseline)
    drop = base.accuracy - best.accuracy
    speed = (f"{base.ms / best.ms:.1f}x faster than" if _faster(best, base)
             else "no measurably faster than")
    return [f"the fastest feasible trial, {best.label()}, runs at {best.ms:.3f} ms/sample: {speed} the baseline "
            f"(#{base.number}, {base.ms:.3f} ms/sample), "
            + (f"{_pts(drop)} below its accuracy." if drop > 1e-9 else
               f"{_pts(-drop)} above its accuracy." if drop < -1e-9 else "at the same accuracy.")]


def _placements_at_equal_accuracy(info: ReportInfo, rows: list[TrialRow]) -> list[str]:
    by = _groups(rows, lambda r: r.params["placement"])
    if len(by) < 2:
        return []
    tol = max(1.0 / info.validation_images if info.validation_images else 0.0, 0.005)
    level = min(max(r.accuracy for r in g) for g in by.values()) - tol  # the accuracy every placement reaches
    best = sorted((_fastest(r for r in g if r.accuracy >= level) for g in by.values()), key=lambda r: r.ms)
    out = []
    winner = best[0]
    for other in best[1:]:
        a, b = winner.params["placement"], other.params["placement"]
        figures = (f"fastest trials at >= {level:.1%}: #{winner.number} {winner.ms:.3f} ms/sample at "
                   f"{winner.accuracy:.1%} vs #{other.number} {other.ms:.3f} ms/sample at {other.accuracy:.1%}")
        if _faster(winner, other):
            out.append(f"{a} beat {b} by {_x(winner, other)} at the accuracy both reach ({figures}).")
        else:
            out.append(f"{a} and {b} were level at the accuracy both reach ({figures}, CIs overlap).")
    return out


def _precision_rule(rows: list[TrialRow]) -> list[str]:
    out = []
    groups = _groups(rows, lambda r: (r.params["placement"], r.params["batch_size"], r.params["prune_ratio"]))
    for (placement, bs, ratio), g in sorted(groups.items(), key=lambda kv: str(kv[0])):
        by = _groups(g, lambda r: r.params["precision"])
        if "fp32" not in by or len(by) < 2:
            continue
        ref = _fastest(by["fp32"])
        where = f"at batch {bs}" + (f", prune {ratio:.2f}" if ratio else "")
        for precision in sorted(set(by) - {"fp32"}):
            r = _fastest(by[precision])
            figures = f"#{r.number} {r.ms:.3f} vs #{ref.number} {ref.ms:.3f} ms/sample"
            drop = ref.accuracy - r.accuracy
            if _faster(ref, r):
                out.append(f"{precision} on {placement} was slower than fp32 {where} ({_x(r, ref)}: {figures}).")
            elif _faster(r, ref):
                out.append(f"{precision} on {placement} was {_x(r, ref)} faster than fp32 {where} ({figures}), "
                           + (f"for {_pts(drop)} of accuracy." if drop > 1e-9 else "at no accuracy cost."))
            else:
                out.append(f"{precision} on {placement} bought no latency over fp32 {where} ({figures}, CIs overlap).")
    return out


def _pruning_rule(rows: list[TrialRow]) -> list[str]:
    """Per prune ratio: the latency and accuracy it changed against unpruned, in matched groups."""
    groups = _groups(rows, lambda r: (r.params["placement"], r.params["precision"], r.params["batch_size"]))
    effect: dict[float, list[tuple[float, float, bool]]] = defaultdict(list)  # ratio -> (speedup, drop, measurable)
    for g in groups.values():
        by = _groups(g, lambda r: r.params["prune_ratio"])
        if 0.0 not in by:
            continue
        ref = _fastest(by[0.0])
        for ratio, pruned in by.items():
            if ratio > 0:
                r = _fastest(pruned)
                effect[ratio].append((ref.ms / r.ms, max(x.accuracy for x in by[0.0]) - max(x.accuracy for x in pruned),
                                      _faster(r, ref)))
    if not effect:
        return []
    ratios = sorted(effect)
    useless = [q for q in ratios if not any(m for _, _, m in effect[q])]
    out = []
    if useless and useless == ratios[:len(useless)] and len(useless) < len(ratios):
        out.append(f"pruning below {ratios[len(useless)]:.2f} bought no latency (ratios "
                   f"{', '.join(f'{q:.2f}' for q in useless)} measured against unpruned in the same placement, "
                   "precision and batch).")
        ratios = ratios[len(useless):]
    for q in ratios:
        speed = statistics.median(s for s, _, _ in effect[q])
        drop = statistics.median(d for _, d, _ in effect[q])
        n = len(effect[q])
        cost = f"cost {_pts(drop)} of accuracy" if drop > 1e-9 else "cost no accuracy"
        matched = f"median of {n} matched placement/precision/batch group{'s' if n > 1 else ''}"
        if any(m for _, _, m in effect[q]):
            out.append(f"pruning {q:.2f} cut per-sample latency {speed:.1f}x and {cost} ({matched}).")
        else:
            out.append(f"pruning {q:.2f} bought no latency ({speed:.2f}x, CIs overlap; {matched}) and {cost}.")
    return out


def _batch_rule(rows: list[TrialRow]) -> list[str]:
    out = []
    groups = _groups(rows, lambda r: (r.params["placement"], r.params["precision"], r.params["prune_ratio"]))
    for (placement, precision, ratio), g in sorted(groups.items()):
        by = _groups(g, lambda r: r.params["batch_size"])
        where = f"{placement} {precision}" + (f", prune {ratio:.2f}" if ratio else "")
        if len(by) < 2:
            continue
        small = min(by)
        ref = _fastest(by[small])
        for bs in sorted(by)[1:]:
            r = _fastest(by[bs])
            figures = f"#{r.number} {r.ms:.3f} vs #{ref.number} {ref.ms:.3f} ms/sample"
            if _faster(r, ref):
                out.append(f"batch {bs} cut per-sample latency {_x(r, ref)} vs batch {small} on {where} "
                           f"({figures}).")
            elif _faster(ref, r):
                out.append(f"batch {bs} was {_x(r, ref)} slower per sample than batch {small} on {where} "
                           f"({figures}).")
            else:
                out.append(f"batch {bs} bought no per-sample latency over batch {small} on {where} "
                           f"({figures}, CIs overlap).")
    return out


def _executed_precision_rule(rows: list[TrialRow]) -> list[str]:
    odd = _groups([r for r in rows if r.metrics.get("executed_precision") not in (None, r.params.get("precision"))],
                  lambda r: (r.params["placement"], r.params["precision"], r.metrics["executed_precision"]))
    return [f"{p} on {pl} executed as {ex} in {len(g)} trial{'s' if len(g) > 1 else ''} "
            f"({', '.join(f'#{r.number}' for r in g)}): the runtime did not run the requested precision."
            for (pl, p, ex), g in sorted(odd.items())]


def _remeasure_rule(info: ReportInfo, rows: list[TrialRow]) -> list[str]:
    """How the Pareto points' figures held up when timed again in fresh processes (tuner.remeasure)."""
    points = [r for r in rows if r.pareto and r.remeasured_ms is not None]
    if not points:
        return []
    entries = [r.remeasure or {} for r in points]
    rounds = max(int(e.get("rounds") or 0) for e in entries)
    agree = sum(bool(e.get("within_5pct")) for e in entries)
    outside = sum(bool(e.get("outside_ci")) for e in entries)
    diffs = ", ".join(f"#{r.number} {100 * r.remeasured_diff:+.1f}%" for r in points)
    out = [f"re-timed in fresh processes ({rounds} interleaved rounds): {agree} of {len(points)} Pareto "
           f"points within 5% of the study's figure ({diffs}); {outside} outside the study's 95% CI, which "
           "covers one process's timing, not the spread between processes."]
    feasible = [r for r in points if r.feasible]
    if feasible:
        by_study, by_again = _fastest(feasible), min(feasible, key=lambda r: (r.remeasured_ms, r.number))
        if by_again.number != by_study.number:
            out.append(f"by the re-measured figures the fastest feasible point is #{by_again.number} "
                       f"({by_again.remeasured_ms:.4f} ms/sample), not #{by_study.number} ({by_study.remeasured_ms:.4f} "
                       f"re-measured, {by_study.ms:.4f} in the study); `export --max-drop` goes by the re-measured "
                       "figures.")
    return out


def _bookkeeping(info: ReportInfo) -> list[str]:
    out = []
    done = info.completed
    infeasible = [r for r in done if not r.feasible]
    if infeasible:
        out.append(f"{len(infeasible)} of {len(done)} completed trials broke a constraint "
                   f"({', '.join(f'#{r.number}' for r in infeasible)}).")
    dup = [r for r in info.trials if r.duplicate_of is not None]
    if dup:
        out.append(f"{len(dup)} trial{'s' if len(dup) > 1 else ''} repeated an earlier configuration and reused its "
                   "outcome (not counted in --n-trials; a random proposal followed each): the sampler is running "
                   "out of new points in this space.")
    reasons = Counter(r.note for r in info.trials if r.state in ("pruned", "fail"))
    for note, n in reasons.most_common(3):
        out.append(f"{n} trial{'s were' if n > 1 else ' was'} refused or failed: {note or 'no reason recorded'}")
    return out


# ---------------------------------------------------------------- drawing

_PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf")
_SYMBOLS = {"fp32": "circle", "fp16": "diamond", "bf16": "square", "int8": "triangle-up"}


def _hover(r: TrialRow, reference: float | None) -> str:
    m, c = r.metrics, r.params
    lo, hi = m.get("latency_ci_ms", [m["latency_ms"]] * 2)
    slo, shi = r.ms_ci
    lines = [f"<b>trial #{r.number}</b>" + (" (baseline)" if r.baseline else "") + (" Pareto" if r.pareto else "")
             + ("" if r.feasible else " infeasible")]
    lines += [f"{k}: {c[k]}" for k in PARAMS if k in c]
    lines += [f"accuracy: {m['accuracy']:.2%}" + (f" (drop {100 * m.get('accuracy_drop', 0):+.2f} pts)"
                                                  if reference is not None else ""),
              f"per sample: {m['per_sample_ms']:.4f} ms (95% CI {slo:.4f}-{shi:.4f})",
              f"per batch: {m['latency_ms']:.4f} ms (95% CI {lo:.4f}-{hi:.4f}), p95 {m['latency_p95_ms']:.4f}",
              f"throughput: {m['throughput']:.0f}/s, n={m['samples']}",
              f"size {m['size_mb']:.3f} MB, {m['params']:,} params, {m['macs']:,} MACs",
              f"executed {m['executed_precision']}, {m['threads']} threads"]
    if r.speedup:
        lines.append(f"speedup vs baseline: {r.speedup:.2f}x")
    if r.remeasured_ms is not None:
        e, bs = r.remeasure or {}, m.get("batch_size") or c.get("batch_size") or 1
        spread = (f" ({e['min_ms'] / bs:.4f}-{e['max_ms'] / bs:.4f} over {e.get('rounds_used')} rounds)"
                  if e.get("min_ms") is not None and e.get("max_ms") is not None else "")
        lines.append(f"re-measured: {r.remeasured_ms:.4f} ms/sample{spread}, {100 * r.remeasured_diff:+.1f}% vs the "
                     "study" + (", outside its CI" if e.get("outside_ci") else ""))
    if r.duplicate_of is not None:
        lines.append(f"same configuration as #{r.duplicate_of}")
    return "<br>".join(lines)


def pareto_figure(info: ReportInfo) -> Any:
    import plotly.graph_objects as go

    done = info.completed
    colors = {p: _PALETTE[i % len(_PALETTE)] for i, p in enumerate(sorted({r.params["placement"] for r in done}))}
    fig = go.Figure()
    for (placement, precision), g in sorted(_groups(done, lambda r: (r.params["placement"],
                                                                     r.params["precision"])).items()):
        fig.add_trace(go.Scatter(
            x=[r.ms for r in g], y=[r.accuracy for r in g], mode="markers", name=f"{placement} {precision}",
            text=[_hover(r, info.reference_accuracy) for r in g], hovertemplate="%{text}<extra></extra>",
            error_x=dict(type="data", symmetric=False, array=[r.ms_ci[1] - r.ms for r in g],
                         arrayminus=[r.ms - r.ms_ci[0] for r in g], thickness=1, width=0, color=colors[placement]),
            marker=dict(color=colors[placement], symbol=[_SYMBOLS.get(precision, "circle") + ("" if r.feasible
                                                                                             else "-open") for r in g],
                        size=10, line=dict(width=1, color=colors[placement]), opacity=0.85)))
    front = [info.row(n) for n in info.pareto]
    if front:
        fig.add_trace(go.Scatter(
            x=[r.ms for r in front], y=[r.accuracy for r in front], mode="lines+markers", name="feasible Pareto front",
            line=dict(color="black", width=1.5, shape="hv", dash="dot"), hoverinfo="skip",
            marker=dict(size=18, color="rgba(0,0,0,0)", line=dict(width=2, color="black"))))
    if info.baseline is not None:
        b = info.row(info.baseline)
        fig.add_trace(go.Scatter(x=[b.ms], y=[b.accuracy], mode="markers+text", name="baseline",
                                 text=["baseline"], textposition="top center",
                                 hovertext=[_hover(b, info.reference_accuracy)],
                                 hovertemplate="%{hovertext}<extra></extra>",
                                 marker=dict(symbol="star", size=20, color="gold", line=dict(width=1, color="black"))))
    fig.update_layout(title="Accuracy vs per-sample latency (filled: feasible; open: breaks a constraint; "
                            "ringed: feasible Pareto front)",
                      xaxis=dict(title="latency per sample, ms (log; bars: 95% CI of the median)", type="log",
                                 **_log_ticks([r.ms_ci[0] for r in done] + [r.ms_ci[1] for r in done])),
                      yaxis=dict(title="top-1 accuracy", tickformat=".1%"), legend=dict(title="placement precision"),
                      template="plotly_white", height=560, margin=dict(t=60, l=70, r=20, b=60))
    return fig


def _log_ticks(values: list[float]) -> dict[str, Any]:
    """1-2-5 ticks labelled in plain ms (plotly's own log ticks label only the decades)."""
    values = [v for v in values if v > 0]
    if not values:
        return {}
    lo, hi = min(values), max(values)
    ticks = [m * 10.0 ** k for k in range(math.floor(math.log10(lo)) - 1, math.ceil(math.log10(hi)) + 1)
             for m in (1, 2, 5)]
    inside = [t for t in ticks if lo / 1.5 <= t <= hi * 1.5]
    return {"tickvals": inside, "ticktext": [f"{t:g}" for t in inside]} if len(inside) >= 2 else {}


def hypervolume_figure(info: ReportInfo) -> Any:
    import plotly.graph_objects as go

    fig = go.Figure(go.Scatter(x=[n for n, _ in info.hypervolume], y=[v for _, v in info.hypervolume],
                               mode="lines+markers", name="hypervolume", line=dict(shape="hv")))
    ref = info.hypervolume_reference
    fig.update_layout(title="Hypervolume of the feasible front, accuracy × ms/sample"
                            + (f" (reference point {ref[0]:.1%}, {ref[1]:.3f} ms)" if ref else ""),
                      xaxis_title="trial", yaxis_title="hypervolume", template="plotly_white", height=360,
                      margin=dict(t=60, l=70, r=20, b=50))
    return fig


def importance_figure(info: ReportInfo) -> Any | None:
    if not info.importances:
        return None
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    names = list(info.importances)
    fig = make_subplots(rows=1, cols=len(names), subplot_titles=[f"{n} ({info.objectives.get(n, '')})" for n in names])
    for i, name in enumerate(names, start=1):
        imp = sorted(info.importances[name].items(), key=lambda kv: kv[1])
        fig.add_trace(go.Bar(x=[v for _, v in imp], y=[k for k, _ in imp], orientation="h", name=name,
                             hovertemplate="%{y}: %{x:.3f}<extra></extra>", showlegend=False), row=1, col=i)
    fig.update_layout(title="Parameter importance per objective (fANOVA over completed trials)",
                      template="plotly_white", height=360, margin=dict(t=80, l=100, r=20, b=40))
    return fig


_COLUMNS = ("trial", "state", "flags", "placement", "precision", "prune", "batch", "fold_bn", "graph_opt", "threads",
            "accuracy", "drop (pts)", "ms/sample", "95% CI", "re-measured ms/sample", "re-measure diff %", "speedup",
            "p95 ms/batch", "samples/s", "MB", "executed", "note")


def table_rows(info: ReportInfo) -> list[dict[str, Any]]:
    """The trial table as plain records (the CSV, and the HTML table's cells)."""
    out = []
    for r in info.trials:
        c, m = r.params, r.metrics
        lo, hi = r.ms_ci if r.complete else (None, None)
        flags = [f for f, on in (("baseline", r.baseline), ("pareto", r.pareto),
                                 ("infeasible", r.complete and not r.feasible)) if on]
        if r.duplicate_of is not None:
            flags.append(f"dup of #{r.duplicate_of}")
        if r.remeasured_ms is not None and not (r.remeasure or {}).get("within_5pct"):
            flags.append("re-measure >5% off")
        out.append({
            "trial": r.number, "state": r.state, "flags": " ".join(flags), "placement": c.get("placement"),
            "precision": c.get("precision"), "prune": c.get("prune_ratio"), "batch": c.get("batch_size"),
            "fold_bn": c.get("fold_bn"), "graph_opt": c.get("graph_opt"), "threads": m.get("threads", c.get("threads")),
            "accuracy": m.get("accuracy"),
            "drop (pts)": 100 * m["accuracy_drop"] if "accuracy_drop" in m else None,
            "ms/sample": m.get("per_sample_ms"), "ci_low": lo, "ci_high": hi,
            "re-measured ms/sample": r.remeasured_ms,
            "re-measure diff %": 100 * r.remeasured_diff if r.remeasured_ms is not None else None,
            "speedup": r.speedup,
            "p95 ms/batch": m.get("latency_p95_ms"), "samples/s": m.get("throughput"), "MB": m.get("size_mb"),
            "executed": m.get("executed_precision"), "note": r.note,
        })
    return out


def write_csv(info: ReportInfo, path: str | Path) -> Path:
    import pandas as pd

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    records = []
    for rec, r in zip(table_rows(info), info.trials):
        records.append({**{k: v for k, v in rec.items() if k != "flags"}, "baseline": r.baseline, "pareto": r.pareto,
                        "feasible": r.feasible, "duplicate_of": r.duplicate_of,
                        **{f"metric.{k}": v for k, v in r.metrics.items() if k != "latency_ci_ms"},
                        "metric.latency_ci_low_ms": (r.metrics.get("latency_ci_ms") or [None, None])[0],
                        "metric.latency_ci_high_ms": (r.metrics.get("latency_ci_ms") or [None, None])[1]})
    pd.DataFrame.from_records(records).to_csv(path, index=False)
    return path


def _cell(value: Any, kind: str) -> str:
    if value is None or value == "":
        return '<td data-sort=""></td>'
    shown = {"pct": lambda v: f"{v:.2%}", "pts": lambda v: f"{v:+.2f}", "ms": lambda v: f"{v:.4f}",
             "x": lambda v: f"{v:.2f}x", "int": lambda v: f"{v:,.0f}", "mb": lambda v: f"{v:.3f}"}.get(kind, str)(value)
    sort = value if isinstance(value, (int, float)) and not isinstance(value, bool) else str(value)
    return f'<td data-sort="{html.escape(str(sort))}">{html.escape(shown)}</td>'


def _table_html(info: ReportInfo) -> str:
    kinds = {"accuracy": "pct", "drop (pts)": "pts", "ms/sample": "ms", "re-measured ms/sample": "ms",
             "re-measure diff %": "pts", "speedup": "x", "p95 ms/batch": "ms", "samples/s": "int", "MB": "mb"}
    head = "".join(f'<th title="click to sort">{html.escape(c)}</th>' for c in _COLUMNS)
    body = []
    for rec, r in zip(table_rows(info), info.trials):
        cells = []
        for col in _COLUMNS:
            if col == "95% CI":
                cells.append(_cell(None, "") if rec["ci_low"] is None else
                             f'<td data-sort="{rec["ci_low"]}">{rec["ci_low"]:.4f}-{rec["ci_high"]:.4f}</td>')
            else:
                cells.append(_cell(rec[col], kinds.get(col, "")))
        cls = " ".join(c for c, on in (("pareto", r.pareto), ("baseline", r.baseline),
                                       ("muted", not r.complete or not r.feasible)) if on)
        body.append(f'<tr class="{cls}">{"".join(cells)}</tr>')
    return (f'<div class="scroll"><table id="trials"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table></div>')


_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:1280px;color:#222;
     padding:0 16px}
h1{font-size:1.5em;margin-bottom:4px} h2{font-size:1.15em;margin-top:28px;border-bottom:1px solid #ddd}
.meta{color:#555;font-size:.9em} ul.findings li{margin:4px 0}
table{border-collapse:collapse;font-size:.82em;width:100%}
th,td{padding:3px 6px;border-bottom:1px solid #eee;text-align:right;white-space:nowrap}
.scroll{overflow-x:auto}
th{cursor:pointer;background:#f4f4f4;position:sticky;top:0;user-select:none}
th.asc:after{content:" \\25B2"} th.desc:after{content:" \\25BC"}
td:nth-child(-n+5),th:nth-child(-n+5),td:last-child,th:last-child{text-align:left}
tr.pareto{background:#eef7ee} tr.baseline{background:#fff7d6} tr.muted{color:#888}
.note{color:#777;font-size:.9em}
"""

_SORT_JS = """
document.querySelectorAll('#trials th').forEach(function (th, col) {
  th.addEventListener('click', function () {
    var table = th.closest('table'), body = table.tBodies[0];
    var asc = !th.classList.contains('asc');
    table.querySelectorAll('th').forEach(function (h) { h.classList.remove('asc', 'desc'); });
    th.classList.add(asc ? 'asc' : 'desc');
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = a.cells[col].dataset.sort, y = b.cells[col].dataset.sort;
      if (x === '' && y !== '') return 1;
      if (y === '' && x !== '') return -1;
      var nx = parseFloat(x), ny = parseFloat(y);
      var cmp = (!isNaN(nx) && !isNaN(ny) && isFinite(x) && isFinite(y)) ? nx - ny : String(x).localeCompare(String(y));
      return asc ? cmp : -cmp;
    });
    rows.forEach(function (r) { body.appendChild(r); });
  });
});
"""


def render_html(info: ReportInfo) -> str:
    figures = [("Pareto front", pareto_figure(info)), ("Hypervolume history", hypervolume_figure(info)),
               ("Parameter importances", importance_figure(info))]
    parts = []
    first = True
    for title, fig in figures:
        parts.append(f"<h2>{html.escape(title)}</h2>")
        if fig is None:
            parts.append("".join(f'<p class="note">{html.escape(n)}</p>' for n in info.importance_notes))
            continue
        parts.append(fig.to_html(full_html=False, include_plotlyjs=True if first else False,
                                 config={"displaylogo": False, "responsive": True}))
        first = False
        if title == "Parameter importances":
            parts.extend(f'<p class="note">{html.escape(n)}</p>' for n in info.importance_notes)
    hw = info.hardware
    wl = info.workload
    states = ", ".join(f"{n} {s}" for s, n in sorted(info.states.items()))
    meta = (f"{len(info.trials)} trials ({states}); objectives: "
            f"{', '.join(f'{d} {n}' for n, d in info.objectives.items())}; reference accuracy "
            + (f"{info.reference_accuracy:.2%} on {info.validation_images} validation images"
               if info.reference_accuracy is not None else "unknown"))
    machine = f"{hw.get('cpu', '?')}, {hw.get('cores', '?')} cores" + (f", {hw['gpu']}" if hw.get("gpu") else "")
    libs = ", ".join(f"{k} {v}" for k, v in (hw.get("libraries") or {}).items())
    workload = ", ".join(f"{k}={v}" for k, v in wl.items() if v is not None)
    findings_html = "".join(f"<li>{html.escape(f)}</li>" for f in info.findings)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>tuner report: {html.escape(info.study)}</title>
<style>{_STYLE}</style></head><body>
<h1>Study {html.escape(info.study)}</h1>
<p class="meta">{html.escape(meta)}<br>machine: {html.escape(machine)}; {html.escape(libs)}<br>
workload: {html.escape(workload)}</p>
<h2>Findings</h2><ul class="findings">{findings_html}</ul>
{"".join(parts)}
<h2>Trials</h2><p class="note">Click a column heading to sort. Green: feasible Pareto front; yellow: baseline;
grey: failed, refused or breaking a constraint.</p>
{_table_html(info)}
<script>{_SORT_JS}</script>
</body></html>
"""


def write_report(study: optuna.Study, out: str | Path, csv: str | Path | None = None) -> ReportInfo:
    info = _report_info(study)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(render_html(info), encoding="utf-8")
    tmp.replace(out)
    if csv is not None:
        write_csv(info, csv)
    return info
