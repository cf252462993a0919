"""Which precision is fast on this machine.

bf16 autocast is only a speed-up where the CPU has bf16 kernels: oneDNN runs bf16 convolutions on
AVX-512 (natively with AVX512-BF16/AMX, emulated on AVX-512 core). On an AVX2-only CPU PyTorch
falls back to its reference loops: on a 2-core AVX2 AMD EPYC a 3x3 convolution ran 4-8x and a
training step 12x SLOWER than in float32 (BENCHMARKS.md "Precision"). `auto` settings ask here
instead of assuming.
"""

from __future__ import annotations

import functools

import torch


@functools.lru_cache(maxsize=None)
def cpu_bf16_is_fast() -> bool:
    """True when this CPU runs bf16 convolutions in oneDNN (AVX-512 or better), not reference loops."""
    check = getattr(getattr(torch.ops, "mkldnn", None), "_is_mkldnn_bf16_supported", None)
    if check is not None:
        try:
            return bool(check())
        except RuntimeError:  # a build without oneDNN
            return False
    return torch.backends.cpu.get_cpu_capability().startswith("AVX512")


def auto_mixed_precision() -> str:
    """accelerate's mixed_precision for train.mixed_precision = "auto"."""
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "no"
    return "bf16" if cpu_bf16_is_fast() else "no"


def cpu_autocast():
    """bf16 autocast for CPU-side helpers (classifiers trained for evaluation) where it is faster."""
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=cpu_bf16_is_fast())
