"""Geometry and run helpers: bond lengths, pairwise distances, Kabsch RMSD, seeding, device and precision."""

from __future__ import annotations

import torch

# values per chunk of a computation over all atom pairs of many frames (128 MiB in float64)
PAIR_VALUES_PER_CHUNK = 2**24


def bond_lengths(positions: torch.Tensor, bonds: torch.Tensor) -> torch.Tensor:
    """Lengths of covalent bonds.

    Args:
        positions: (..., N, 3) coordinates in Angstrom.
        bonds: (n_bonds, 2) atom indices.

    Returns:
        (..., n_bonds) lengths in Angstrom.
    """
    return (positions[..., bonds[:, 0], :] - positions[..., bonds[:, 1], :]).norm(dim=-1)


def pairwise_distances(positions: torch.Tensor) -> torch.Tensor:
    """All distances between distinct atoms of each molecule.

    Args:
        positions: (B, N, 3) coordinates in Angstrom.

    Returns:
        (B, N (N - 1) / 2) distances in Angstrom, pairs (i, j) with i < j in row-major order
        (the order of ``torch.pdist`` applied to one molecule).
    """
    n_atoms = positions.shape[-2]
    i, j = torch.triu_indices(n_atoms, n_atoms, offset=1, device=positions.device)
    return (positions[..., i, :] - positions[..., j, :]).norm(dim=-1)


def frames_per_chunk(n_pairs: int) -> int:
    """Frames per chunk of a computation over all atom pairs of many frames: at most ``PAIR_VALUES_PER_CHUNK``
    values of their (frames, pairs, 3) differences (all frames at once for a molecule of some tens of atoms)."""
    return max(1, PAIR_VALUES_PER_CHUNK // (3 * max(1, n_pairs)))


def distance_mae(predicted: torch.Tensor, target: torch.Tensor) -> float:
    """Mean absolute error (Angstrom) of all interatomic distances of (F, N, 3) conformations against (F, N, 3)
    targets, over the frames in chunks (:func:`frames_per_chunk`), so that memory does not grow as F x N^2."""
    n_pairs = predicted.shape[-2] * (predicted.shape[-2] - 1) // 2
    chunk = frames_per_chunk(n_pairs)
    total = sum(
        (pairwise_distances(predicted[start : start + chunk]) - pairwise_distances(target[start : start + chunk]))
        .abs()
        .sum()
        .item()
        for start in range(0, len(predicted), chunk)
    )
    return total / (len(predicted) * n_pairs)


def signed_volumes(positions: torch.Tensor, quadruplets: torch.Tensor) -> torch.Tensor:
    """Triple products (r_j - r_i) . ((r_k - r_j) x (r_l - r_k)) of atom chains, Angstrom^3.

    Invariant under rotations and translations, odd under reflections: the sign tells a
    chain from its mirror image.

    Args:
        positions: (B, N, 3) coordinates in Angstrom.
        quadruplets: (Q, 4) atom indices.

    Returns:
        (B, Q) signed volumes.
    """
    p0, p1, p2, p3 = (positions[:, quadruplets[:, k]] for k in range(4))
    return ((p1 - p0) * torch.linalg.cross(p2 - p1, p3 - p2)).sum(dim=-1)


def normalized_volumes(positions: torch.Tensor, quadruplets: torch.Tensor) -> torch.Tensor:
    """Signed volumes of atom chains divided by the product of their three bond lengths (dimensionless).

    For a chain i-j-k-l with bond angles theta_1, theta_2 and dihedral phi this is
    sin(theta_1) sin(theta_2) sin(phi), in [-1, 1]; odd under reflections like the volume.

    Args:
        positions: (B, N, 3) coordinates in Angstrom.
        quadruplets: (Q, 4) atom indices.

    Returns:
        (B, Q) normalised signed volumes.
    """
    p0, p1, p2, p3 = (positions[:, quadruplets[:, k]] for k in range(4))
    lengths = (p1 - p0).norm(dim=-1) * (p2 - p1).norm(dim=-1) * (p3 - p2).norm(dim=-1)
    return signed_volumes(positions, quadruplets) / lengths.clamp_min(1e-12)


def superposed_squared_deviation(
    predicted: torch.Tensor, reference: torch.Tensor, allow_reflection: bool = False
) -> torch.Tensor:
    """Mean squared atom displacement after optimal superposition (Kabsch algorithm), in float64.

    For centred P and T, min over R of |P R - T|^2 is |P|^2 + |T|^2 - 2 (sum of the singular values
    of P^T T), the smallest one negated when R must be a proper rotation (det = +1, so a mirror
    image is not superposed onto the original). No rotation is formed; with the reflection
    allowed only the singular values are, whose gradient is stable (a loss can use it).

    Args:
        predicted: (B, N, 3) coordinates in Angstrom.
        reference: (B, N, 3) coordinates in Angstrom.

    Returns:
        (B,) mean squared displacement in Angstrom^2 (float64: |P|^2 + |T|^2 cancels).
    """
    predicted = predicted.double() - predicted.double().mean(dim=1, keepdim=True)
    reference = reference.double() - reference.double().mean(dim=1, keepdim=True)
    covariance = predicted.transpose(1, 2) @ reference
    if allow_reflection:
        overlap = torch.linalg.svdvals(covariance).sum(dim=-1)
    else:
        u, singular_values, vh = torch.linalg.svd(covariance)
        sign = torch.sign(torch.linalg.det(u @ vh))
        overlap = singular_values[:, :2].sum(dim=-1) + singular_values[:, 2] * sign
    squared = predicted.pow(2).sum(dim=(1, 2)) + reference.pow(2).sum(dim=(1, 2)) - 2.0 * overlap
    return squared.clamp_min(0.0) / predicted.shape[1]


def kabsch_rmsd(predicted: torch.Tensor, reference: torch.Tensor, allow_reflection: bool = False) -> torch.Tensor:
    """RMSD after optimal superposition (:func:`superposed_squared_deviation`): (B, N, 3) twice ->
    (B,) Angstrom; with ``allow_reflection=False`` by a proper rotation only."""
    return superposed_squared_deviation(predicted, reference, allow_reflection).sqrt().float()


def bond_length_statistics(positions: torch.Tensor, reference: torch.Tensor, bonds: torch.Tensor) -> dict[str, float]:
    """Bond-length error of ``positions`` against ``reference`` (both (B, N, 3), Angstrom).

    Returns the mean absolute error, root-mean-square error and the largest absolute error of
    corresponding bond lengths, plus the fraction of bonds within 0.1 Angstrom.
    """
    error = (bond_lengths(positions, bonds) - bond_lengths(reference, bonds)).abs()
    return {
        "bond_mae": error.mean().item(),
        "bond_rmse": error.pow(2).mean().sqrt().item(),
        "bond_max_error": error.max().item(),
        "bond_within_0.1": (error < 0.1).float().mean().item(),
    }
