"""`make train-bond GPUS=...` / `make train-pairwise GPUS=...` pick the GPUs and one process per GPU."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def dry_run(*arguments: str) -> str:
    """The training command `make` would run (the last line of a dry run)."""
    result = subprocess.run(
        ["make", "--no-print-directory", "-n", "-C", str(ROOT), *arguments],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return result.stdout.strip().splitlines()[-1]


@pytest.mark.parametrize(
    ("target", "command"), [("train-bond", "bond-vae-train"), ("train-pairwise", "pairwise-vae-train")]
)
def test_gpus_sets_the_visible_gpus_and_the_process_count(target, command):
    line = dry_run(target, "GPUS=0,2,3", "ARGS=--epochs 2")
    assert line.startswith("CUDA_VISIBLE_DEVICES=0,2,3 ")
    assert f"{command} " in line and "--devices 3 --epochs 2" in line
    plain = dry_run(target)
    assert "CUDA_VISIBLE_DEVICES" not in plain and "--devices" not in plain
