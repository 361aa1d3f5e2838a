"""What this machine is: a fingerprint that makes latencies comparable, and capability probes."""

from __future__ import annotations

import functools
import glob
import hashlib
import json
import os
import platform
import sys
from importlib import metadata
from pathlib import Path
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


def onednn_isa_cap() -> str | None:
    """The ISA oneDNN is capped at (``ONEDNN_MAX_CPU_ISA``, as a deployment on an older fleet sets it), upper case;
    None when uncapped. OpenVINO's CPU plugin and torch's oneDNN ops honour it; ONNX Runtime's MLAS does not."""
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA")
    return cap.strip().upper() if cap and cap.strip() else None


# oneDNN ISA caps without native bf16: under them oneDNN emulates bf16, in OpenVINO's CPU plugin and in torch's CPU
# convolutions alike (measured here under AVX512_CORE_VNNI, as on a VNNI-only host, 1 thread: OpenVINO mobilenet_v2
# @128 px bf16 5.89 ms instead of 0.88; torch four 64-channel 3x3 convolutions at 56 px bf16 28.1 ms instead of 2.8).
_NO_BF16_CAPS = ("SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE", "AVX512_CORE_VNNI")


def native_bf16() -> bool:
    """The CPU computes bf16 natively and oneDNN may use it (its ISA cap, if set, includes bf16)."""
    return has_cpu_bf16() and (onednn_isa_cap() or "ALL") not in _NO_BF16_CAPS


def bf16_refusal(placement: str) -> str | None:
    """Why ``placement`` (a oneDNN-backed CPU runtime) should not run bf16 here, or None where it runs natively."""
    if native_bf16():
        return None
    cap = onednn_isa_cap()
    return (
        f"bf16 on {placement} needs a CPU with AVX512-BF16 or AMX"
        + (f" and a oneDNN ISA cap that has it (ONEDNN_MAX_CPU_ISA={cap})" if cap else "")
        + "; here it would be emulated, slowly"
    )


def has_cpu_vnni() -> bool:
    """True when int8 dot products accumulate in 32 bits (VNNI); without it AVX2 kernels saturate at 16."""
    flags = _cpuinfo()[1]
    return "avx512_vnni" in flags or "avx_vnni" in flags or "amx_int8" in flags


def channel_multiple() -> int:
    """The channel multiple pruned layers keep, for this CPU's kernels. With AMX, 32: measured by
    benchmarks/channel_rounding.py (ResNet18 at 128 px pruned 0.4, OpenVINO int8, 1 thread: 8 -> 0.767 ms,
    16 -> 0.675, 32 -> 0.625, 64 -> 0.684; bf16 16 and 32 level). Otherwise the block width of oneDNN's
    channel-blocked layouts, which OpenVINO and ONNX Runtime run convolutions in: 16 on AVX-512, 8 on AVX2."""
    flags = _cpuinfo()[1]
    if "amx_int8" in flags or "amx_bf16" in flags:
        return 32
    return 16 if "avx512f" in flags else 8


def cores() -> int:
    """Cores this process may run on (affinity aware, as the CI container restricts them)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS
        return os.cpu_count() or 1


# What a GPU driver leaves on Linux: NVIDIA's kernel module (a container given a GPU has these too), WSL2's
# /dev/dxg, Jetson's /dev/nvhost-* or ROCm's /dev/kfd (a ROCm torch answers torch.cuda). Without any, no torch
# build can see a GPU, and importing torch (a second of CPU) only to hear so is left out: the parent process of a
# study needs torch for nothing else.
_GPU_DRIVER_PATHS = ("/proc/driver/nvidia", "/dev/nvidiactl", "/dev/nvidia0", "/dev/dxg", "/dev/kfd", "/dev/nvhost-*")


@functools.lru_cache(maxsize=1)
def cuda_available() -> bool:
    """Whether torch sees a CUDA (or ROCm) GPU; asked of torch only where a driver is present."""
    if sys.platform == "linux" and not any(glob.glob(p) for p in _GPU_DRIVER_PATHS):
        return False
    import torch

    return torch.cuda.is_available()


@functools.lru_cache(maxsize=1)
def gpu_name() -> str | None:
    if not cuda_available():
        return None
    import torch

    return torch.cuda.get_device_name(0)


def library_versions(*names: str) -> dict[str, str]:
    """Installed versions of ``names`` (default: the runtimes and libraries that shape latency); missing ones left out."""
    versions = {}
    for name in names or _LIBRARIES:
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
        **({"onednn_isa_cap": onednn_isa_cap()} if onednn_isa_cap() else {}),  # it changes OpenVINO's kernels
    }


def fingerprint_id(fp: dict[str, Any] | None = None) -> str:
    """A short id of the fingerprint: equal ids mean comparable latencies."""
    fp = fp if fp is not None else fingerprint()
    return hashlib.sha256(json.dumps(fp, sort_keys=True).encode()).hexdigest()[:12]


# ---------------------------------------------------------------- bounds before allocation

# A CNN's activations, summed over the layers alive at once in an inference (and a training step's saved ones),
# run to tens of times its input: ResNet18 at 224 px keeps ~25x the input in flight for inference and ~60x for a
# training step. 64x the float32 input batch is the estimate a candidate is checked against before any work.
ACTIVATION_FACTOR = 64
MEMORY_SHARE = 0.5  # a batch may take at most half the memory available now (the rest: weights, runtimes, the OS)


def available_memory() -> int | None:
    """Bytes of memory available to this process now: MemAvailable, capped by a cgroup (container) limit;
    None where neither can be read (then nothing is refused on memory)."""
    found: list[int] = []
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    found.append(int(line.split()[1]) * 1024)
                    break
    except (OSError, ValueError, IndexError):
        pass
    for limit_file, usage_file in (
        ("memory.max", "memory.current"),  # cgroup v2, then v1: a container's limit
        ("memory/memory.limit_in_bytes", "memory/memory.usage_in_bytes"),
    ):
        try:
            limit = Path("/sys/fs/cgroup", limit_file).read_text().strip()
            if limit != "max" and int(limit) < 2**60:  # v1 writes "no limit" as a huge number
                found.append(max(0, int(limit) - int(Path("/sys/fs/cgroup", usage_file).read_text().strip())))
            break
        except (OSError, ValueError):
            continue
    if not found:
        try:
            found.append(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (ValueError, OSError, AttributeError):
            return None
    return min(found)


def threads_per_stream(threads: int, streams: int = 1) -> int:
    """A candidate's intra-op threads per stream: as given, or (0) this machine's cores shared out among its streams."""
    return threads or max(1, cores() // streams)


def check_fits(
    batch_size: int, resolution: int, threads: int = 0, memory: int | None = -1, streams: int = 1, requests: int = 1
) -> str | None:
    """Why a candidate's batch at this resolution, or its threads x streams, does not fit this machine (None: it fits).
    Checked before any work: a refusal in one line, not a 30 GB allocation or an oversubscribed hang.
    ``memory``: the bytes available (default: read now; None: unknown, not checked). Under load each of ``requests``
    in flight holds its input batch, and each of ``streams`` running ones its activations too."""
    cpus = cores()
    if threads > cpus:
        return (
            f"threads: {threads} is more than this machine's {cpus} CPUs; use at most {cpus} "
            "(0 = all of them; in a search space, `high: cores`)."
        )
    if streams > cpus:
        return (
            f"streams: {streams} is more than this machine's {cpus} CPUs; each stream needs a CPU of its own: use "
            f"at most {cpus}."
        )
    if threads * streams > cpus:
        return (
            f"threads x streams: {threads} x {streams} = {threads * streams} is more than this machine's {cpus} "
            f"CPUs, so the streams would contend for them; use threads <= {cpus // streams} (0 = the CPUs shared "
            "out among the streams)."
        )
    memory = available_memory() if memory == -1 else memory
    if memory is None:
        return None
    batch = batch_size * 3 * resolution * resolution * 4  # one float32 input batch
    budget = int(memory * MEMORY_SHARE)
    served = f" x {requests} requests in flight" if requests > 1 else ""
    for what, need in (
        (f"its input batch{served} alone", batch * max(1, requests)),
        (
            f"an estimated {ACTIVATION_FACTOR}x that in activations"
            + (f" per stream ({streams})" if streams > 1 else ""),
            batch * (ACTIVATION_FACTOR * streams + max(0, requests - streams)),
        ),
    ):
        if need > budget:
            return (
                f"batch_size {batch_size}{served} at {resolution} px needs {gib(need)} for {what}, more than "
                f"half of the {gib(memory)} of memory available; use a smaller batch_size"
                + (", fewer requests" if requests > 1 else "")
                + " or --resolution."
            )
    return None


def gib(n: int) -> str:
    """Bytes as GiB (or MiB below one), for a refusal."""
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"
