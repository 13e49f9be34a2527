"""Novelty and data copying: how close samples lie to the training frames, against how close
held-out MD frames lie to them.

For every sample and every held-out test frame, the RMSD to its nearest training frame after
optimal superposition with reflection allowed (:func:`nearest_rmsd`). A model that memorised its
training set puts samples closer to training than fresh MD frames are; the data-copying test of
Meehan, Chaudhuri & Dasgupta (AISTATS 2020) compares the two distributions of nearest-neighbour
distances by a Mann-Whitney U test (:func:`copying_statistic`), here over the whole space (their
Z_U, without their partition into cells): Z < 0 when samples are closer to training than test
frames (copying), Z > 0 when farther (under-fitting or samples off the data).

Test frames that neighbour training frames in time sit closer to them than independent draws
would, which biases Z upwards; blocks of held-out frames keep that to their edges.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.stats import mannwhitneyu  # scipy: a dependency of scikit-learn

NEIGHBOUR_CANDIDATES = 64
QUERY_CHUNK = 256
# atom pairs of the prefilter's fingerprint: all of them up to this many (AIB9 has 1,653), else a fixed random
# subset, so that the fingerprints of F frames take at most 4 B x F x FINGERPRINT_PAIRS (16 KiB a frame)
FINGERPRINT_PAIRS = 4096


@dataclass
class NoveltyResult:
    """Nearest-training-frame RMSDs of samples and test frames (Angstrom) and the copying test.

    ``z`` and ``p_value``: :func:`copying_statistic` of the sample against the test distances.
    The per-frame distances are kept but left out of :meth:`to_dict`.
    """

    sample_median: float
    sample_p5: float
    test_median: float
    test_p5: float
    z: float
    p_value: float
    n_samples: int
    n_test: int
    n_training: int
    candidates: int
    sample_rmsd: np.ndarray = field(repr=False)
    test_rmsd: np.ndarray = field(repr=False)

    def to_dict(self) -> dict[str, object]:
        return {
            "sample_nearest_training_rmsd_median": self.sample_median,
            "sample_nearest_training_rmsd_p5": self.sample_p5,
            "test_nearest_training_rmsd_median": self.test_median,
            "test_nearest_training_rmsd_p5": self.test_p5,
            "copying_z": self.z,
            "copying_p_value": self.p_value,
            "n_samples": self.n_samples,
            "n_test": self.n_test,
            "n_training": self.n_training,
            "candidates": self.candidates,
        }


def fingerprint_pairs(n_atoms: int) -> tuple[np.ndarray, np.ndarray]:
    """The atom pairs (i, j), i < j, of the fingerprint: all of them in row-major order when there are at most
    ``FINGERPRINT_PAIRS``, else that many chosen at random (seed 0, the same for every call), in that order."""
    i, j = np.triu_indices(n_atoms, k=1)
    if len(i) <= FINGERPRINT_PAIRS:
        return i, j
    chosen = np.sort(np.random.default_rng(0).choice(len(i), FINGERPRINT_PAIRS, replace=False))
    return i[chosen], j[chosen]


def distance_vectors(coords: np.ndarray, chunk: int = 512) -> np.ndarray:
    """Interatomic distances of each frame (:func:`fingerprint_pairs`), a rotation-, translation- and
    reflection-invariant fingerprint.

    Args:
        coords: (F, N, 3) conformations, Angstrom.

    Returns:
        (F, P) float32 distances in Angstrom, P = min(N (N - 1) / 2, ``FINGERPRINT_PAIRS``).
    """
    i, j = fingerprint_pairs(coords.shape[1])
    blocks = [
        np.linalg.norm(c[:, i] - c[:, j], axis=-1)
        for c in np.array_split(coords.astype(np.float32), max(1, -(-len(coords) // chunk)))
    ]
    return np.concatenate(blocks)


def candidate_rmsd(queries: np.ndarray, frames: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """RMSD after optimal superposition, reflection allowed, of each query to its candidate frames.

    For centred P and T the least squared deviation over rotations and reflections is
    |P|^2 + |T|^2 - 2 (sum of the singular values of P^T T) (Kabsch).

    Args:
        queries: (Q, N, 3) centred conformations, float64, Angstrom.
        frames: (F, N, 3) centred conformations, float64, Angstrom.
        candidates: (Q, k) frame indices.

    Returns:
        (Q, k) RMSD in Angstrom.
    """
    chosen = frames[candidates]
    covariance = np.swapaxes(queries, 1, 2)[:, None] @ chosen
    overlap = np.linalg.svd(covariance, compute_uv=False).sum(axis=-1)
    squared = (queries**2).sum(axis=(1, 2))[:, None] + (chosen**2).sum(axis=(2, 3)) - 2.0 * overlap
    return np.sqrt(np.clip(squared, 0.0, None) / queries.shape[1])


def nearest_rmsd(
    queries: np.ndarray, frames: np.ndarray, candidates: int = NEIGHBOUR_CANDIDATES
) -> tuple[np.ndarray, np.ndarray]:
    """Each query's nearest frame by RMSD after optimal superposition with reflection allowed.

    Prefilter: the frames whose interatomic-distance vectors (:func:`distance_vectors`) lie
    nearest the query's in Euclidean distance; exact RMSD (:func:`candidate_rmsd`) on the best
    ``candidates`` of them. On AIB9 (8,000 frames) the true nearest frame ranks within the first 64
    by the prefilter for about 99 % of queries, and a miss costs about 0.02 % of the distance on
    average. Misses happen mostly for queries far from every frame (nearest RMSD of several
    Angstrom), where distance vectors rank frames least like RMSD does; near-copies are always
    found. Molecules of more than 91 atoms rank on ``FINGERPRINT_PAIRS`` of their pairs (near-copies
    are still found). With ``candidates >= len(frames)`` the search is exhaustive.

    Args:
        queries: (Q, N, 3) conformations, Angstrom.
        frames: (F, N, 3) conformations to search, Angstrom.
        candidates: frames per query given the exact RMSD.

    Returns:
        (Q,) RMSD to the nearest frame in Angstrom, and (Q,) its index into ``frames``.
    """
    if len(frames) == 0:
        raise ValueError("nearest_rmsd needs at least one frame to search")
    k = min(candidates, len(frames))
    frame_vectors = distance_vectors(frames)
    centre = frame_vectors.mean(axis=0)
    frame_vectors -= centre
    frame_norms = (frame_vectors**2).sum(axis=1)
    frames = frames.astype(np.float64)
    frames -= frames.mean(axis=1, keepdims=True)
    rmsd, index = np.empty(len(queries)), np.empty(len(queries), dtype=np.int64)
    for start in range(0, len(queries), QUERY_CHUNK):
        block = queries[start : start + QUERY_CHUNK].astype(np.float64)
        vectors = distance_vectors(block) - centre
        # squared Euclidean distances less each query's own |v|^2, which does not change its ranking
        squared = frame_norms[None, :] - 2.0 * vectors @ frame_vectors.T
        nearest = (
            np.argpartition(squared, k - 1, axis=1)[:, :k]
            if k < len(frames)
            else np.tile(np.arange(k), (len(block), 1))
        )
        exact = candidate_rmsd(block - block.mean(axis=1, keepdims=True), frames, nearest)
        best = exact.argmin(axis=1)
        rows = np.arange(len(block))
        rmsd[start : start + len(block)] = exact[rows, best]
        index[start : start + len(block)] = nearest[rows, best]
    return rmsd, index


def copying_statistic(sample_distances: np.ndarray, test_distances: np.ndarray) -> tuple[float, float]:
    """Meehan et al.'s Z_U: the Mann-Whitney U of sample against test nearest-training distances,
    normalised, Z = (U - m n / 2) / sqrt(m n (m + n + 1) / 12) with the tie correction, where U
    counts the (sample, test) pairs in which the sample is farther from training (ties count half).

    Args:
        sample_distances: (m,) nearest-training distances of samples.
        test_distances: (n,) nearest-training distances of held-out test frames.

    Returns:
        (Z, two-sided p-value): Z < 0 when samples are closer to training than test frames (copying).
    """
    m, n = len(sample_distances), len(test_distances)
    result = mannwhitneyu(
        sample_distances, test_distances, alternative="two-sided", method="asymptotic", use_continuity=False
    )
    _, counts = np.unique(np.concatenate([sample_distances, test_distances]), return_counts=True)
    ties = (counts**3 - counts).sum() / ((m + n) * (m + n - 1))
    variance = m * n / 12.0 * ((m + n + 1) - ties)
    return float((result.statistic - m * n / 2.0) / np.sqrt(variance)), float(result.pvalue)


def novelty(
    samples: np.ndarray, test: np.ndarray, training: np.ndarray, candidates: int = NEIGHBOUR_CANDIDATES
) -> NoveltyResult:
    """Nearest-training-frame RMSDs of samples and of held-out test frames, and the copying test.

    Args:
        samples: (S, N, 3) generated conformations, Angstrom.
        test: (T, N, 3) held-out MD frames the model did not train on, Angstrom.
        training: (F, N, 3) the model's training frames, Angstrom.
        candidates: as for :func:`nearest_rmsd`.

    Returns:
        The :class:`NoveltyResult`: medians and 5th percentiles of both distance distributions, and Z and p.
    """
    if len(samples) == 0 or len(test) == 0:
        raise ValueError("novelty needs samples and test frames")
    distances, _ = nearest_rmsd(np.concatenate([samples, test]), training, candidates)
    sample_rmsd, test_rmsd = distances[: len(samples)], distances[len(samples) :]
    z, p_value = copying_statistic(sample_rmsd, test_rmsd)
    return NoveltyResult(
        sample_median=float(np.median(sample_rmsd)),
        sample_p5=float(np.percentile(sample_rmsd, 5)),
        test_median=float(np.median(test_rmsd)),
        test_p5=float(np.percentile(test_rmsd, 5)),
        z=z,
        p_value=p_value,
        n_samples=len(samples),
        n_test=len(test),
        n_training=len(training),
        candidates=min(candidates, len(training)),
        sample_rmsd=sample_rmsd,
        test_rmsd=test_rmsd,
    )
