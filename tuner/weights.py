"""A --weights file read safely (weights_only: no code runs from it) and checked tensor by tensor, its classifier's
class count, and its load into a model with one line for every way it does not fit."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tuner.errors import ModelError, first_line, one_line


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Load a state_dict safely (weights_only: no code runs from the file)."""
    p = Path(path)
    if not p.is_file():
        what = "is a directory" if p.is_dir() else "does not exist"
        raise ModelError(f"weights file {p} {what}; pass --weights with a saved state_dict file.")
    try:
        with warnings.catch_warnings():  # torch's deprecation notes on old tensor kinds: the checks below speak
            warnings.simplefilter("ignore")
            obj: Any = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - a file that is not a state_dict fails in many ways
        first = first_line(err, 1000) or type(err).__name__
        if "weights only load failed" in first.lower():  # torch's multi-paragraph advice: say it in a line
            first = (
                "it holds Python objects, such as a whole model saved with torch.save(model), that a safe "
                "weights_only load does not run"
            )
        raise ModelError(
            f"weights file {p} is not a loadable PyTorch state_dict ({first[:160]}); "
            "save it with torch.save(model.state_dict(), PATH)."
        ) from None
    for key in ("state_dict", "model", "model_state_dict"):  # common checkpoint wrappers
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    save = "save it with torch.save(model.state_dict(), PATH)"
    if not isinstance(obj, dict) or not obj:
        got = "an empty mapping" if isinstance(obj, dict) else f"a {type(obj).__name__}"
        raise ModelError(f"weights file {p} holds no state_dict of tensors (it holds {got}); {save}.")
    for k, v in obj.items():
        if not isinstance(k, str):
            raise ModelError(
                f"weights file {p} has the key {k!r} ({type(k).__name__}); a state_dict maps parameter "
                f"names (strings) to tensors: {save}."
            )
        if not isinstance(v, torch.Tensor):
            raise ModelError(
                f"weights file {p}: {k} holds {type(v).__name__} {str(v)[:40]!r}, not a tensor; a "
                f"state_dict holds tensors only: {save}."
            )
        kind = _unloadable_kind(v)
        if kind:
            raise ModelError(
                f"weights file {p}: {k} is {kind}, which a model's state_dict cannot hold; save the "
                "dense float weights (torch.save(model.state_dict(), PATH))."
            )
        if (v.is_floating_point() or v.is_complex()) and v.numel() and not bool(torch.isfinite(v).all()):
            share = "all NaN/inf" if not bool(torch.isfinite(v).any()) else "NaN/inf values"
            raise ModelError(
                f"weights {p} hold NaN/inf in {k} ({share}); they come from a diverged run: "
                "pass weights saved before it diverged."
            )
    state = {k.removeprefix("module."): v for k, v in obj.items()}
    if len(state) != len(obj):
        raise ModelError(
            f"weights file {p} has keys with and without the 'module.' prefix for the same parameter; {save}."
        )
    return state


def _unloadable_kind(t: torch.Tensor) -> str | None:
    if t.layout != torch.strided:
        return f"a {str(t.layout).removeprefix('torch.')} tensor"
    if t.is_quantized:
        return "a quantized tensor"
    if getattr(t, "is_nested", False):
        return "a nested tensor"
    if t.is_meta:
        return "a meta tensor (shape only, no values)"
    if t.is_complex():
        return "a complex tensor"
    return None


def classifier_classes(state_dict: dict[str, torch.Tensor]) -> int | None:
    """Number of classes of the last 2-D weight (the classifier), if there is one."""
    weights = [v for k, v in state_dict.items() if k.endswith("weight") and v.ndim == 2]
    return int(weights[-1].shape[0]) if weights else None


def load_weights(model: nn.Module, state_dict: dict[str, torch.Tensor], source: str) -> None:
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    if missing or unexpected:
        detail = f"missing {missing[:3]}" if missing else f"unexpected {unexpected[:3]}"
        raise ModelError(
            f"weights {source} do not match the model ({len(missing)} missing, "
            f"{len(unexpected)} unexpected keys, e.g. {detail}); pass weights saved from this model."
        )
    for k, v in state_dict.items():
        if own[k].shape != v.shape:
            raise ModelError(
                f"weights {source}: {k} has shape {tuple(v.shape)} but the model expects "
                f"{tuple(own[k].shape)}; the weights belong to another model or class count."
            )
        if own[k].is_floating_point() and not v.is_floating_point():  # loading would truncate, silently
            raise ModelError(
                f"weights {source}: {k} holds {str(v.dtype).removeprefix('torch.')} values where the "
                f"model has {str(own[k].dtype).removeprefix('torch.')}; save the float weights."
            )
    try:
        model.load_state_dict(state_dict)
    except (RuntimeError, TypeError, ValueError) as err:
        raise ModelError(
            f"weights {source} cannot be loaded into the model ({one_line(err, 200, whole=True)}); pass weights "
            "saved from this model."
        ) from None
