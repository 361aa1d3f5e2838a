"""Conv-BatchNorm folding: the BN's affine transform merged into the conv's weights and bias."""

from __future__ import annotations

from torch import nn

from tuner.errors import CandidateBuildError, first_line


def fold_bn(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with every conv -> BN pair folded (via torch.fx, so any topology works)."""
    from torch.fx.experimental.optimization import fuse

    try:
        folded = fuse(model.eval(), inplace=False)
    except Exception as err:  # noqa: BLE001 - fx cannot trace data-dependent control flow, and says so variously
        first = first_line(err, 160) or type(err).__name__
        raise CandidateBuildError(
            f"fold_bn needs a model torch.fx can trace ({first}); search with fold_bn: false for this model."
        ) from None
    return folded
