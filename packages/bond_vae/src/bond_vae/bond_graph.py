"""The molecule's covalent-bond graph: neighbours, bonded path lengths, and the atom chains of bond
angles and torsions. Bonds are (n_bonds, 2) atom indices; nothing here depends on coordinates."""

from __future__ import annotations

import numpy as np
import torch

# atoms at least this many bonds apart are non-bonded: the steric term, relaxation and the clash criterion
NONBONDED_MIN_BONDS_APART = 4


def hop_counts(bonds: np.ndarray, n_atoms: int) -> np.ndarray:
    """Number of covalent bonds on the shortest path between every two atoms (breadth-first).

    Args:
        bonds: (n_bonds, 2) atom indices.
        n_atoms: atoms in the molecule N.

    Returns:
        (N, N) int64 array, zero on the diagonal, ``n_atoms`` for atoms that no path joins.
    """
    adjacency = np.zeros((n_atoms, n_atoms), dtype=bool)
    adjacency[bonds[:, 0], bonds[:, 1]] = adjacency[bonds[:, 1], bonds[:, 0]] = True
    counts = np.full((n_atoms, n_atoms), n_atoms, dtype=np.int64)
    np.fill_diagonal(counts, 0)
    frontier = np.eye(n_atoms, dtype=bool)
    reached = frontier.copy()
    for hops in range(1, n_atoms):
        frontier = (frontier.astype(np.int64) @ adjacency.astype(np.int64) > 0) & ~reached
        if not frontier.any():
            break
        counts[frontier] = hops
        reached |= frontier
    return counts


def neighbour_lists(bonds: np.ndarray, n_atoms: int) -> list[list[int]]:
    """Each atom's bonded neighbours, in index order."""
    neighbours: list[list[int]] = [[] for _ in range(n_atoms)]
    for i, j in bonds.tolist():
        neighbours[i].append(j)
        neighbours[j].append(i)
    return [sorted(around) for around in neighbours]


def atoms_beyond(neighbours: list[list[int]], i: int, j: int) -> set[int]:
    """Atoms reached from j without crossing the bond j-i (j itself not included; i included only when
    the bond lies in a ring)."""
    seen, stack = {j}, [j]
    while stack:
        atom = stack.pop()
        for other in neighbours[atom]:
            if other not in seen and not (atom == j and other == i):
                seen.add(other)
                stack.append(other)
    seen.discard(j)
    return seen


def torsion_quadruplets(bonds: torch.Tensor, n_atoms: int) -> torch.Tensor:
    """All bonded chains i-j-k-l (j-k a bond, i bonded to j, l bonded to k, four distinct atoms).

    Args:
        bonds: (n_bonds, 2) atom indices.
        n_atoms: atoms in the molecule.

    Returns:
        (Q, 4) long tensor, each chain listed once.
    """
    neighbours = neighbour_lists(bonds, n_atoms)
    chains = [
        (i, j, k, m) for j, k in bonds.tolist() for i in neighbours[j] for m in neighbours[k] if len({i, j, k, m}) == 4
    ]
    return torch.tensor(chains, dtype=torch.long).reshape(-1, 4)


def angle_triplets(bonds: np.ndarray, n_atoms: int) -> np.ndarray:
    """All bonded angles i-j-k (i < k) as an (n_angles, 3) index array."""
    neighbours = neighbour_lists(bonds, n_atoms)
    triplets = [(i, j, k) for j in range(n_atoms) for i in neighbours[j] for k in neighbours[j] if i < k]
    return np.array(triplets, dtype=np.int64).reshape(-1, 3)


def pairs_bonds_apart(bonds: np.ndarray, n_atoms: int, hops: int) -> np.ndarray:
    """Atom pairs whose shortest covalent path has exactly ``hops`` bonds (from :func:`hop_counts`).

    ``hops`` 2 gives the 1-3 pairs (their distances fix the bond angles), 3 the 1-4 pairs
    (their distances fix the torsions up to sign). Atoms that no path joins never pair.

    Args:
        bonds: (n_bonds, 2) atom indices.
        n_atoms: atoms in the molecule N.
        hops: bonds between the two atoms, at least 1.

    Returns:
        (P, 2) int64 array of pairs (i, j) with i < j, in row-major order.
    """
    apart = (hop_counts(bonds, n_atoms) == hops) & (hops < n_atoms)  # n_atoms marks "no path"
    return np.argwhere(np.triu(apart, k=1)).astype(np.int64)
