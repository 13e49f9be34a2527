"""Loss terms of the VAE, each a function of (B, N, 3) coordinates in Angstrom."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from pairwise_vae.bond_graph import NONBONDED_MIN_BONDS_APART, hop_counts
from pairwise_vae.geometry import normalized_volumes, pairwise_distances, superposed_squared_deviation


@dataclass
class LossTerms:
    """Scalar loss tensors of one batch.

    ``total``; ``reconstruction``: pairwise-distance MSE (Angstrom^2); ``kl``: KL per molecule
    (nats); ``relative_chirality``: MSE of the pairwise products of normalised signed volumes
    (dimensionless, :func:`relative_chirality_loss`); ``stereocentres``: summed squared hinge of the
    stereocentres of a chiral molecule (dimensionless, :func:`stereocentre_loss`; of the reconstructions, plus in
    training of the decodes between posterior means); ``steric``: summed
    squared shortfall of distant pairs (Angstrom^2, :func:`steric_loss`); ``aligned``: mean squared
    displacement after superposition (Angstrom^2, :func:`aligned_coordinate_loss`); each of the last
    four zero when its weight is 0 (``stereocentres`` also unless the molecule is chiral).
    """

    total: torch.Tensor
    reconstruction: torch.Tensor
    kl: torch.Tensor
    relative_chirality: torch.Tensor
    stereocentres: torch.Tensor
    steric: torch.Tensor
    aligned: torch.Tensor


def kl_divergence(mu: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(log_var)) || N(0, I)) per molecule: (B, D) -> (B,) in nats."""
    return 0.5 * (mu.pow(2) + log_var.exp() - 1.0 - log_var).sum(dim=-1)


def pairwise_distance_loss(
    predicted: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean squared error of all interatomic distances, molecule by molecule (Angstrom^2).

    Distances are taken only between atoms of the same molecule, batched without a loop.

    Args:
        predicted: (B, N, 3) coordinates in Angstrom.
        target: (B, N, 3) coordinates in Angstrom.
        weights: (N (N - 1) / 2,) weight of each pair's squared error (mean 1), in the order of
            :func:`~pairwise_vae.geometry.pairwise_distances`; None: all 1.
    """
    squared_errors = (pairwise_distances(predicted) - pairwise_distances(target)).pow(2)
    return (squared_errors if weights is None else squared_errors * weights).mean()


def distance_weights(coords: torch.Tensor, sigma_floor: float) -> torch.Tensor:
    """Inverse-variance weights of the pairwise distances, 1 / (var_ij + floor^2), scaled to mean 1.

    A Gaussian likelihood of each distance with its own spread in the data: bonded pairs,
    which barely vary, weigh more than pairs at opposite ends of the molecule.

    Args:
        coords: (F, N, 3) training frames in Angstrom (at most about 2000, evenly spaced, are used).
        sigma_floor: Angstrom added in quadrature to each distance's standard deviation.

    Returns:
        (N (N - 1) / 2,) weights in the order of :func:`~pairwise_vae.geometry.pairwise_distances`.
    """
    sample = coords[:: max(1, len(coords) // 2000)].double()
    weights = 1.0 / (pairwise_distances(sample).var(dim=0) + sigma_floor**2)
    return (weights / weights.mean()).float()


def relative_chirality_loss(predicted: torch.Tensor, target: torch.Tensor, quadruplets: torch.Tensor) -> torch.Tensor:
    """Mean squared error of the products s_a s_b of every two normalised signed volumes; even under reflection.

    Each volume is divided by the product of its chain's three bond lengths
    (:func:`~pairwise_vae.geometry.normalized_volumes`, sin(angle) sin(angle) sin(dihedral), in [-1, 1]).
    With s and t the (Q,) normalised volumes of a prediction and its target, the mean over all
    Q^2 pairs (a, b) of (s_a s_b - t_a t_b)^2 is (|s|^4 + |t|^4 - 2 (s . t)^2) / Q^2, computed in
    O(Q). It is zero exactly when s = t or s = -t (the target or its mirror image), so it sees
    which chains twist the same way and which the opposite way, not the overall hand. For a
    small error e = s - t it is about 2 |e|^2 |t|^2 / Q^2: twice the mean squared volume times
    the mean squared error of the volumes.

    Args:
        predicted: (B, N, 3) coordinates in Angstrom.
        target: (B, N, 3) coordinates in Angstrom.
        quadruplets: (Q, 4) atom chains i-j-k-l, or stereocentres (the centre, then three of its neighbours).

    Returns:
        Scalar mean over the batch (dimensionless).
    """
    if quadruplets.shape[0] == 0:  # a molecule without chains of four atoms (e.g. of three): nothing to compare
        return predicted.sum() * 0.0
    s = normalized_volumes(predicted, quadruplets)
    t = normalized_volumes(target, quadruplets)
    s_norm, t_norm, overlap = s.pow(2).sum(dim=-1), t.pow(2).sum(dim=-1), (s * t).sum(dim=-1)
    return ((s_norm.pow(2) + t_norm.pow(2) - 2.0 * overlap.pow(2)) / quadruplets.shape[0] ** 2).mean()


def stereocentre_loss(predicted: torch.Tensor, target: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """Squared shortfall of each stereocentre, in the prediction's own hand, below half its target volume.

    With s and t the (B, S) normalised signed volumes of the prediction's and the target's
    stereocentres (:func:`~pairwise_vae.geometry.normalized_volumes`) and h = +1 where
    sum(s t) >= 0, else -1 (the hand in which the prediction agrees with most of the target's
    centres; not differentiated), the term is the sum over centres of
    max(0, |t_a| / 2 - h sign(t_a) s_a)^2, averaged over molecules. It is zero when every centre
    keeps the target's configuration relative to the others (with at least half its volume),
    also for the mirror image, so it stays even under reflections; a centre inverted against
    the others costs about (3 |t_a| / 2)^2, 0.2 for an sp3 carbon (|t| about 0.3), whatever the
    number of centres. The pair-product term of :func:`relative_chirality_loss` over the same
    centres would charge it 2 t_a^2 |t|^2 / S^2, a few thousandths.

    Args:
        predicted: (B, N, 3) coordinates in Angstrom.
        target: (B, N, 3) coordinates in Angstrom.
        centres: (S, 4) stereocentres: the centre, then three of its bonded neighbours.

    Returns:
        Scalar mean over the batch (dimensionless).
    """
    s = normalized_volumes(predicted, centres)
    t = normalized_volumes(target, centres)
    hand = torch.where((s * t).sum(dim=-1, keepdim=True) >= 0, 1.0, -1.0).detach()
    return (0.5 * t.abs() - hand * torch.sign(t) * s).clamp(min=0.0).pow(2).sum(dim=-1).mean()


def steric_pairs(bonds: torch.Tensor, n_atoms: int) -> torch.Tensor:
    """(P,) int64 positions, in the order of :func:`~pairwise_vae.geometry.pairwise_distances`, of the pairs
    at least ``NONBONDED_MIN_BONDS_APART`` bonds apart (indices, not a mask: a fixed shape for torch.compile)."""
    far = torch.from_numpy(hop_counts(bonds.long().cpu().numpy(), n_atoms) >= NONBONDED_MIN_BONDS_APART)
    i, j = torch.triu_indices(n_atoms, n_atoms, offset=1)
    return torch.nonzero(far[i, j]).squeeze(1)


def steric_loss(predicted: torch.Tensor, pairs: torch.Tensor, distance: float) -> torch.Tensor:
    """Squared shortfall below ``distance`` of the distances of the chosen pairs, summed per molecule.

    sum over pairs of max(0, distance - d_ij)^2, averaged over molecules (Angstrom^2): zero
    when no chosen pair is closer than ``distance``; an overlap of 0.3 A costs 0.09.

    Args:
        predicted: (B, N, 3) coordinates in Angstrom.
        pairs: (P,) positions of the chosen pairs among all N (N - 1) / 2 (:func:`steric_pairs`).
        distance: Angstrom.
    """
    return (distance - pairwise_distances(predicted)[:, pairs]).clamp(min=0.0).pow(2).sum(dim=-1).mean()


def aligned_coordinate_loss(predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared atom displacement after the best superposition by a rotation or a reflection
    (:func:`~pairwise_vae.geometry.superposed_squared_deviation`), averaged over molecules (Angstrom^2).

    Invariant under rotations, reflections and translations of either argument, like the distance
    loss; unlike it, without local minima where a segment sits on the wrong side of the rest of
    the chain.

    Args:
        predicted: (B, N, 3) coordinates in Angstrom.
        target: (B, N, 3) coordinates in Angstrom.

    Returns:
        Scalar (Angstrom^2); NaN when a molecule has non-finite coordinates.
    """
    finite = torch.isfinite(predicted) & torch.isfinite(target)
    zero = predicted.new_zeros(())
    deviation = superposed_squared_deviation(
        torch.where(finite, predicted, zero), torch.where(finite, target, zero), allow_reflection=True
    )
    # the SVD refuses non-finite input: such a molecule's term is NaN instead, so that the trainer skips the
    # step as for any non-finite loss (without waiting for the device to say so)
    deviation = torch.where(finite.all(dim=(1, 2)), deviation, float("nan"))
    return deviation.mean().to(target.dtype)
