"""Search spaces: read a declarative YAML file, drop what this machine cannot run, sample Candidates.

This module and ``study.py`` are the only ones that touch ``optuna.Trial``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuner import hardware
from tuner.candidate import Candidate, read_yaml
from tuner.errors import ConfigError, UnsupportedCombination

SPACES_DIR = Path(__file__).resolve().parent.parent / "search_spaces"
FIELDS = {f.name: f for f in dataclasses.fields(Candidate)}
_KEYS = {"choices", "low", "high", "step", "log", "when", "per"}


@dataclass(frozen=True)
class Param:
    name: str  # candidate field
    choices: tuple[Any, ...] | dict[str, tuple[Any, ...]] | None = None  # dict when per is set
    low: float | None = None
    high: float | None = None
    step: float | None = None
    log: bool = False
    fixed: Any = None
    when: dict[str, tuple[Any, ...]] | None = None
    per: str | None = None

    def optuna_name(self, values: dict[str, Any]) -> str:
        return f"{self.name}@{values[self.per]}" if self.per else self.name

    def applies(self, values: dict[str, Any]) -> bool:
        return all(values.get(k) in allowed for k, allowed in (self.when or {}).items())

    def sample(self, trial: Any, values: dict[str, Any]) -> Any:
        name = self.optuna_name(values)
        if self.fixed is not None:
            return self.fixed
        if self.choices is not None:
            choices = self.choices[values[self.per]] if isinstance(self.choices, dict) else self.choices
            return trial.suggest_categorical(name, list(choices))
        if (
            isinstance(self.low, int)
            and isinstance(self.high, int)
            and (self.step is None or isinstance(self.step, int))
        ):
            return trial.suggest_int(name, self.low, self.high, step=self.step or 1, log=self.log)
        return trial.suggest_float(name, self.low, self.high, step=self.step, log=self.log)


@dataclass(frozen=True)
class SearchSpace:
    source: str
    params: tuple[Param, ...]  # in sampling order: a param's `when`/`per` keys come before it
    dropped: tuple[str, ...] = ()  # "ort-cuda: needs a CUDA GPU" and the like, for the screen

    def sample(self, trial: Any) -> Candidate:
        values: dict[str, Any] = {}
        for p in self.params:
            if p.applies(values):
                value = p.sample(trial, values)
                values[p.name] = round(value, 6) if isinstance(value, float) else value  # 0.6000000000000001
        try:
            return Candidate(**values)
        except ConfigError as err:  # values valid one by one, not together (requests below streams): this trial only
            raise UnsupportedCombination(f"the space sampled an invalid combination: {err}") from None

    def params_of(self, candidate: Candidate) -> dict[str, Any] | None:
        """The Optuna params that make ``sample`` return ``candidate``, or None if the space cannot."""
        want, values, params = candidate.to_dict(), {}, {}
        named = {p.name for p in self.params}
        if any(want[f] != FIELDS[f].default for f in FIELDS if f not in named):  # sample() leaves them at default
            return None
        for p in self.params:
            if not p.applies(values):
                if want[p.name] != FIELDS[p.name].default:
                    return None
                continue
            value = want[p.name]
            if p.fixed is not None:
                if value != p.fixed:
                    return None
            elif p.choices is not None:
                choices = p.choices.get(values.get(p.per), ()) if isinstance(p.choices, dict) else p.choices
                if value not in choices:
                    return None
                params[p.optuna_name(values)] = value
            else:
                assert p.low is not None and p.high is not None
                on_step = p.step is None or abs((value - p.low) / p.step - round((value - p.low) / p.step)) < 1e-9
                if not (p.low <= value <= p.high and on_step):
                    return None
                params[p.name] = value
            values[p.name] = value
        return params

    def values(self, name: str) -> tuple[Any, ...]:
        """Every value the space may give ``name`` (for a range: its two ends); the default when it is not set."""
        for p in self.params:
            if p.name == name:
                if p.fixed is not None:
                    return (p.fixed,)
                if isinstance(p.choices, dict):
                    return tuple(v for values in p.choices.values() for v in values)
                if p.choices is not None:
                    return tuple(p.choices)
                return (p.low, p.high)
        return (FIELDS[name].default,)

    def without(self, name: str, value: Any, why: str) -> SearchSpace:
        """This space with ``name: value`` dropped (listed with ``why``): a workload that cannot build it (a
        ``student`` without ``--student``). A field left with one value is fixed to it."""
        p = next((p for p in self.params if p.name == name), None)
        if p is None or value not in self.values(name):
            return self
        kept = tuple(v for v in self.values(name) if v != value)
        if not kept or (p.choices is None and p.fixed is None):  # a range: only its default stays
            kept = (FIELDS[name].default,)
        q = Param(name, fixed=kept[0], when=p.when) if len(kept) == 1 else dataclasses.replace(p, choices=kept)
        return SearchSpace(
            self.source, tuple(q if x is p else x for x in self.params), (*self.dropped, f"{name} {value!r}: {why}")
        )

    def capped(self, name: str, most: float, why: str) -> SearchSpace:
        """This space with ``name``'s values above ``most`` dropped (listed with ``why``): what the model itself
        cannot take (more dropped blocks than it has). A field left with one value is fixed to it."""
        p = next((p for p in self.params if p.name == name), None)
        if p is None or p.fixed is not None or isinstance(p.choices, dict) or max(self.values(name)) <= most:
            return self
        if p.choices is not None:
            kept = tuple(v for v in p.choices if v <= most) or (FIELDS[name].default,)
            q = Param(name, fixed=kept[0], when=p.when) if len(kept) == 1 else dataclasses.replace(p, choices=kept)
        elif p.low is not None and p.low < most:  # a range: its top comes down to ``most``
            q = dataclasses.replace(p, high=type(p.high)(most))
        else:
            q = Param(name, fixed=p.low if p.low == most else FIELDS[name].default, when=p.when)
        kept_text = (
            f"{q.fixed!r}"
            if q.fixed is not None
            else f"{q.low:g}-{q.high:g}"
            if q.choices is None
            else ", ".join(map(str, q.choices))
        )
        return SearchSpace(
            self.source,
            tuple(q if x is p else x for x in self.params),
            (*self.dropped, f"{name} above {most:g}: {why}; kept at {kept_text}"),
        )

    def without_torch_graph(self, why: str) -> SearchSpace:
        """This space for a model without a torch graph (an ONNX file): each value whose candidate needs the graph
        (``Candidate.torch_graph_uses``: pruning, folding, torch placements, ...) is dropped, a field left with
        none but its default is fixed to it, and each drop is listed (``why`` says what the model is)."""
        dropped, params = list(self.dropped), []
        for p in self.params:
            kept = [v for v in self.values(p.name) if not _needs_graph(p.name, v)]
            lost = [v for v in self.values(p.name) if _needs_graph(p.name, v)]
            if not lost:
                params.append(p)
                continue
            if p.name == "placement":
                dropped += [f"{v}: needs the torch graph ({why})" for v in lost]
                params.append(dataclasses.replace(p, choices=tuple(kept)) if p.choices is not None else p)
                continue
            default = FIELDS[p.name].default
            span = f"{p.low:g}-{p.high:g}" if p.choices is None and p.fixed is None else ", ".join(map(str, lost))
            dropped.append(f"{p.name} {span}: needs the torch graph ({why}); kept at {default!r}")
            params.append(Param(p.name, fixed=default, when=p.when))
        space = SearchSpace(self.source, tuple(params), tuple(dropped))
        # Per-placement choices of the placements dropped above go with them.
        space = dataclasses.replace(
            space,
            params=tuple(
                dataclasses.replace(p, choices={k: v for k, v in p.choices.items() if k in space.placements})
                if p.per == "placement" and isinstance(p.choices, dict)
                else p
                for p in params
            ),
        )
        if not space.placements or any(_needs_graph("placement", v) for v in space.placements):
            raise ConfigError(
                f"{self.source}: no placement of this space runs without the torch graph ({why}); "
                "add ort-cpu or ov-cpu."
            )
        return space

    @property
    def placements(self) -> tuple[str, ...]:
        for p in self.params:
            if p.name == "placement":
                return tuple(p.choices) if p.choices is not None else (p.fixed,)  # type: ignore[arg-type]
        return (Candidate().placement,)


def resolve(name_or_path: str) -> Path:
    """``default`` -> search_spaces/default.yaml; anything with a suffix or a slash is a path."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or p.parent != Path("."):
        return p
    return SPACES_DIR / f"{name_or_path}.yaml"


def load_space(source: str | dict[str, Any]) -> SearchSpace:
    """A name in search_spaces/, a YAML path, or the mapping such a file holds (``tuner.tune(space={...})``)."""
    path, raw = (Path("space"), source) if isinstance(source, dict) else (resolve(source), read_yaml(resolve(source)))
    if not isinstance(raw, dict) or not raw:
        raise ConfigError(f"{path}: a search space is a mapping of candidate fields ({', '.join(FIELDS)}).")
    params = [_parse_param(path, name, spec, [k for k in raw if k != name]) for name, spec in raw.items()]
    return _drop_unavailable(SearchSpace(str(path), _in_dependency_order(path, params)))


def _in_dependency_order(path: Path, params: list[Param]) -> tuple[Param, ...]:
    """Order params so each one's `when`/`per` keys are sampled before it (the file's order is free)."""
    ordered: list[Param] = []
    pending = list(params)
    while pending:
        done = {p.name for p in ordered}
        ready = [p for p in pending if set(p.when or {}) | ({p.per} if p.per else set()) <= done]
        if not ready:
            raise ConfigError(
                f"{path}: {', '.join(p.name for p in pending)} depend on each other through "
                "`when`/`per`; remove the cycle."
            )
        ordered += ready
        pending = [p for p in pending if p not in ready]
    return tuple(ordered)


def _parse_param(path: Path, name: Any, spec: Any, others: list[str]) -> Param:
    where = f"{path}: {name}"
    if name not in FIELDS:
        raise ConfigError(f"{path}: unknown key {name!r}; allowed: {', '.join(FIELDS)}.")
    if not isinstance(spec, dict):  # a fixed value
        _validate_value(where, name, spec)
        return Param(name, fixed=spec)
    unknown = set(spec) - _KEYS
    if unknown:
        raise ConfigError(
            f"{where}: unknown setting(s) {', '.join(sorted(map(str, unknown)))}; allowed: {', '.join(sorted(_KEYS))}."
        )
    when = spec.get("when")
    if when is not None:
        if not isinstance(when, dict) or any(k not in others or not isinstance(v, list) for k, v in when.items()):
            raise ConfigError(f"{where}: `when` must map other keys of this file ({', '.join(others)}) to lists.")
        when = {k: tuple(v) for k, v in when.items()}
    per = spec.get("per")
    if per is not None and per not in others:
        raise ConfigError(f"{where}: `per: {per}` must name another key of this file ({', '.join(others)}).")
    if "choices" in spec:
        choices = spec["choices"]
        if per is not None:
            if not isinstance(choices, dict) or not all(isinstance(v, list) and v for v in choices.values()):
                raise ConfigError(f"{where}: with `per`, choices must map each {per} value to a non-empty list.")
            for values in choices.values():
                for v in values:
                    _validate_value(where, name, v, when)
            return Param(name, choices={k: tuple(v) for k, v in choices.items()}, when=when, per=per)
        if not isinstance(choices, list) or not choices:
            raise ConfigError(f"{where}: choices must be a non-empty list.")
        for v in choices:
            _validate_value(where, name, v, when)
        return Param(name, choices=tuple(choices), when=when)
    if "low" in spec and "high" in spec:
        high = hardware.cores() if spec["high"] == "cores" else spec["high"]
        low, step = spec["low"], spec.get("step")
        for v in (low, high):
            _validate_value(where, name, v, when)
        if not (isinstance(low, (int, float)) and isinstance(high, (int, float)) and low <= high):
            raise ConfigError(f"{where}: `low <= high` must hold, but got low={low!r}, high={high!r}.")
        if step is not None and not (
            isinstance(step, (int, float)) and not isinstance(step, bool) and math.isfinite(step) and step > 0
        ):
            raise ConfigError(f"{where}: step must be a finite number > 0, got {step!r}.")
        return Param(name, low=low, high=high, step=step, log=bool(spec.get("log", False)), when=when)
    raise ConfigError(f"{where}: give a fixed value, `choices: [...]`, or `low:` and `high:`.")


def _validate_value(where: str, name: str, value: Any, when: dict[str, tuple[Any, ...]] | None = None) -> None:
    """Check one value by building a Candidate with it: the Candidate is the one source of rules. A key sampled
    only ``when`` others hold given values is checked beside the first of them (float_layers beside int8)."""
    context = {k: v[0] for k, v in (when or {}).items() if v and k != name}
    try:
        Candidate(**{**context, name: value})
    except ConfigError as err:
        raise ConfigError(f"{where}: {err}") from None
    except TypeError:
        raise ConfigError(f"{where}: {value!r} is not a valid {name}.") from None
    if name in ("threads", "streams") and value > hardware.cores():  # oversubscribed: nothing but contention measured
        raise ConfigError(
            f"{where}: {value} is more than this machine's {hardware.cores()} CPUs; use at most "
            f"{hardware.cores()}, or `high: cores`."
        )


# A candidate that needs no torch graph, in int8 so that the int8-only keys are valid beside it.
_NO_GRAPH = {"placement": "ort-cpu", "precision": "int8"}


def _needs_graph(name: str, value: Any) -> bool:
    """Whether ``name: value`` makes a candidate need the model's torch graph (``Candidate.torch_graph_uses``)."""
    try:
        return bool(Candidate(**{**_NO_GRAPH, name: value}).torch_graph_uses())
    except (ConfigError, TypeError):
        return False


def _drop_unavailable(space: SearchSpace) -> SearchSpace:
    """Remove placements this machine lacks and precisions a placement refuses here."""
    from tuner.runtimes.registry import PLACEMENTS

    dropped: list[str] = []
    runnable = {}  # placement -> its runnable precisions
    for name in space.placements:
        reason = PLACEMENTS[name].unavailable()
        if reason:
            dropped.append(f"{name}: {reason}")
        else:
            runnable[name] = {x for x in ("fp32", "fp16", "bf16", "int8") if not PLACEMENTS[name].refuse(x)}
    params = {p.name: p for p in space.params}
    precision = params.get("precision")
    if precision is not None and isinstance(precision.choices, dict):
        kept = {}
        for placement, wanted in precision.choices.items():
            if placement not in runnable:
                continue
            dropped += [
                f"{x} on {placement}: {PLACEMENTS[placement].refuse(x)}" for x in wanted if x not in runnable[placement]
            ]
            if any(x in runnable[placement] for x in wanted):
                kept[placement] = tuple(x for x in wanted if x in runnable[placement])
        runnable = {k: v for k, v in runnable.items() if k in kept}
        params["precision"] = dataclasses.replace(precision, choices=kept)
    placement = params.get("placement")
    if placement is not None and placement.choices is not None:
        params["placement"] = dataclasses.replace(
            placement, choices=tuple(c for c in placement.choices if c in runnable)
        )
    result = SearchSpace(space.source, tuple(params.values()), tuple(dropped))
    if not result.placements or not all(a in runnable for a in result.placements):
        raise ConfigError(
            f"{space.source}: no placement in this space runs on this machine "
            f"({'; '.join(dropped)}); add torch-cpu or ort-cpu."
        )
    return result
