"""`make train-both` runs the two trainings at once, each in its own run folder and log.

Slow: `make train-both` syncs the environment (uv sync) and starts two training processes.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow
TINY = (
    "--epochs 1 --batch-size 8 --warmup-steps 2 --wandb disabled --device cpu --latent-dim 4 "
    "--encoder-hidden-channels 16 --encoder-num-layers 2 --encoder-num-heads 2 --encoder-num-rbf 8 "
    "--decoder-hidden-channels 16 --decoder-num-layers 2 --decoder-pair-channels 16 --no-compile --precision fp32 "
    "--max-frames 16"
)


def tiny_dataset(tmp_path: Path) -> Path:
    with np.load(ROOT / "packages/bond_vae/src/bond_vae/data/resources/aib9.npz") as archive:
        arrays = {key: archive[key] for key in archive.files}
    arrays["coords"] = arrays["coords"][:48]
    for per_frame in ("replica", "temperature_k"):
        arrays.pop(per_frame, None)
    np.savez(tmp_path / "tiny.npz", **arrays)
    return tmp_path / "tiny.npz"


def make_train_both(tmp_path: Path, *variables: str) -> subprocess.CompletedProcess:
    data = tiny_dataset(tmp_path)
    return subprocess.run(
        [
            "make",
            "--no-print-directory",
            "-C",
            str(ROOT),
            "train-both",
            f"RUNS_DIR={tmp_path / 'runs'}",
            f"ARGS=--data {data} {TINY}",
            *variables,
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def test_train_both_writes_two_separate_runs(tmp_path):
    result = make_train_both(tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    bond_runs = list((tmp_path / "runs" / "bond_vae").iterdir())
    pairwise_runs = list((tmp_path / "runs" / "pairwise_vae").iterdir())
    assert len(bond_runs) == 1 and len(pairwise_runs) == 1
    for run in bond_runs + pairwise_runs:
        assert (run / "last.pt").is_file() and (run / "metrics.jsonl").is_file()
    logs = list((tmp_path / "runs").glob("train-both-*/*.log"))
    assert sorted(log.name for log in logs) == ["bond_vae.log", "pairwise_vae.log"]
    assert "bond_vae" in (logs[0].parent / "bond_vae.log").read_text()
    assert "pairwise_vae" in (logs[0].parent / "pairwise_vae.log").read_text()
    assert "bond_vae finished" in result.stdout and "pairwise_vae finished" in result.stdout


def test_train_both_fails_when_one_training_fails(tmp_path):
    result = make_train_both(tmp_path, "PAIRWISE_ARGS=--epochs 0")
    assert result.returncode != 0
    assert "pairwise_vae FAILED" in result.stderr
    assert "--epochs must be at least 1" in result.stderr
    assert "bond_vae finished" in result.stdout
