"""Candidate: the one configuration type that flows from the search space to build and measure (torch-free)."""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuner.errors import ConfigError, UnsupportedCombination
from tuner.names import CALIBRATIONS, GRAPH_OPTS, INT8_OPS, PLACEMENTS, PRECISIONS, PRUNE_PROFILES, RECOVERY_FIDELITIES

# Field metadata: a value other than the field's default needs the model's torch graph (pruning, folding, a
# student...), which a model brought as an ONNX file does not have. A new such field only needs this mark.
NEEDS_TORCH_GRAPH = {"needs_torch_graph": True}

MAX_REQUESTS = 1024  # requests in flight: each holds an input batch (and an OpenVINO infer request)


@dataclass(frozen=True)
class Candidate:
    """One point of the search space. Field names are the YAML keys and the Optuna params."""

    prune_ratio: float = field(default=0.0, metadata=NEEDS_TORCH_GRAPH)  # structured pruning, 0 <= r < 1
    precision: str = "fp32"  # fp32 | fp16 | bf16 | int8 (int8: ORT static QDQ)
    fold_bn: bool = field(default=False, metadata=NEEDS_TORCH_GRAPH)  # fold BatchNorm into the preceding conv
    graph_opt: str = "all"  # ORT graph optimization level; torch placements ignore it
    batch_size: int = 1
    placement: str = "torch-cpu"  # runtime + device, see tuner.runtimes
    threads: int = 0  # intra-op threads per stream; 0 = this machine's cores shared out among the streams
    calibration: str = "minmax"  # int8 only: minmax | entropy | percentile activation ranges
    float_layers: int = 0  # int8 only: the k layers most sensitive to int8 stay in float (0 = uniform int8)
    int8_ops: str = "all"  # int8 only: all (every op ORT quantizes) | compute (Conv / Gemm / MatMul inputs only)
    calibration_images: int = 0  # int8 only: calibrate on the first n images of the calibration split (0 = all)
    # how prune_ratio is spread over the layers: uniform | global (ranked together)
    prune_profile: str = field(default="uniform", metadata=NEEDS_TORCH_GRAPH)
    # a shallower student: the k shape-preserving blocks that matter least become identities
    drop_blocks: int = field(default=0, metadata=NEEDS_TORCH_GRAPH)
    # the user's own smaller model (--student) in place of the model, distilled from it, then compressed as above
    student: bool = field(default=False, metadata=NEEDS_TORCH_GRAPH)
    # unstructured: this share of every conv/linear layer's weights set to zero, 0 <= s < 1
    sparsity: float = field(default=0.0, metadata=NEEDS_TORCH_GRAPH)
    # distillation budget after compressing: short, or long (the study spends it on contenders)
    recovery: str = field(default="short", metadata=NEEDS_TORCH_GRAPH)
    # Serving: `streams` requests run at once (OpenVINO NUM_STREAMS, that many ORT sessions or torch threads), each
    # on `threads` threads; `requests` in flight under load (0 = one per stream). 1 / 0: one synchronous call at a
    # time, what every placement ran before these fields existed.
    streams: int = 1
    requests: int = 0

    def __post_init__(self) -> None:
        _check(
            isinstance(self.prune_ratio, (int, float))
            and not isinstance(self.prune_ratio, bool)
            and 0.0 <= self.prune_ratio < 1.0,
            f"`0 <= prune_ratio < 1` must hold, but got prune_ratio={self.prune_ratio!r}.",
        )
        _check(
            self.precision in PRECISIONS,
            f"precision must be one of {', '.join(PRECISIONS)}, but got {self.precision!r}.",
        )
        _check(isinstance(self.fold_bn, bool), f"fold_bn must be true or false, but got {self.fold_bn!r}.")
        _check(
            self.graph_opt in GRAPH_OPTS,
            f"graph_opt must be one of {', '.join(GRAPH_OPTS)}, but got {self.graph_opt!r}.",
        )
        _check(
            _is_int(self.batch_size) and self.batch_size >= 1,
            f"batch_size must be an integer >= 1, but got {self.batch_size!r}.",
        )
        _check(
            self.placement in PLACEMENTS,
            f"placement must be one of {', '.join(PLACEMENTS)}, but got {self.placement!r}.",
        )
        _check(
            _is_int(self.threads) and self.threads >= 0,
            f"threads must be an integer >= 0 (0 = all cores), but got {self.threads!r}.",
        )
        _check(
            self.calibration in CALIBRATIONS,
            f"calibration must be one of {', '.join(CALIBRATIONS)}, but got {self.calibration!r}.",
        )
        _check(
            _is_int(self.float_layers) and self.float_layers >= 0,
            f"float_layers must be an integer >= 0, but got {self.float_layers!r}.",
        )
        _check(self.int8_ops in INT8_OPS, f"int8_ops must be one of {', '.join(INT8_OPS)}, but got {self.int8_ops!r}.")
        _check(
            _is_int(self.calibration_images) and self.calibration_images >= 0,
            f"calibration_images must be an integer >= 0 (0 = the whole calibration split), but got "
            f"{self.calibration_images!r}.",
        )
        _check(
            _is_int(self.streams) and self.streams >= 1, f"streams must be an integer >= 1, but got {self.streams!r}."
        )
        _check(
            _is_int(self.requests) and self.requests <= MAX_REQUESTS,
            f"requests must be an integer <= {MAX_REQUESTS}, but got {self.requests!r}.",
        )
        _check(
            self.requests == 0 or self.requests >= self.streams,
            f"requests must be 0 (one per stream) or an integer >= streams ({self.streams!r}), since a stream "
            f"without a request in flight idles, but got {self.requests!r}.",
        )
        int8_only = {"calibration": "minmax", "calibration_images": 0, "float_layers": 0, "int8_ops": "all"}
        off = {name: getattr(self, name) for name, default in int8_only.items() if getattr(self, name) != default}
        _check(
            self.precision == "int8" or not off,
            f"{', '.join(int8_only)} apply to int8 only, but got precision={self.precision!r} with "
            + ", ".join(f"{name}={value!r}" for name, value in off.items())
            + ".",
        )
        _check(
            self.prune_profile in PRUNE_PROFILES,
            f"prune_profile must be one of {', '.join(PRUNE_PROFILES)}, but got {self.prune_profile!r}.",
        )
        _check(isinstance(self.student, bool), f"student must be true or false, but got {self.student!r}.")
        _check(
            _is_int(self.drop_blocks) and self.drop_blocks >= 0,
            f"drop_blocks must be an integer >= 0, but got {self.drop_blocks!r}.",
        )
        _check(
            isinstance(self.sparsity, (int, float))
            and not isinstance(self.sparsity, bool)
            and 0.0 <= self.sparsity < 1.0,
            f"`0 <= sparsity < 1` must hold, but got sparsity={self.sparsity!r}.",
        )
        _check(
            self.recovery in RECOVERY_FIDELITIES,
            f"recovery must be one of {', '.join(RECOVERY_FIDELITIES)}, but got {self.recovery!r}.",
        )
        object.__setattr__(self, "prune_ratio", round(float(self.prune_ratio), 6))  # 0.30000000000000004 -> 0.3
        object.__setattr__(self, "sparsity", round(float(self.sparsity), 6))

    @property
    def compresses(self) -> bool:
        """The model itself is changed (and recovered by distillation) before any precision is applied."""
        return self.student or self.prune_ratio > 0 or self.drop_blocks > 0 or self.sparsity > 0

    @property
    def in_flight(self) -> int:
        """Requests in flight under load: ``requests``, or one per stream."""
        return self.requests or self.streams

    @property
    def serving(self) -> dict[str, int]:
        """The serving settings beside the batch: streams, requests in flight, threads as given (0 = shared out)."""
        return {
            "streams": self.streams,
            "requests": self.in_flight,
            "batch_size": self.batch_size,
            "threads": self.threads,
        }

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def torch_graph_uses(self) -> tuple[str, ...]:
        """What of this candidate needs the model's torch graph: each field marked NEEDS_TORCH_GRAPH that is off
        its default (``prune_ratio=0.3``), and a placement whose runtime is torch itself."""
        uses = tuple(
            f"{f.name}={getattr(self, f.name)!r}"
            for f in dataclasses.fields(self)
            if f.metadata.get("needs_torch_graph") and getattr(self, f.name) != f.default
        )
        return uses + ((f"placement={self.placement!r}",) if PLACEMENTS[self.placement].runtime == "torch" else ())

    def check_without_torch_graph(self, model: str) -> None:
        """Refuse (before any work) what ``model``, an ONNX file, cannot do: anything needing the torch graph."""
        uses = self.torch_graph_uses()
        if uses:
            raise UnsupportedCombination(
                f"{', '.join(uses)} needs the model's torch graph, and {model} is an ONNX "
                "file; use an ort-cpu or ov-cpu placement, unpruned and unfolded."
            )

    @classmethod
    def fill(cls, data: dict[str, Any]) -> dict[str, Any]:
        """A recorded candidate dict with the fields it lacks (recorded before they existed) at their defaults."""
        return {**_DEFAULTS, **data}

    @classmethod
    def from_dict(cls, data: Any, source: str = "config") -> Candidate:
        if not isinstance(data, dict):
            got = "an empty file" if data is None else f"a YAML {type(data).__name__}"
            raise ConfigError(f"{source}: expected a mapping of candidate keys (precision: fp32, ...), got {got}.")
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


_DEFAULTS = {f.name: f.default for f in dataclasses.fields(Candidate)}


def read_yaml(path: str | Path) -> Any:
    """Parse a YAML file strictly: UTF-8 text, and a key given twice in one mapping is refused (YAML's
    last-one-wins would silently drop the first value)."""
    import yaml

    p = Path(path)
    if p.is_dir():
        raise ConfigError(f"{p} is a directory; pass the path of a YAML file.")
    if not p.is_file():
        raise ConfigError(f"{p}: no such file; pass the path of a YAML file.")
    try:
        raw = p.read_bytes()
    except OSError as err:
        raise ConfigError(f"{p}: cannot read it ({err.strerror or err}); check its permissions.") from None
    try:
        text = raw.decode("utf-8-sig")  # a byte-order mark is fine
    except UnicodeDecodeError as err:
        raise ConfigError(
            f"{p}: not UTF-8 text (byte 0x{raw[err.start]:02x} at offset {err.start}); save the file as UTF-8."
        ) from None
    try:
        return yaml.load(text, Loader=_strict_loader())  # a SafeLoader subclass: no code runs
    except _DuplicateKey as err:
        raise ConfigError(f"{p}: {err}") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{p}: not valid YAML{where}; fix the syntax.") from None
    except RecursionError:  # deeply nested flow collections
        raise ConfigError(f"{p}: nested too deeply to be a configuration; flatten it.") from None


@functools.lru_cache(maxsize=1)
def _strict_loader() -> type:
    import yaml

    class StrictLoader(yaml.SafeLoader):
        def construct_mapping(self, node: Any, deep: bool = False) -> dict[Any, Any]:
            if isinstance(node, yaml.MappingNode):
                seen: dict[Any, int] = {}
                for key_node, _ in node.value:
                    if key_node.tag == "tag:yaml.org,2002:merge":
                        continue  # `<<: *base` then overriding a key of base is what merge keys are for
                    key = self.construct_object(key_node, deep=True)
                    try:
                        hash(key)
                    except TypeError:
                        continue  # SafeLoader reports unhashable keys itself
                    line = key_node.start_mark.line + 1
                    if key in seen:
                        raise _DuplicateKey(
                            f"key {key!r} is given twice (lines {seen[key]} and {line}); "
                            "YAML would silently keep the last one: keep one of them."
                        )
                    seen[key] = line
            return super().construct_mapping(node, deep=deep)

    return StrictLoader


class _DuplicateKey(Exception):
    pass


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def int8_settings(c: dict[str, Any]) -> str:
    """A candidate's int8 settings that are not the defaults, in words: ``compute ops, 2 float``; "" for none."""
    return ", ".join(
        note
        for note in (
            "compute ops" if c.get("int8_ops", "all") != "all" else "",
            f"{c['float_layers']} float" if c.get("float_layers") else "",
            c["calibration"] if c.get("calibration", "minmax") != "minmax" else "",
            f"calibrated on {c['calibration_images']}" if c.get("calibration_images") else "",
        )
        if note
    )


def compression(c: dict[str, Any]) -> str:
    """How a (filled) candidate's model was made smaller, in words: ``student prune 0.60 global -3 blocks sparse
    0.50 (long recovery)``; ``prune 0.00`` for the model as brought."""
    shrink = ("student " if c["student"] else "") + f"prune {c['prune_ratio']:.2f}"
    if c["prune_ratio"] and c["prune_profile"] != "uniform":
        shrink += f" {c['prune_profile']}"
    if c["drop_blocks"]:
        shrink += f" -{c['drop_blocks']} blocks"
    if c["sparsity"]:
        shrink += f" sparse {c['sparsity']:.2f}"
    if c["recovery"] == "long":
        shrink += " (long recovery)"
    return shrink


def label(candidate: Candidate | dict[str, Any]) -> str:
    """A candidate in a few words, the one way it becomes text (progress lines, the report, the re-measure, the API):
    placement, precision (and its int8 settings that are not the defaults), how it was compressed, batch (and its
    streams, when several). A recorded dict lacking newer fields reads them at their defaults."""
    c = candidate.to_dict() if isinstance(candidate, Candidate) else Candidate.fill(candidate)
    shrink = compression(c)
    int8 = int8_settings(c)
    streams = int(c["streams"] or 1)
    return f"{c['placement']} {c['precision']}{f' ({int8})' if int8 else ''} {shrink} bs {c['batch_size']}" + (
        f" x{streams} streams" if streams > 1 else ""
    )
