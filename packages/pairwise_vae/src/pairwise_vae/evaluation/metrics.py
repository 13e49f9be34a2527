"""Structural metrics to compare generated conformations with a reference ensemble.

All coordinates are (frames, atoms, 3) numpy arrays in Angstrom; angles are in degrees.
Distances and angles cannot tell a structure from its mirror image; signed dihedrals can,
so the backbone phi angles decide helix handedness.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pairwise_vae.bond_graph import NONBONDED_MIN_BONDS_APART, hop_counts
from pairwise_vae.data.records import ELEMENTS, Topology
from pairwise_vae.geometry import frames_per_chunk

CLASH_DISTANCE = 2.5
RAMACHANDRAN_BINS = 36
JS_PSEUDO_COUNT = 1e-6
ACTIVE_UNIT_VARIANCE = 0.01


@dataclass
class Backbone:
    """Atom indices of the backbone dihedrals of residues that have both phi and psi.

    ``phi`` and ``psi`` are (n_residues, 4) index arrays; ``residue_ids`` labels the rows.
    """

    phi: np.ndarray
    psi: np.ndarray
    residue_ids: np.ndarray


def find_backbone(topology: Topology) -> Backbone | None:
    """Locate phi = C(i-1)-N-CA-C and psi = N-CA-C-N(i+1) from atom names N, CA, C.

    Returns None when no residue has both angles (not a peptide).
    """
    atoms: dict[tuple[int, str], int] = {}
    for index, (residue, name) in enumerate(
        zip(topology.residue_ids.tolist(), topology.atom_names.tolist(), strict=True)
    ):
        atoms.setdefault((int(residue), str(name)), index)
    phi, psi, ids = [], [], []
    for residue in sorted({int(r) for r in topology.residue_ids}):
        needed = [(residue - 1, "C"), (residue, "N"), (residue, "CA"), (residue, "C"), (residue + 1, "N")]
        if all(key in atoms for key in needed):
            indices = [atoms[key] for key in needed]
            phi.append(indices[:4])
            psi.append(indices[1:])
            ids.append(residue)
    if not ids:
        return None
    return Backbone(np.array(phi), np.array(psi), np.array(ids))


def dihedrals(coords: np.ndarray, quadruplets: np.ndarray) -> np.ndarray:
    """Signed dihedral angles (IUPAC convention) of atom quadruplets: returns (frames, n) degrees."""
    p0, p1, p2, p3 = (coords[:, quadruplets[:, k]] for k in range(4))
    b0, b1, b2 = p0 - p1, p2 - p1, p3 - p2
    b1 = b1 / np.linalg.norm(b1, axis=-1, keepdims=True)
    v = b0 - (b0 * b1).sum(-1, keepdims=True) * b1
    w = b2 - (b2 * b1).sum(-1, keepdims=True) * b1
    x = (v * w).sum(-1)
    y = (np.cross(b1, v) * w).sum(-1)
    return np.degrees(np.arctan2(y, x))


def bond_angles(coords: np.ndarray, triplets: np.ndarray) -> np.ndarray:
    """(frames, n_angles) bond angles in degrees."""
    a = coords[:, triplets[:, 0]] - coords[:, triplets[:, 1]]
    b = coords[:, triplets[:, 2]] - coords[:, triplets[:, 1]]
    cosine = (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))
    return np.degrees(np.arccos(np.clip(cosine, -1.0, 1.0)))


def clash_fraction(coords: np.ndarray, bonds: np.ndarray, distance: float = CLASH_DISTANCE) -> float:
    """Fraction of frames with two atoms at least 4 bonds apart closer than ``distance`` Angstrom (0 for a
    molecule without such pairs, e.g. of three atoms)."""
    far = hop_counts(bonds, coords.shape[1]) >= NONBONDED_MIN_BONDS_APART
    i, j = np.nonzero(np.triu(far, k=1))
    if len(i) == 0:
        return 0.0
    chunk = frames_per_chunk(len(i))  # the (frames, pairs, 3) differences of all frames at once: GiB at 500 atoms
    closest = np.concatenate(
        [
            np.linalg.norm(c[:, i] - c[:, j], axis=-1).min(axis=1)
            for c in np.array_split(coords, max(1, -(-len(coords) // chunk)))
        ]
    )
    return float((closest < distance).mean())


def radius_of_gyration(coords: np.ndarray) -> np.ndarray:
    """(frames,) radius of gyration of the atoms (unweighted), Angstrom."""
    centred = coords - coords.mean(axis=1, keepdims=True)
    return np.sqrt((centred**2).sum(-1).mean(-1))


def jensen_shannon_distance(p_counts: np.ndarray, q_counts: np.ndarray, pseudo_count: float = JS_PSEUDO_COUNT) -> float:
    """Jensen-Shannon distance (square root of the divergence, log base 2, so in [0, 1]) of two histograms.

    A pseudo-count is added to every bin of both normalised histograms before renormalising.
    """
    p = p_counts / p_counts.sum() + pseudo_count
    q = q_counts / q_counts.sum() + pseudo_count
    p, q = p / p.sum(), q / q.sum()
    m = 0.5 * (p + q)

    def relative_entropy(a: np.ndarray) -> float:
        nonzero = a > 0
        return float((a[nonzero] * np.log2(a[nonzero] / m[nonzero])).sum())

    divergence = 0.5 * relative_entropy(p) + 0.5 * relative_entropy(q)
    return float(np.sqrt(max(divergence, 0.0)))


def ramachandran_histogram(phi: np.ndarray, psi: np.ndarray, bins: int = RAMACHANDRAN_BINS) -> np.ndarray:
    """2D histogram of (phi, psi) over [-180, 180)^2 with ``bins`` x ``bins`` bins."""
    edges = np.linspace(-180.0, 180.0, bins + 1)
    counts, _, _ = np.histogram2d(phi.ravel(), psi.ravel(), bins=[edges, edges])
    return counts


HELIX_CLASSES = ("right", "left", "mixed")


def inner_residues(n_residues: int) -> slice:
    """The residues, among ``n_residues`` with phi and psi, that helix classes and the figures use:
    the inner ones (first and last dropped) when there are more than two, else all of them (a
    capped single residue such as alanine dipeptide has one)."""
    return slice(1, -1) if n_residues > 2 else slice(None)


def helix_classes(phi: np.ndarray) -> np.ndarray:
    """(frames,) index into ``HELIX_CLASSES`` of each frame: 0 right-handed (:func:`inner_residues`
    all with phi < 0), 1 left-handed (all phi > 0), 2 neither (mixed or unfolded).

    Args:
        phi: (frames, n_residues) phi angles in degrees.
    """
    inner = phi[:, inner_residues(phi.shape[1])]
    return np.where((inner < 0).all(axis=1), 0, np.where((inner > 0).all(axis=1), 1, 2))


def helix_handedness(phi: np.ndarray) -> dict[str, float]:
    """Fractions of frames in each helix class (:func:`helix_classes`).

    Args:
        phi: (frames, n_residues) phi angles in degrees.
    """
    counts = np.bincount(helix_classes(phi), minlength=len(HELIX_CLASSES)) / len(phi)
    return {name: float(fraction) for name, fraction in zip(HELIX_CLASSES, counts, strict=True)}


def latent_statistics(mu: np.ndarray, log_var: np.ndarray) -> dict[str, object]:
    """Per-dimension KL to N(0, 1) averaged over frames, and the active units.

    A dimension is active when the variance of its posterior mean over the data exceeds 0.01
    (Burda et al. 2016).
    """
    kl = 0.5 * (mu**2 + np.exp(log_var) - 1.0 - log_var).mean(axis=0)
    activity = mu.var(axis=0)
    return {
        "kl_per_dimension": kl.round(5).tolist(),
        "kl_total": float(kl.sum()),
        "active_units": int((activity > ACTIVE_UNIT_VARIANCE).sum()),
        "latent_dim": int(mu.shape[1]),
    }


def type_labels(topology: Topology, groups: np.ndarray) -> list[str]:
    """Element labels of bonds or angles ('C-N', 'C-C-O'), ordered so that equal types match."""
    elements = [ELEMENTS[int(z)] for z in topology.atomic_numbers]
    labels = []
    for group in groups.tolist():
        names = [elements[i] for i in group]
        labels.append("-".join(min(names, names[::-1])))
    return labels


def per_type_deviation(values: np.ndarray, reference: np.ndarray, labels: list[str]) -> dict[str, dict[str, float]]:
    """Mean of ``values`` against ``reference`` ((frames, n) each) grouped by type label."""
    result = {}
    for label in sorted(set(labels)):
        columns = [k for k, name in enumerate(labels) if name == label]
        result[label] = {
            "reference_mean": float(reference[:, columns].mean()),
            "sample_mean": float(values[:, columns].mean()),
            "mean_abs_deviation": float(
                np.abs(values[:, columns].mean(axis=0) - reference[:, columns].mean(axis=0)).mean()
            ),
            "count": len(columns),
        }
    return result
