"""Two layer profiles side by side (the pick against the baseline), and what they say, in words.

``compare`` works per sample (a build's batch may differ from its twin's): each layer's time per sample in both,
its share of its own build's profiled call, its executed precision in each, and what changed (pruned channels,
a layer gone, kept in float). ``findings`` are sentences built from those figures only.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from tuner.explain.layers import LayerProfile, LayerTime
from tuner.explain.match import OVERHEAD_KINDS

FLOAT = ("fp32", "bf16", "fp16")
NOTABLE_SHARE = 0.05  # overheads below this share of the call are not worth a sentence


@dataclass(frozen=True)
class LayerRow:
    module: str
    ms: float | None  # per sample in the build explained (None: not in it)
    share: float | None
    precision: str
    against_ms: float | None  # per sample in the build compared against
    against_share: float | None
    against_precision: str
    changed: str  # "128 -> 77 channels", "gone", "int8 -> fp32", ""


@dataclass(frozen=True)
class Comparison:
    trial: int
    against: int | None
    label: str
    against_label: str
    profile: LayerProfile
    baseline: LayerProfile | None
    rows: tuple[LayerRow, ...]
    findings: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "trial": self.trial,
            "against": self.against,
            "label": self.label,
            "against_label": self.against_label,
            "rows": [asdict(r) for r in self.rows],
            "findings": list(self.findings),
            "profile": self.profile.to_dict(),
            "baseline": self.baseline.to_dict() if self.baseline is not None else None,
        }

    def to_record(self) -> dict[str, Any]:
        """What the study keeps for its report's layer view: the rows and findings, and each build's profiled call
        against the sum of its layers (the whole profiles stay in the cache and in an export's profile.json)."""

        def call(p: LayerProfile | None) -> dict[str, Any] | None:
            return (
                None
                if p is None
                else {
                    "placement": p.placement,
                    "precision": p.precision,
                    "batch_size": p.batch_size,
                    "total_ms": p.total_ms,
                    "nodes_ms": p.nodes_ms,
                    "outside_ms": p.outside_ms,
                }
            )

        return {
            "trial": self.trial,
            "against": self.against,
            "label": self.label,
            "against_label": self.against_label,
            "rows": [asdict(r) for r in self.rows],
            "findings": list(self.findings),
            "profile": call(self.profile),
            "baseline": call(self.baseline),
        }


def _per_sample(p: LayerProfile, layer: LayerTime) -> float:
    return layer.ms / p.batch_size


def rows(p: LayerProfile, base: LayerProfile | None) -> list[LayerRow]:
    mine = {la.module: la for la in p.layers()}
    theirs = {la.module: la for la in base.layers()} if base is not None else {}
    order = list(dict.fromkeys([*theirs, *mine]))
    out = []
    for m in order:
        a, b = mine.get(m), theirs.get(m)
        changed = []
        if a is None:
            changed.append("gone (dropped)" if b is not None and b.compute else "fused into a neighbour")
        elif not a.executed:
            changed.append("optimized out (fused into a neighbour)")
        elif b is not None:
            if a.channels and b.channels and a.channels != b.channels:
                changed.append(f"{b.channels} -> {a.channels} channels")
            if a.precision != b.precision and "-" not in (a.precision, b.precision):
                changed.append(f"{b.precision} -> {a.precision}")
        out.append(
            LayerRow(
                m,
                _per_sample(p, a) if a else None,
                a.share if a else None,
                a.precision if a else "",
                _per_sample(base, b) if b and base else None,
                b.share if b else None,
                b.precision if b else "",
                ", ".join(changed),
            )
        )
    return out


def _names(layers: list[tuple[str, float]], n: int = 3) -> str:
    return ", ".join(f"{m} ({ms:.3f} ms)" for m, ms in layers[:n])


def findings(p: LayerProfile, base: LayerProfile | None, table: list[LayerRow]) -> list[str]:
    out: list[str] = []
    layers = sorted(p.layers(), key=lambda la: -la.ms)
    if layers:
        top = layers[0]
        why = ""
        b = next((r for r in table if r.module == top.module), None)
        if top.channels and b is not None and "channels" not in b.changed and base is not None:
            why = f": its {top.channels} channels were not pruned"
        out.append(
            f"{top.module} runs {top.precision} but costs {top.share:.0%} of the time "
            f"({top.ms:.3f} ms of {p.total_ms:.3f}){why}"
        )
    over = p.kind_ms(*OVERHEAD_KINDS)
    if p.total_ms and over / p.total_ms >= NOTABLE_SHARE:
        n = sum(1 for x in p.nodes if x.kind in OVERHEAD_KINDS and x.ms > 0)
        floats = [
            la.module
            for la in p.layers()
            if p.precision == "int8"
            and la.precision in FLOAT
            and any(x.kind == "compute" for x in p.nodes if x.module == la.module)
        ]
        tail = (
            f": the float layers between int8 layers ({', '.join(floats[:4])}) pay for the conversions"
            if floats
            else ": layout reorders and int8 quantize/dequantize steps between the layers"
        )
        out.append(f"Reorder/Convert/Quantize nodes cost {over / p.total_ms:.0%} ({over:.3f} ms, {n} nodes){tail}")
    if p.precision == "int8":
        floats = [
            la
            for la in p.layers()
            if la.precision in FLOAT and any(x.kind == "compute" for x in p.nodes if x.module == la.module)
        ]
        if floats:
            share = sum(la.ms for la in floats) / p.total_ms if p.total_ms else 0.0
            out.append(
                f"{len(floats)} compute layers ran in float in this int8 build "
                f"({', '.join(la.module for la in floats[:5])}): {share:.0%} of the time"
            )
    if p.total_ms and p.outside_ms / p.total_ms >= NOTABLE_SHARE:
        out.append(
            f"{p.outside_ms / p.total_ms:.0%} of the profiled call ({p.outside_ms:.3f} ms) is outside every node: "
            "the runtime's dispatch, input/output copies and the profiler's own cost"
            + (" and Python between modules" if p.placement.startswith("torch") else "")
        )
    if p.latency_ms and p.total_ms > 1.15 * p.latency_ms:
        out.append(
            f"profiling slows the call: {p.total_ms:.3f} ms profiled against {p.latency_ms:.3f} ms unprofiled, "
            "so the small nodes' times are upper bounds"
        )
    if base is not None:
        mine, theirs = p.latency_ms / p.batch_size, base.latency_ms / base.batch_size
        deltas = sorted(((r.module, (r.ms or 0.0) - (r.against_ms or 0.0)) for r in table), key=lambda t: t[1])
        if mine > theirs:
            worse = [d for d in deltas[::-1] if d[1] > 0]
            over_b = base.kind_ms(*OVERHEAD_KINDS) / base.batch_size
            extra = over / p.batch_size - over_b
            outside = p.outside_ms / p.batch_size - base.outside_ms / base.batch_size
            why = (
                f"; layers slower than in the baseline: {_names(worse)}"
                if worse
                else f"; no layer is slower: the difference is outside the layers ({outside:+.3f} ms per sample "
                "outside every node, the runtime's own per-call cost)"
            )
            if extra > 0:
                costly = sorted((x for x in p.nodes if x.kind in OVERHEAD_KINDS), key=lambda x: -x.ms)[:3]
                why += f"; conversions add {extra:.3f} ms per sample, the costliest: " + ", ".join(
                    f"{x.node} ({x.op}, {x.ms:.3f} ms)" for x in costly
                )
            out.append(
                f"this {p.precision} build is slower than the baseline ({mine:.3f} vs {theirs:.3f} ms per sample "
                f"unprofiled){why}"
            )
        else:
            saved = [d for d in deltas if d[1] < 0]
            out.append(
                f"{theirs / mine:.2f}x faster than the baseline ({mine:.3f} vs {theirs:.3f} ms per sample "
                f"unprofiled); most of the saving: {_names([(m, -d) for m, d in saved])}"
            )
        gone = [r.module for r in table if r.changed == "gone (dropped)"]
        if gone:
            out.append(f"{len(gone)} layers of the baseline are gone in this build: {', '.join(gone[:6])}")
    return out


def compare(
    p: LayerProfile,
    base: LayerProfile | None,
    trial: int,
    against: int | None,
    label: str = "",
    against_label: str = "",
) -> Comparison:
    table = rows(p, base)
    return Comparison(trial, against, label, against_label, p, base, tuple(table), tuple(findings(p, base, table)))


def _ms(x: float | None) -> str:
    return f"{x:8.4f}" if x is not None else "       -"


def _pct(x: float | None) -> str:
    return f"{x:5.1%}" if x is not None else "    -"


def render(c: Comparison, top: int = 5) -> str:
    """The comparison as text: the layer table, the top layers, the split of the call, the findings."""
    p, b = c.profile, c.baseline
    lines = [f"trial #{c.trial}: {c.label}" + (f"\nagainst trial #{c.against}: {c.against_label}" if b else "")]
    for name, prof in (("trial", p), ("against", b)):
        if prof is None:
            continue
        lines.append(
            f"  {name}: {prof.placement} {prof.precision}, batch {prof.batch_size}, {prof.threads} thread(s): "
            f"{prof.latency_ms:.4f} ms per call unprofiled, {prof.total_ms:.4f} ms profiled = layers "
            f"{prof.nodes_ms:.4f} + outside {prof.outside_ms:.4f} "
            f"({prof.nodes_ms / prof.total_ms if prof.total_ms else 0:.0%} in nodes; "
            f"{prof.kind_ms(*OVERHEAD_KINDS):.4f} in reorder/convert/quantize); counted: {prof.counted}"
        )
    lines.append("")
    head = f"{'layer':32} {'ms/sample':>9} {'share':>6} {'prec':>9}"
    if b is not None:
        head += f" | {'baseline':>9} {'share':>6} {'prec':>9}  changed"
    lines.append(head)
    fused = [
        r
        for r in c.rows
        if not r.ms and not (r.against_ms and "gone" in r.changed) and r.changed.startswith(("fused", "optimized out"))
    ]
    for r in c.rows:
        if r in fused:
            continue
        line = f"{r.module[:32]:32} {_ms(r.ms):>9} {_pct(r.share):>6} {r.precision:>9}"
        if b is not None:
            line += f" | {_ms(r.against_ms):>9} {_pct(r.against_share):>6} {r.against_precision:>9}  {r.changed}"
        lines.append(line)
    if fused:
        was = sum(r.against_ms or 0.0 for r in fused)
        lines.append(
            f"(fused into neighbours here: {len(fused)} layers, {', '.join(r.module for r in fused[:4])}"
            + (", ..." if len(fused) > 4 else "")
            + (f"; {was:.4f} ms/sample in the baseline)" if was else ")")
        )
    rest = p.unmatched()
    if rest:
        lines.append(
            f"{'(no module: ' + str(len(rest)) + ' nodes)':32} "
            f"{_ms(sum(n.ms for n in rest) / p.batch_size):>9} "
            f"{_pct(sum(n.ms for n in rest) / p.total_ms if p.total_ms else None):>6}"
        )
    lines.append("")
    lines.append(f"top {top} layers by time (ms per call of batch {p.batch_size}):")
    for la in sorted(p.layers(), key=lambda la: -la.ms)[:top]:
        lines.append(f"  {la.module:32} {la.ms:8.4f} ms {la.share:5.1%}  {la.precision:6} {', '.join(la.kernels)}")
    lines.append("")
    lines.append("findings:")
    lines += [f"- {f}" for f in c.findings]
    return "\n".join(lines)
