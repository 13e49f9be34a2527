"""Relaxation of decoded conformations (``--relax`` of ``sample`` and ``evaluate``).

Structure predictors end with a restrained energy minimisation that repairs local geometry and
clashes without changing the fold (AlphaFold's Amber relax). This is the same idea with the two
terms the decoder gets most wrong on its own: every covalent bond pulled to its mean length in
the training data, and every two atoms at least 4 bonds apart pushed to at least the model's
steric distance, while a weak harmonic restraint holds each atom near its decoded position::

    E(x) = sum_bonds (d_ij - b_ij)^2 + sum_far max(0, D - d_ij)^2 + k sum_i |x_i - x0_i|^2   (Angstrom^2)

minimised by L-BFGS from the decoded ``x0``, molecule by molecule (the energies of a batch are a
sum of independent terms). Distances and a restraint to the start commute with rotations,
reflections and translations, so the relaxed output keeps the handedness the parity rule gave it.
Bond angles and torsions are left to the model: pulling 1-3 distances to their means as well
moved helices across the handedness classes (measured; see the README).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from pairwise_vae.bond_graph import NONBONDED_MIN_BONDS_APART, hop_counts
from pairwise_vae.geometry import bond_lengths
from pairwise_vae.model.vae import MolecularVAEMSE
from pairwise_vae.sampling.inference import run_split

RESTRAINT = 0.01  # k, per Angstrom^2 of displacement: weak next to a bond term of weight 1
RELAX_HELP = (
    "relax each output conformation: bonds pulled to their mean length in the training data, atoms at least "
    "4 bonds apart pushed to the model's --steric-distance, a weak restraint to the decoded positions "
    "(L-BFGS; like the relaxation structure predictors run on their output); reads the run's training data"
)
RELAX_ITERATIONS_HELP = "L-BFGS iterations of --relax per batch"


@dataclass(frozen=True)
class RelaxationTargets:
    """What :func:`relax` pulls towards.

    ``bonds``: (n_bonds, 2) atom indices; ``bond_lengths``: (n_bonds,) Angstrom; ``far_pairs``:
    (P, 2) atoms at least ``NONBONDED_MIN_BONDS_APART`` bonds apart; ``steric_distance``: Angstrom.
    """

    bonds: torch.Tensor
    bond_lengths: torch.Tensor
    far_pairs: torch.Tensor
    steric_distance: float


def relaxation_targets(train_frames: np.ndarray, bonds: np.ndarray, steric_distance: float) -> RelaxationTargets:
    """Targets from the (F, N, 3) training frames (Angstrom): their mean bond lengths (CPU, float64, as
    :func:`relax` computes)."""
    bonds = np.asarray(bonds, dtype=np.int64)
    frames = torch.from_numpy(np.asarray(train_frames, dtype=np.float64))
    index = torch.from_numpy(bonds)
    lengths = bond_lengths(frames, index).mean(dim=0)
    far = np.argwhere(np.triu(hop_counts(bonds, frames.shape[1]) >= NONBONDED_MIN_BONDS_APART, k=1))
    return RelaxationTargets(index, lengths, torch.from_numpy(far), steric_distance)


def run_relaxation_targets(
    checkpoint: dict[str, Any], checkpoint_path: Path, model: MolecularVAEMSE
) -> RelaxationTargets:
    """Targets of a checkpoint's model: the mean bond lengths of its run's training split
    (:func:`~pairwise_vae.sampling.inference.run_split`) and its steric distance."""
    _, train, _ = run_split(checkpoint, checkpoint_path)
    return relaxation_targets(train, model.bonds.cpu().numpy(), model.config.steric_distance)


def relaxation_energy(positions: torch.Tensor, start: torch.Tensor, targets: RelaxationTargets) -> torch.Tensor:
    """E summed over a batch: (B, N, 3) positions and their (B, N, 3) decoded start -> scalar, Angstrom^2."""
    far = targets.far_pairs
    far_distances = (positions[:, far[:, 0]] - positions[:, far[:, 1]]).norm(dim=-1)
    return (
        (bond_lengths(positions, targets.bonds) - targets.bond_lengths).pow(2).sum()
        + (targets.steric_distance - far_distances).clamp(min=0.0).pow(2).sum()
        + RESTRAINT * (positions - start).pow(2).sum()
    )


def relax_batch(start: torch.Tensor, targets: RelaxationTargets, iterations: int) -> torch.Tensor:
    """Minimise E from (B, N, 3) decoded positions (Angstrom) with at most ``iterations`` L-BFGS
    iterations; returns the relaxed (B, N, 3) positions in the dtype of ``start``."""
    positions = start.clone().requires_grad_()
    optimizer = torch.optim.LBFGS([positions], max_iter=iterations, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        energy = relaxation_energy(positions, start, targets)
        energy.backward()
        return energy

    with torch.enable_grad():
        optimizer.step(closure)
    return positions.detach()


def relax(coords: np.ndarray, targets: RelaxationTargets, iterations: int, batch_size: int) -> np.ndarray:
    """Relax (K, N, 3) conformations (Angstrom) batch by batch with a progress bar; returns (K, N, 3) float32.

    Each batch takes at most ``iterations`` L-BFGS iterations (:func:`relax_batch`), in float64 on the CPU.
    """
    batches = [coords[start : start + batch_size] for start in range(0, len(coords), batch_size)]
    relaxed = [
        relax_batch(torch.from_numpy(np.asarray(batch, dtype=np.float64)), targets, iterations).float()
        for batch in tqdm(batches, desc="relaxing", unit="batch", disable=len(batches) == 1)
    ]
    return torch.cat(relaxed).numpy()
