"""Torsional fluctuations that the decoder averages away (part of the model's sampler; ``--torsion-noise``,
on by default, of ``sample`` and ``evaluate``).

The decoder returns one conformation per latent vector: in effect the mean of the frames that
share that latent. Fast fluctuations that the latent does not carry (each backbone torsion
wobbles by about 8 degrees inside its basin) are averaged out, so decoded ensembles are
narrower in phi/psi than the data: Var x = Var E[x | z] + E Var[x | z], and decoding gives
only the first term. ``--torsion-noise`` draws the second one, in torsion space:

1. the rotatable bonds (:func:`rotatable_bonds`): bonds whose removal splits the molecule, with
   other atoms on both ends;
2. the residual of each of their dihedrals, decoded minus true, over the reconstructions of up
   to ``RESIDUAL_FRAMES`` training frames (never the frames a report is scored on); frames
   with any residual beyond ``BASIN_ERROR_DEGREES`` (a torsion put in another basin: an error
   of kind, not a fluctuation) are left out;
3. their covariance Sigma (degrees^2; neighbouring torsions anticorrelate, the crankshaft
   motion that keeps the chain's overall shape);
4. each output conformation turned about its rotatable bonds by angles drawn from N(0, Sigma).

Turning about a bond moves the atoms on one side of it rigidly, so bond lengths and angles do
not change; the draw is symmetric, so the handedness that the parity rule gave a sample is
kept on average. Independent of the model's loss and of the bar's reference. Fitted when training
ends and stored in the checkpoint (:mod:`bond_vae.sampling.sampler`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch

from bond_vae.bond_graph import atoms_beyond, neighbour_lists
from bond_vae.data.records import DataError
from bond_vae.data.split import subsample
from bond_vae.evaluation.metrics import dihedrals
from bond_vae.model.parity import orient_reconstructions
from bond_vae.model.vae import MolecularVAE
from bond_vae.sampling.inference import decode_in_batches, encode_in_batches

RESIDUAL_FRAMES = 2000  # training frames reconstructed to measure the residuals (evenly spaced)
BASIN_ERROR_DEGREES = 45.0  # a residual beyond this is a torsion in the wrong basin, not a fluctuation
TORSION_NOISE_HELP = (
    "turn each sample about its rotatable bonds by random angles with the covariance of the decoder's torsion "
    "errors on training frames: the fast fluctuations the decoder averages away (bond lengths and angles "
    "unchanged; covariance stored in the checkpoint); applied to prior samples and --latents, not to an "
    "--interpolate path"
)


class RotatableBonds(NamedTuple):
    """``dihedrals``: (R, 4) atom chains a-i-j-l around each rotatable bond i-j; ``moving``: (R, N) bool,
    the atoms on l's side of the bond (at most half of the molecule), which turn about it."""

    dihedrals: np.ndarray
    moving: np.ndarray


def rotatable_bonds(bonds: np.ndarray, n_atoms: int) -> RotatableBonds:
    """The bonds that a torsion turns about: bridges of the bond graph (bonds in no ring) whose two atoms
    both have other neighbours. (R, 4) chains and (R, N) moving masks; R is 0 for a rigid molecule."""
    neighbours = neighbour_lists(np.asarray(bonds), n_atoms)
    chains, masks = [], []
    for i, j in np.asarray(bonds).tolist():
        if len(neighbours[i]) < 2 or len(neighbours[j]) < 2:
            continue
        side = atoms_beyond(neighbours, i, j)
        if i in side:
            continue  # i-j closes a ring
        if 2 * len(side) > n_atoms:
            i, j = j, i
            side = atoms_beyond(neighbours, i, j)
        before = next(a for a in neighbours[i] if a != j)
        after = next(a for a in neighbours[j] if a != i)
        chains.append((before, i, j, after))
        masks.append(np.isin(np.arange(n_atoms), sorted(side)))
    return RotatableBonds(
        np.array(chains, dtype=np.int64).reshape(-1, 4), np.array(masks, dtype=bool).reshape(-1, n_atoms)
    )


def turn_about_bonds(coords: torch.Tensor, rotatable: RotatableBonds, angles: torch.Tensor) -> torch.Tensor:
    """Change each rotatable bond's dihedral by the given angle, one bond after the other.

    Args:
        coords: (S, N, 3) conformations, Angstrom.
        rotatable: the molecule's :func:`rotatable_bonds`.
        angles: (S, R) degrees; dihedral a-i-j-l of bond r grows by ``angles[:, r]``.

    Returns:
        (S, N, 3) conformations (a new tensor); bond lengths and angles as in ``coords``.
    """
    turned = coords.clone()
    radians = torch.deg2rad(angles.to(coords.dtype))
    for bond, (chain, moving) in enumerate(
        zip(rotatable.dihedrals.tolist(), torch.from_numpy(rotatable.moving), strict=True)
    ):
        centre = turned[:, chain[2]].unsqueeze(1)
        axis = turned[:, chain[2]] - turned[:, chain[1]]
        axis = (axis / axis.norm(dim=-1, keepdim=True)).unsqueeze(1).expand(-1, int(moving.sum()), -1)
        arm = turned[:, moving] - centre
        cos, sin = radians[:, bond].cos()[:, None, None], radians[:, bond].sin()[:, None, None]
        # Rodrigues' rotation about the axis i -> j
        arm = arm * cos + torch.linalg.cross(axis, arm) * sin + axis * (axis * arm).sum(-1, keepdim=True) * (1 - cos)
        turned[:, moving] = centre + arm
    return turned


@dataclass(frozen=True)
class TorsionNoise:
    """N(0, Sigma) over the rotatable bonds' dihedrals: ``scale_tril`` (R, R) lower Cholesky factor of Sigma,
    degrees; ``frames``: reconstructions the residuals came from; ``kept``: those without a basin error."""

    rotatable: RotatableBonds
    scale_tril: np.ndarray
    frames: int
    kept: int

    def describe(self) -> str:
        spread = np.sqrt((self.scale_tril**2).sum(axis=1))
        return (
            f"torsion noise on {len(spread)} rotatable bonds, standard deviation {spread.mean():.1f} degrees on "
            f"average, covariance of the reconstruction residuals of {self.kept} of {self.frames} training frames"
        )

    def to_record(self) -> dict[str, Any]:
        """The noise as plain tensors and numbers (for the checkpoint)."""
        return {
            "dihedrals": torch.from_numpy(self.rotatable.dihedrals),
            "moving": torch.from_numpy(self.rotatable.moving),
            "scale_tril": torch.from_numpy(self.scale_tril),
            "frames": self.frames,
            "kept": self.kept,
        }

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> TorsionNoise:
        """Inverse of :meth:`to_record`."""
        return cls(
            RotatableBonds(record["dihedrals"].long().numpy(), record["moving"].bool().numpy()),
            record["scale_tril"].double().numpy(),
            int(record["frames"]),
            int(record["kept"]),
        )

    def add_to(self, coords: np.ndarray, generator: torch.Generator) -> np.ndarray:
        """(S, N, 3) Angstrom conformations turned about their rotatable bonds by angles drawn from N(0, Sigma)
        with ``generator``; float32 like the decoder's output."""
        draws = torch.randn(len(coords), len(self.scale_tril), generator=generator, device=generator.device)
        angles = draws.cpu().double() @ torch.from_numpy(self.scale_tril).T
        turned = turn_about_bonds(torch.from_numpy(np.asarray(coords, dtype=np.float64)), self.rotatable, angles)
        return turned.float().numpy()


def fit_torsion_noise(reconstructed: np.ndarray, reference: np.ndarray, bonds: np.ndarray) -> TorsionNoise:
    """The noise of a model from its (F, N, 3) reconstructions of (F, N, 3) frames, Angstrom, in the frames'
    handedness (see the module's docstring).

    Raises:
        DataError: the molecule has no rotatable bond, or fewer than two frames are reconstructed without a
            basin error.
    """
    rotatable = rotatable_bonds(bonds, reference.shape[1])
    if len(rotatable.dihedrals) == 0:
        raise DataError("the molecule has no rotatable bond (every bond is terminal or in a ring)")
    residuals = dihedrals(reconstructed.astype(np.float64), rotatable.dihedrals) - dihedrals(
        reference.astype(np.float64), rotatable.dihedrals
    )
    residuals = (residuals + 180.0) % 360.0 - 180.0
    kept = residuals[(np.abs(residuals) <= BASIN_ERROR_DEGREES).all(axis=1)]
    if len(kept) < 2:
        raise DataError(
            f"{len(kept)} of {len(reference)} training frames are reconstructed without a torsion "
            f"more than {BASIN_ERROR_DEGREES:g} degrees off; too few to measure the decoder's torsion errors"
        )
    covariance = np.cov(kept.T, bias=False).reshape(len(rotatable.dihedrals), -1)
    covariance += 1e-6 * np.eye(len(covariance))  # positive definite where two torsions move together exactly
    return TorsionNoise(rotatable, np.linalg.cholesky(covariance), len(reference), len(kept))


def fit_model_torsion_noise(
    model: MolecularVAE,
    train_frames: np.ndarray,
    batch_size: int,
    compile_decoder: bool,
    bf16: bool,
    max_frames: int = RESIDUAL_FRAMES,
) -> TorsionNoise:
    """The noise of a model: reconstruct up to ``max_frames`` of the (F, N, 3) training frames (Angstrom,
    evenly spaced) from their posterior means, in their handedness, and fit (:func:`fit_torsion_noise`).

    Raises:
        DataError: as :func:`fit_torsion_noise`.
    """
    frames = subsample(train_frames, max_frames)
    device = next(model.parameters()).device
    mu, _ = encode_in_batches(model, frames, batch_size, device, bf16)
    decoded = decode_in_batches(model, torch.from_numpy(mu).to(device), batch_size, compile_decoder, bf16)
    reconstructed = orient_reconstructions(
        torch.from_numpy(decoded), torch.from_numpy(frames), model.parity, model.bonds.cpu()
    ).numpy()
    return fit_torsion_noise(reconstructed, frames, model.bonds.cpu().numpy())
