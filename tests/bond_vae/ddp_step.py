"""One data-parallel training step, run by torchrun from test_distributed.py.

    python -m torch.distributed.run --standalone --nproc-per-node 2 ddp_step.py DATA OUT

Each rank saves the frames it trained on and its weights before and after the step, and
after a second step whose batch holds a NaN on rank 1 only (which every rank must skip).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from bond_helpers import tiny_model_config
from bond_vae.data.dataset import load_dataset
from bond_vae.training.config import TrainConfig
from bond_vae.training.distributed import init_process_group, leave_process_group, ranks_from_environment
from bond_vae.training.loop import epoch_order, rank_slice, train_step
from bond_vae.training.train import build_run

data, out = Path(sys.argv[1]), Path(sys.argv[2])
ranks = ranks_from_environment()
init_process_group(ranks, torch.device("cpu"))
config = TrainConfig(data=data, batch_size=4, device="cpu", compile=False, wandb="disabled", model=tiny_model_config())
run = build_run(config, load_dataset(data), None, ranks)
before = {name: value.clone() for name, value in run.model.state_dict().items()}
frames = rank_slice(epoch_order(config.seed, 0, len(run.train_coords), run.device), 0, config.batch_size, ranks)
applied = train_step(run, run.train_coords[frames])[-1].item()
after = {name: value.clone() for name, value in run.model.state_dict().items()}
poisoned = run.train_coords[frames].clone()
if ranks.rank == 1:  # a non-finite batch on one rank only: every rank must skip the step
    poisoned[0, 0, 0] = float("nan")
skipped = 1.0 - train_step(run, poisoned)[-1].item()
payload = {"frames": frames, "before": before, "after": after, "after_poisoned": run.model.state_dict()}
torch.save(payload | {"applied": applied, "skipped": skipped}, out / f"rank{ranks.rank}.pt")
leave_process_group(ranks)
