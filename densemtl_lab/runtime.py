"""Process-level tuning for training and benchmarks: device choice, native bf16 and the CPU allocator.

On the CPU, glibc's malloc hands buffers above its mmap threshold back to the kernel when they are freed
and page-faults them in again at the next step. A DenseMTL training step allocates and frees the same
large activations every step, so raising the threshold (and not trimming the heap) keeps them mapped:
the reference model's 256x512 training step ran 1.6-1.9x faster on a 2-core CPU
(docs/benchmarks.md, "Training on the CPU").
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os

import torch

_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_tuned = False


@functools.cache
def _libc() -> ctypes.CDLL | None:
    """The C library, or None where there is none to load (then the allocator is left alone)."""
    name = ctypes.util.find_library("c")
    try:
        return None if name is None else ctypes.CDLL(name)
    except OSError:
        return None


def tune_cpu_allocator() -> bool:
    """Keep freed large buffers mapped (glibc only). Returns True when the allocator was tuned.

    Safe to call more than once; does nothing on non-glibc systems or when the user set
    DENSEMTL_NO_MALLOC_TUNING=1.
    """
    global _tuned
    if _tuned:
        return True
    if os.environ.get("DENSEMTL_NO_MALLOC_TUNING") == "1":
        return False
    mallopt = getattr(_libc(), "mallopt", None)
    if mallopt is None:
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    # Serve large blocks from the heap (never mmap) and never give the top of the heap back.
    ok = mallopt(_M_MMAP_MAX, 0) == 1 and mallopt(_M_TRIM_THRESHOLD, 2**30) == 1
    _tuned = ok
    return ok


def release_free_heap() -> bool:
    """Give the heap's free memory back to the system (glibc's malloc_trim). Returns True when it did.

    The tuned allocator keeps freed blocks mapped, which is what a training step wants but not what a
    one-off copy leaves behind: moving a model to channels_last frees its float32 weights in the old
    layout (444 MB at the paper size), which then stay in the process's RSS until the steps reuse them
    (the paper model started its steps 232 MiB higher at 128x256; docs/benchmarks.md).
    """
    malloc_trim = getattr(_libc(), "malloc_trim", None)
    return malloc_trim is not None and malloc_trim(0) == 1


def native_cpu_bf16() -> bool:
    """Whether this CPU computes bf16 matrix products natively (Intel AMX, or AVX512-BF16), as torch reports."""
    checks = (getattr(torch.cpu, "_is_amx_tile_supported", None), getattr(torch.cpu, "_is_avx512_bf16_supported", None))
    return any(check() for check in checks if check is not None)


def select_device(preference: str = "auto") -> torch.device:
    """`auto`: CUDA when present, else MPS, else CPU. Otherwise the named device, checked."""
    if preference == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(preference)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={preference!r} asked for CUDA but none is available; use 'auto' or 'cpu'")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device={preference!r} asked for MPS but none is available; use 'auto' or 'cpu'")
    return device
