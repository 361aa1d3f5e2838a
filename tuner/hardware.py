"""What this machine is: a fingerprint that makes latencies comparable, and capability probes."""

from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
from importlib import metadata
from typing import Any

# ISA features that change which kernels a runtime picks (and so its latency).
_ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8", "avx_vnni")
_LIBRARIES = ("torch", "torch-pruning", "onnxruntime", "onnxruntime-gpu", "onnx", "optuna", "openvino")


@functools.lru_cache(maxsize=1)
def _cpuinfo() -> tuple[str, frozenset[str]]:
    model, flags = platform.processor() or platform.machine(), frozenset()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name" and model in ("", platform.machine(), platform.processor()):
                    model = value.strip()
                elif key == "flags" and not flags:
                    flags = frozenset(value.split())
    except OSError:  # not Linux: the fingerprint just carries less detail
        pass
    return model, flags


def cpu_model() -> str:
    return _cpuinfo()[0]


def isa_flags() -> list[str]:
    flags = _cpuinfo()[1]
    return [f for f in _ISA_FLAGS if f in flags]


def has_cpu_bf16() -> bool:
    """True when the CPU computes bf16 natively (else bf16 is emulated and slow)."""
    flags = _cpuinfo()[1]
    return "avx512_bf16" in flags or "amx_bf16" in flags


def has_cpu_vnni() -> bool:
    """True when int8 dot products accumulate in 32 bits (VNNI); without it AVX2 kernels saturate at 16."""
    flags = _cpuinfo()[1]
    return "avx512_vnni" in flags or "avx_vnni" in flags or "amx_int8" in flags


def cores() -> int:
    """Cores this process may run on (affinity aware, as the CI container restricts them)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS
        return os.cpu_count() or 1


@functools.lru_cache(maxsize=1)
def gpu_name() -> str | None:
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None


def library_versions() -> dict[str, str]:
    versions = {}
    for name in _LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def fingerprint() -> dict[str, Any]:
    """Everything that makes two latency figures comparable (or not)."""
    return {
        "cpu": cpu_model(),
        "isa": isa_flags(),
        "cores": cores(),
        "gpu": gpu_name(),
        "python": platform.python_version(),
        "libraries": library_versions(),
    }


def fingerprint_id(fp: dict[str, Any] | None = None) -> str:
    """A short id of the fingerprint: equal ids mean comparable latencies."""
    fp = fp if fp is not None else fingerprint()
    return hashlib.sha256(json.dumps(fp, sort_keys=True).encode()).hexdigest()[:12]
