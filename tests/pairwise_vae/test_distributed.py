"""Data-parallel training: per-rank batches, two gloo processes in step, --devices on the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch
from pairwise_helpers import TINY_MODEL_FLAGS
from pairwise_vae.checkpoint import load_checkpoint
from pairwise_vae.distributed import Ranks
from pairwise_vae.train import rank_slice

HERE = Path(__file__).resolve().parent


def test_ranks_split_each_global_batch_into_disjoint_slices():
    order = torch.randperm(50)
    for batch in range(2):
        slices = [rank_slice(order, batch, 6, Ranks(rank=r, world_size=4)) for r in range(4)]
        assert torch.equal(torch.cat(slices), order[batch * 24 : (batch + 1) * 24])
    assert torch.equal(rank_slice(order, 3, 6, Ranks()), order[18:24]), "one process takes the plain batches"


def test_two_gloo_ranks_hold_the_same_weights_after_a_step(tiny_npz, tmp_path):
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
               str(HERE / "ddp_step.py"), str(tiny_npz), str(tmp_path)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    rank0, rank1 = (torch.load(tmp_path / f"rank{r}.pt") for r in range(2))
    assert not set(rank0["frames"].tolist()) & set(rank1["frames"].tolist()), "each rank trains on its own frames"
    for name, value in rank0["after"].items():
        assert torch.equal(value, rank1["after"][name]), name
        assert torch.equal(rank0["before"][name], rank1["before"][name]), name
    changed = [name for name, value in rank0["after"].items() if not torch.equal(value, rank0["before"][name])]
    assert len(changed) > 10, "the step updated the weights"


def test_devices_flag_trains_on_two_processes_and_resumes(tiny_npz, tmp_path):
    flags = ["--data", str(tiny_npz), "--batch-size", "4", "--warmup-steps", "2", "--wandb", "disabled", "--device", "cpu",
             "--no-compile", "--output-dir", str(tmp_path / "runs"), "--run-name", "ddp", *TINY_MODEL_FLAGS]
    first = subprocess.run([sys.executable, "-m", "pairwise_vae", "--devices", "2", "--epochs", "1", *flags],
                           capture_output=True, text=True, timeout=300, check=False)
    assert first.returncode == 0, first.stderr[-3000:]
    run = tmp_path / "runs" / "ddp"
    assert [p.name for p in (tmp_path / "runs").iterdir()] == ["ddp"], "one run folder, written by rank 0"
    assert json.loads((run / "config.json").read_text())["devices"] == 2
    after_one_epoch = load_checkpoint(run / "last.pt")
    assert after_one_epoch["step"] == 5, "43 training frames / (2 ranks x 4) = 5 steps"

    resumed = subprocess.run([sys.executable, "-m", "pairwise_vae", "--resume", str(run / "last.pt"), "--epochs", "2"],
                             capture_output=True, text=True, timeout=300, check=False)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert load_checkpoint(run / "last.pt")["step"] == 10
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records if r["split"] == "train"] == [1, 2]
