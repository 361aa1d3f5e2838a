"""Candidate: the one configuration type that flows from the search space to build and measure (torch-free)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuner.errors import ConfigError
from tuner.names import GRAPH_OPTS, PLACEMENTS, PRECISIONS


@dataclass(frozen=True)
class Candidate:
    """One point of the search space. Field names are the YAML keys and the Optuna params."""

    prune_ratio: float = 0.0  # fraction of channels removed by structured pruning, 0 <= r < 1
    precision: str = "fp32"  # fp32 | fp16 | bf16 | int8 (int8: ORT static QDQ)
    fold_bn: bool = False  # fold BatchNorm into the preceding conv before export/run
    graph_opt: str = "all"  # ORT graph optimization level; torch placements ignore it
    batch_size: int = 1
    placement: str = "torch-cpu"  # runtime + device, see tuner.runtimes
    threads: int = 0  # intra-op threads; 0 = one per physical core of this machine

    def __post_init__(self) -> None:
        _check(isinstance(self.prune_ratio, (int, float)) and not isinstance(self.prune_ratio, bool)
               and 0.0 <= self.prune_ratio < 1.0,
               f"`0 <= prune_ratio < 1` must hold, but got prune_ratio={self.prune_ratio!r}.")
        _check(self.precision in PRECISIONS,
               f"precision must be one of {', '.join(PRECISIONS)}, but got {self.precision!r}.")
        _check(isinstance(self.fold_bn, bool),
               f"fold_bn must be true or false, but got {self.fold_bn!r}.")
        _check(self.graph_opt in GRAPH_OPTS,
               f"graph_opt must be one of {', '.join(GRAPH_OPTS)}, but got {self.graph_opt!r}.")
        _check(_is_int(self.batch_size) and self.batch_size >= 1,
               f"batch_size must be an integer >= 1, but got {self.batch_size!r}.")
        _check(self.placement in PLACEMENTS,
               f"placement must be one of {', '.join(PLACEMENTS)}, but got {self.placement!r}.")
        _check(_is_int(self.threads) and self.threads >= 0,
               f"threads must be an integer >= 0 (0 = all cores), but got {self.threads!r}.")
        object.__setattr__(self, "prune_ratio", round(float(self.prune_ratio), 6))  # 0.30000000000000004 -> 0.3

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Any, source: str = "config") -> Candidate:
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: expected a mapping of candidate keys, got {type(data).__name__}.")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(
                f"{source}: unknown key(s) {', '.join(map(str, unknown))}; allowed: {', '.join(sorted(known))}."
            )
        try:
            return cls(**data)
        except ConfigError as err:
            raise ConfigError(f"{source}: {err}") from None

    @classmethod
    def from_yaml(cls, path: str | Path) -> Candidate:
        return cls.from_dict(read_yaml(path), source=str(path))


def read_yaml(path: str | Path) -> Any:
    import yaml

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: no such file; pass the path of a YAML file.")
    try:
        return yaml.safe_load(p.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{p}: not valid YAML{where}; fix the syntax.") from None


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)
