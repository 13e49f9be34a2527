"""Where and how a command runs: seeding, device and numeric precision."""

from __future__ import annotations

import random
import sys
from pathlib import Path

import numpy as np
import torch

from bond_vae.config import ConfigError

BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


PRECISIONS = ("auto", "bf16", "fp32")


PRECISION_HELP = (
    "bf16: bfloat16 autocast of the model (parameters and sums stay float32); fp32; "
    "auto: bf16 on CUDA and on CPUs with native bfloat16 arithmetic (AVX-512 BF16 or AMX), fp32 on others"
)


def cpu_has_native_bf16(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Whether this CPU computes in bfloat16 natively (AVX-512 BF16 or AMX), read from ``cpuinfo``'s
    flags; False where that file does not exist (not Linux) or names neither."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return False
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return any(flag in flags for flag in BF16_CPU_FLAGS)


def uses_bf16(precision: str, device: torch.device) -> bool:
    """Whether ``--precision`` (auto, bf16 or fp32) means bfloat16 autocast on ``device``: auto is
    bf16 on CUDA and on CPUs with native bfloat16 arithmetic, fp32 elsewhere. bf16 asked for on a
    CPU without it is obeyed, with a warning on stderr: emulated, it is several times slower."""
    if precision == "auto":
        return device.type == "cuda" or (device.type == "cpu" and cpu_has_native_bf16())
    if precision == "bf16" and device.type == "cpu" and not cpu_has_native_bf16():
        print(
            "warning: --precision bf16 on a CPU without native bfloat16 arithmetic (no AVX-512 BF16 or AMX): "
            "PyTorch emulates it, about ten times slower than fp32 here (--precision auto chooses fp32)",
            file=sys.stderr,
        )
    return precision == "bf16"


def resolve_device(name: str) -> torch.device:
    """'auto' -> first CUDA GPU if present else CPU; otherwise 'cpu', 'cuda' or 'cuda:i'.

    Raises:
        ConfigError: the device is unknown or not available here.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device {name!r} requested but CUDA is not available on this machine")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(
                f"device {name!r} requested but only {torch.cuda.device_count()} CUDA device(s) are visible"
            )
    elif device.type != "cpu":
        raise ConfigError(f"unsupported device {name!r}; use auto, cpu, cuda or cuda:N")
    return device
