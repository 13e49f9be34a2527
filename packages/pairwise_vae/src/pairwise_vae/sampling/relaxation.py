"""Relaxation of decoded conformations (``--relax`` of ``sample`` and ``evaluate``).

Structure predictors end with a restrained energy minimisation that repairs local geometry and
clashes without changing the fold (AlphaFold's Amber relax). This is the same idea with the two
terms the decoder gets most wrong on its own: every covalent bond pulled to its mean length in
the training data, and every two atoms at least 4 bonds apart pushed to at least the model's
steric distance, while a weak harmonic restraint holds each atom near its decoded position::

    E(x) = sum_bonds (d_ij - b_ij)^2 + sum_far max(0, D - d_ij)^2 + k sum_i |x_i - x0_i|^2   (Angstrom^2)

minimised by L-BFGS from the decoded ``x0``, each molecule on its own
(:mod:`pairwise_vae.sampling.lbfgs`): a molecule relaxes to the same positions whatever else is in
its batch. Distances and a restraint to the start commute with rotations, reflections and
translations, so the relaxed output keeps the handedness the parity rule gave it. Bond angles and
torsions are left to the model: pulling 1-3 distances to their means as well moved helices
across the handedness classes (measured; see the README).

The targets (:class:`RelaxationTargets`) are fitted to the training split when training ends and
stored in the checkpoint with the rest of the model's sampler (:mod:`pairwise_vae.sampling.sampler`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from pairwise_vae.bond_graph import NONBONDED_MIN_BONDS_APART, hop_counts
from pairwise_vae.geometry import bond_lengths
from pairwise_vae.sampling.lbfgs import minimise

RESTRAINT = 0.01  # k, per Angstrom^2 of displacement: weak next to a bond term of weight 1
RELAX_HELP = (
    "relax each sample: bonds pulled to their mean length in the training data, atoms at least 4 bonds apart "
    "pushed to the model's --steric-distance, a weak restraint to the decoded positions (L-BFGS per molecule, "
    "like the relaxation structure predictors run on their output; targets stored in the checkpoint)"
)
RELAX_ITERATIONS_HELP = "L-BFGS iterations of --relax per molecule (at most)"


@dataclass(frozen=True)
class RelaxationTargets:
    """What :func:`relax` pulls towards.

    ``bonds``: (n_bonds, 2) atom indices; ``bond_lengths``: (n_bonds,) mean lengths in the training data,
    Angstrom; ``far_pairs``: (P, 2) atoms at least ``NONBONDED_MIN_BONDS_APART`` bonds apart;
    ``steric_distance``: Angstrom.
    """

    bonds: torch.Tensor
    bond_lengths: torch.Tensor
    far_pairs: torch.Tensor
    steric_distance: float

    def to_record(self) -> dict[str, Any]:
        """The fitted targets as plain tensors and numbers (for the checkpoint)."""
        return {
            "bonds": self.bonds,
            "bond_lengths": self.bond_lengths,
            "far_pairs": self.far_pairs,
            "steric_distance": float(self.steric_distance),
        }

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> RelaxationTargets:
        """Inverse of :meth:`to_record` (tensors on the CPU in float64, as :func:`relax` computes)."""
        return cls(
            record["bonds"].long(),
            record["bond_lengths"].double(),
            record["far_pairs"].long(),
            float(record["steric_distance"]),
        )


def relaxation_targets(train_frames: np.ndarray, bonds: np.ndarray, steric_distance: float) -> RelaxationTargets:
    """Targets from the (F, N, 3) training frames (Angstrom): their mean bond lengths (CPU, float64, as
    :func:`relax` computes)."""
    bonds = np.asarray(bonds, dtype=np.int64)
    frames = torch.from_numpy(np.asarray(train_frames, dtype=np.float64))
    index = torch.from_numpy(bonds)
    lengths = bond_lengths(frames, index).mean(dim=0)
    far = np.argwhere(np.triu(hop_counts(bonds, frames.shape[1]) >= NONBONDED_MIN_BONDS_APART, k=1))
    return RelaxationTargets(index, lengths, torch.from_numpy(far), steric_distance)


def relaxation_energy(positions: torch.Tensor, start: torch.Tensor, targets: RelaxationTargets) -> torch.Tensor:
    """E of each molecule: (B, N, 3) positions and their (B, N, 3) decoded start -> (B,), Angstrom^2."""
    far = targets.far_pairs
    far_distances = (positions[:, far[:, 0]] - positions[:, far[:, 1]]).norm(dim=-1)
    return (
        (bond_lengths(positions, targets.bonds) - targets.bond_lengths).pow(2).sum(dim=1)
        + (targets.steric_distance - far_distances).clamp(min=0.0).pow(2).sum(dim=1)
        + RESTRAINT * (positions - start).pow(2).sum(dim=(1, 2))
    )


def relax_batch(start: torch.Tensor, targets: RelaxationTargets, iterations: int) -> torch.Tensor:
    """Minimise each molecule's E from its (B, N, 3) decoded positions (Angstrom), each with at most
    ``iterations`` L-BFGS iterations of its own; returns the relaxed (B, N, 3) positions in the dtype of
    ``start``. A molecule's result does not depend on the others in the batch."""
    start = start.detach()
    return minimise(lambda positions, rows: relaxation_energy(positions, start[rows], targets), start, iterations)


def relax(coords: np.ndarray, targets: RelaxationTargets, iterations: int, batch_size: int) -> np.ndarray:
    """Relax (K, N, 3) conformations (Angstrom) molecule by molecule, ``batch_size`` at a time with a progress
    bar; returns (K, N, 3) float32. Each molecule takes at most ``iterations`` L-BFGS iterations
    (:func:`relax_batch`), in float64 on the CPU; the batch size changes the speed, not the result."""
    batches = [coords[start : start + batch_size] for start in range(0, len(coords), batch_size)]
    relaxed = [
        relax_batch(torch.from_numpy(np.asarray(batch, dtype=np.float64)), targets, iterations).float()
        for batch in tqdm(batches, desc="relaxing", unit="batch", disable=len(batches) == 1)
    ]
    return torch.cat(relaxed).numpy()
