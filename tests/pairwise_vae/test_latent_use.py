"""The latent carries the conformation: after a short overfit on two basins, different codes decode differently."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pairwise_helpers import make_model
from pairwise_vae.evaluation.metrics import dihedrals, find_backbone
from pairwise_vae.geometry import kabsch_rmsd


def two_basins(aib9, per_basin: int = 8) -> torch.Tensor:
    """(2 per_basin, 58, 3) centred frames: right-handed helices, then frames with at least three phi of each sign."""
    phi = dihedrals(aib9.coords, find_backbone(aib9.topology).phi)
    helices = np.flatnonzero((phi < 0).all(axis=1))
    unfolded = np.flatnonzero(((phi > 0).sum(axis=1) >= 3) & ((phi < 0).sum(axis=1) >= 3))
    picks = [basin[np.linspace(0, len(basin) - 1, per_basin).astype(int)] for basin in (helices, unfolded)]
    frames = torch.from_numpy(aib9.coords[np.concatenate(picks)])
    return frames - frames.mean(dim=1, keepdim=True)


@pytest.mark.slow  # 250 optimiser steps: about 30 CPU-seconds
def test_the_latent_does_not_collapse_on_two_basins(aib9):
    frames = two_basins(aib9)
    assert kabsch_rmsd(frames[:8].mean(0, keepdim=True), frames[8:].mean(0, keepdim=True)) > 1.0
    model = make_model(aib9)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    torch.manual_seed(0)
    for _ in range(250):
        terms = model.loss(frames, beta=1e-4)
        optimizer.zero_grad()
        terms.total.backward()
        optimizer.step()
    with torch.no_grad():
        mu, _ = model.encode(frames)
        decoded = model.decode(mu)
    basin = torch.arange(16) >= 8
    separation = (mu[basin].mean(0) - mu[~basin].mean(0)).norm() / mu.std(0).norm()
    assert separation > 0.5, "the two basins should have different latent codes"
    active_units = int((mu.var(dim=0) > 0.01).sum())
    assert active_units >= 1, "a collapsed latent has no active unit"
    apart = kabsch_rmsd(frames[:8], frames[8:], allow_reflection=True).mean()
    across = kabsch_rmsd(decoded[:8], decoded[8:], allow_reflection=True).mean()
    within = kabsch_rmsd(decoded, frames, allow_reflection=True).mean()
    assert across > 0.25 * apart and within < 0.6 * apart, (
        f"codes of the two basins decode to different structures: decoded {across:.2f} A apart, "
        f"inputs {apart:.2f} A, reconstructions {within:.2f} A from their inputs"
    )
