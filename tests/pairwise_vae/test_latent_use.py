"""The latent carries the conformation: after a short overfit on two basins, different codes decode differently."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pairwise_helpers import make_model
from pairwise_vae.evaluation.metrics import dihedrals, find_backbone
from pairwise_vae.geometry import kabsch_rmsd
from pairwise_vae.training.config import TrainConfig

STEPS = 300  # optimiser steps of the overfit: with clipped gradients all of seeds 0-2 had learnt both basins by then


def two_basins(aib9, per_basin: int = 8) -> torch.Tensor:
    """(2 per_basin, 58, 3) centred frames: right-handed helices (replica 0, 300 K), then frames with at least three
    phi of each sign (replica 4, the 300 K helix that changes hand halfway), evenly spaced in time."""
    phi = dihedrals(aib9.coords, find_backbone(aib9.topology).phi)
    labels = aib9.trajectory_labels()
    helices = np.flatnonzero((phi < 0).all(axis=1) & (labels == 0))
    unfolded = np.flatnonzero(((phi > 0).sum(axis=1) >= 3) & ((phi < 0).sum(axis=1) >= 3) & (labels == 4))
    picks = [basin[np.linspace(0, len(basin) - 1, per_basin).astype(int)] for basin in (helices, unfolded)]
    frames = torch.from_numpy(aib9.coords[np.concatenate(picks)])
    return frames - frames.mean(dim=1, keepdim=True)


def overfit_uses_the_latent(aib9, frames: torch.Tensor, seed: int) -> str | None:
    """Overfit a tiny model on the two basins for STEPS steps, its gradients clipped as the trainer clips them
    (unclipped, a learning rate of 3e-3 throws the tiny model back onto the mean structure); None when its latent
    tells them apart and its codes decode to the two structures, else what failed."""
    model = make_model(aib9)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    torch.manual_seed(seed)
    for _ in range(STEPS):
        terms = model.loss(frames, beta=1e-4)
        optimizer.zero_grad()
        terms.total.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), TrainConfig.grad_clip)
        optimizer.step()
    with torch.no_grad():
        mu, _ = model.encode(frames)
        decoded = model.decode(mu)
    basin = torch.arange(16) >= 8
    separation = (mu[basin].mean(0) - mu[~basin].mean(0)).norm() / mu.std(0).norm()
    if separation <= 0.5:
        return f"seed {seed}: the two basins have the same latent codes (separation {separation:.2f})"
    active_units = int((mu.var(dim=0) > 0.01).sum())
    if active_units < 1:
        return f"seed {seed}: a collapsed latent, no active unit (largest variance {mu.var(dim=0).max():.4f})"
    apart = kabsch_rmsd(frames[:8], frames[8:], allow_reflection=True).mean()
    across = kabsch_rmsd(decoded[:8], decoded[8:], allow_reflection=True).mean()
    within = kabsch_rmsd(decoded, frames, allow_reflection=True).mean()
    if not (across > 0.25 * apart and within < 0.6 * apart):
        return (
            f"seed {seed}: codes of the two basins decode {across:.2f} A apart, inputs {apart:.2f} A, "
            f"reconstructions {within:.2f} A from their inputs"
        )
    return None


@pytest.mark.slow  # 300 optimiser steps: about a CPU-minute
def test_the_latent_does_not_collapse_on_two_basins(aib9):
    frames = two_basins(aib9)
    assert kabsch_rmsd(frames[:8].mean(0, keepdim=True), frames[8:].mean(0, keepdim=True)) > 1.0
    failure = overfit_uses_the_latent(aib9, frames, seed=0)
    assert failure is None, failure
