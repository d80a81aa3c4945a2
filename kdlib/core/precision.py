"""Mixed precision on the CPU: the models' convolutions and matrix products in bfloat16 where the CPU computes
bfloat16 natively (AVX-512 BF16 or AMX), everything else in float32.

``KDLIB_PRECISION`` chooses, like ``KDLIB_THREADS`` chooses threads: ``auto`` (the default: bfloat16 autocast on
a CPU with native bfloat16, float32 otherwise), ``bf16`` (always on the CPU) or ``fp32`` (never). GPUs keep
float32. Only the forward passes are autocast: weights, optimiser state and gradients stay float32, and the losses
(``kdlib.core.losses``) turn their logits to float32 before any softmax, so soft targets at a high temperature keep
float32's resolution. Like the device, the precision is how a run is computed, not what it is: it is not part of a
run's key, and every stored run records it (``results.environment_info``).
"""

from __future__ import annotations

import contextlib
import functools
import os
from pathlib import Path

import torch

from kdlib.errors import KDConfigError

__all__ = [
    "ENV", "PRECISIONS", "autocast_dtype", "cpu_flags", "cpu_has_native_bf16", "mixed_precision", "precision_label"
]

ENV = "KDLIB_PRECISION"
PRECISIONS: tuple[str, ...] = ("auto", "bf16", "fp32")


def precision_setting() -> str:
    """``KDLIB_PRECISION`` (default ``auto``), checked."""
    value = os.environ.get(ENV, "auto").strip().lower() or "auto"
    if value not in PRECISIONS:
        raise KDConfigError(ENV, os.environ[ENV], f"one of {', '.join(PRECISIONS)}, e.g. {ENV}=fp32")
    return value


# The CPU flags (Linux /proc/cpuinfo) of instructions that compute bfloat16 products natively. oneDNN's own check
# (torch.ops.mkldnn._is_mkldnn_bf16_supported) says yes on any AVX-512 CPU, where bfloat16 is emulated and several
# times slower than float32; so the flags decide.
NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16", "bf16"})


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    """The first processor's feature flags (x86 ``flags``, ARM ``Features``); empty where there is no cpuinfo."""
    try:
        text = cpuinfo.read_text(errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name.strip().lower() in ("flags", "features"):
            return frozenset(value.split())
    return frozenset()


@functools.cache
def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX-512 BF16, AMX or ARM BF16) and oneDNN can use it; an
    AVX-512 CPU without them would emulate bfloat16, slower than float32."""
    return bool(NATIVE_BF16_FLAGS & cpu_flags()) and onednn_takes_bf16()


def onednn_takes_bf16() -> bool:
    """Whether this torch's oneDNN runs bfloat16 kernels on this CPU at all (natively or emulated)."""
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """The autocast type for forward passes on ``device``: bfloat16 on the CPU as ``KDLIB_PRECISION`` says, else
    None (float32)."""
    setting = precision_setting()
    if device.type != "cpu" or setting == "fp32":
        return None
    if setting == "bf16" or cpu_has_native_bf16():
        return torch.bfloat16
    return None


def precision_label(device: torch.device) -> str:
    """``"bf16 autocast"`` or ``"fp32"``: how forward passes on ``device`` are computed."""
    return "bf16 autocast" if autocast_dtype(device) is not None else "fp32"


def mixed_precision(device: torch.device) -> contextlib.AbstractContextManager:
    """A context that autocasts its block's forward passes on ``device`` (:func:`autocast_dtype`; a no-op in
    float32). The setting is read once, here: a training loop makes it once and enters it at every step."""
    dtype = autocast_dtype(device)
    return contextlib.nullcontext() if dtype is None else torch.autocast(device.type, dtype=dtype)
