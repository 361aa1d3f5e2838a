"""Which trial an export takes: by number, the fastest feasible within an accuracy drop, or the most accurate
within a latency budget. The rules themselves are ``tuner.results``'; this says why, or why none fits."""

from __future__ import annotations

import optuna

from tuner import results
from tuner.errors import ConfigError, TunerError, first_line
from tuner.metric import check_drop_budget
from tuner.record import TrialRecord, read_trials


def select_trial(
    study: optuna.Study, trial: int | None = None, max_drop: float | None = None, max_latency_ms: float | None = None
) -> tuple[TrialRecord, str]:
    """The trial to export and why it was picked. ``max_drop`` is in percentage points."""
    if sum(x is not None for x in (trial, max_drop, max_latency_ms)) != 1:
        raise ConfigError("give exactly one of --trial N, --max-drop POINTS, --max-latency-ms MS.")
    done = {t.number: t for t in results.completed(study)}
    if trial is not None:
        return _by_number(study, done, trial), f"--trial {trial}"
    pts = results.points(study)
    if max_drop is not None:
        check_drop_budget(max_drop, "--max-drop")
        pick = results.fastest_feasible(pts, max_drop)
        if pick is None:
            feasible = [p for p in pts if p.feasible] or pts
            least = min(feasible, key=lambda p: p.accuracy_drop, default=None)
            hint = (
                f"; the smallest drop is {least.accuracy_drop:.2f} points (trial #{least.number})"
                if least is not None
                else ""
            )
            raise TunerError(
                f"no completed feasible trial of study {study.study_name} has an accuracy drop <= "
                f"{max_drop:g} points{hint}; raise --max-drop."
            )
        why = f"fastest feasible trial with an accuracy drop <= {max_drop:g} points"
        if pick.reordered:
            why += (
                f" by the re-measured latency: {pick.point.remeasured_ms:.4f} vs "
                f"{pick.study_point.remeasured_ms:.4f} ms/sample for trial #{pick.study_point.number}, the "
                "fastest by the study's own timing"
            )
        elif pick.by_remeasure:
            why += ", by the study's and the re-measured latency"
        return done[pick.point.number], why
    assert max_latency_ms is not None
    if not max_latency_ms > 0:
        raise ConfigError(f"--max-latency-ms must be > 0, got {max_latency_ms}.")
    best = results.most_accurate_within(pts, max_latency_ms)
    if best is None:
        feasible = [p for p in pts if p.feasible]
        fastest = min(feasible, key=lambda p: results.speed_order(p.per_sample_ms, p.accuracy, p.number), default=None)
        hint = (
            f"; the fastest is {fastest.per_sample_ms:.4f} ms/sample (trial #{fastest.number})"
            if fastest is not None
            else ""
        )
        raise TunerError(
            f"no completed feasible trial of study {study.study_name} runs at <= {max_latency_ms:g} "
            f"ms/sample{hint}; raise --max-latency-ms."
        )
    return done[best.number], f"most accurate feasible trial at <= {max_latency_ms:g} ms/sample"


def _by_number(study: optuna.Study, done: dict[int, TrialRecord], number: int) -> TrialRecord:
    found = [t for t in read_trials(study) if t.number == number]
    if not found:
        held = f"its trials are #0-#{len(study.trials) - 1}" if study.trials else "it has no trials yet"
        raise TunerError(f"study {study.study_name} has no trial #{number} ({held}).")
    t = found[0]
    if number not in done:
        reason = f" ({first_line(t.error, 160)})" if t.error else ""
        raise TunerError(f"trial #{number} of study {study.study_name} is {t.state}{reason}; export a completed trial.")
    return t
