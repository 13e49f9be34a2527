"""Matched floors: what a perfect model would score on a sample-vs-reference metric at the sizes
the model itself is scored at.

A metric such as a Jensen-Shannon distance of histograms or a classifier AUC is biased by finite
sampling, and the bias depends on how many samples and reference frames enter it. The floor of a
metric is the same metric with held-out MD frames the model never saw (the pool) in place of the
samples, subsampled to exactly the model's ``n_samples``, against the reference subsampled to
exactly its ``n_reference``. Subsets are drawn without replacement by a seeded generator, a few
times, and the mean and spread of the metric over the draws reported.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

FLOOR_REPEATS = 3
FLOOR_SEED = 0


@dataclass
class MatchedFloor:
    """A metric's floor at matched sizes (:func:`matched_floors`).

    ``mean`` and ``std`` (population standard deviation) are over ``values``, one per draw.
    ``n_samples`` and ``n_reference`` are the sizes used; ``matched`` is False where the pool or
    the reference held fewer frames than requested (then all of them were used). The frame
    indices of each draw are kept for inspection but left out of :meth:`to_dict`.
    """

    mean: float
    std: float
    values: list[float]
    n_samples: int
    n_reference: int
    matched: bool
    pool_frames: int
    reference_frames: int
    pool_indices: list[np.ndarray] = field(repr=False)
    reference_indices: list[np.ndarray] = field(repr=False)

    def to_dict(self) -> dict[str, object]:
        return {
            "mean": self.mean,
            "std": self.std,
            "values": self.values,
            "n_samples": self.n_samples,
            "n_reference": self.n_reference,
            "matched": self.matched,
            "pool_frames": self.pool_frames,
            "reference_frames": self.reference_frames,
        }


def draw_indices(n_frames: int, n_wanted: int, rng: np.random.Generator) -> np.ndarray:
    """``min(n_wanted, n_frames)`` distinct frame indices, sorted: all of them when too few, else a
    uniform draw without replacement."""
    if n_wanted >= n_frames:
        return np.arange(n_frames)
    return np.sort(rng.choice(n_frames, size=n_wanted, replace=False))


def matched_floors(
    metrics: Callable[[np.ndarray, np.ndarray], dict[str, float]],
    pool: np.ndarray,
    reference: np.ndarray,
    n_samples: int,
    n_reference: int,
    repeats: int = FLOOR_REPEATS,
    seed: int = FLOOR_SEED,
) -> dict[str, MatchedFloor]:
    """The floors of sample-vs-reference metrics at the model's sizes, all from the same draws.

    Args:
        metrics: called as ``metrics(pool_subset, reference_subset)``, returning ``{name: value}``; a
            name missing (or None) in some draw (a metric that does not apply) is left out.
        pool: (P, ...) held-out frames, disjoint from the reference and unseen in training (for
            conformations (P, N, 3) Angstrom; any per-frame array works, e.g. features).
        reference: (R, ...) the reference the model is scored against, same trailing shape.
        n_samples: number of samples the model's metrics used.
        n_reference: number of reference frames the model's metrics used.
        repeats: independent draws (each a fresh subset of pool and reference).
        seed: seed of the draws.

    Returns:
        Per name its :class:`MatchedFloor`; with a pool and reference no larger than the requested
        sizes every draw is the same, so ``repeats`` then falls to one.
    """
    if len(pool) == 0 or len(reference) == 0 or n_samples < 1 or n_reference < 1:
        raise ValueError("matched_floors needs a non-empty pool and reference and sizes of at least 1")
    if n_samples >= len(pool) and n_reference >= len(reference):
        repeats = 1
    rng = np.random.default_rng(seed)
    pool_indices, reference_indices, draws = [], [], []
    for _ in range(repeats):
        pool_indices.append(draw_indices(len(pool), n_samples, rng))
        reference_indices.append(draw_indices(len(reference), n_reference, rng))
        draws.append(metrics(pool[pool_indices[-1]], reference[reference_indices[-1]]))
    used_samples, used_reference = len(pool_indices[0]), len(reference_indices[0])
    names = [name for name in draws[0] if all(draw.get(name) is not None for draw in draws)]
    return {
        name: MatchedFloor(
            mean=float(np.mean([float(draw[name]) for draw in draws])),
            std=float(np.std([float(draw[name]) for draw in draws])),
            values=[float(draw[name]) for draw in draws],
            n_samples=used_samples,
            n_reference=used_reference,
            matched=used_samples == n_samples and used_reference == n_reference,
            pool_frames=len(pool),
            reference_frames=len(reference),
            pool_indices=pool_indices,
            reference_indices=reference_indices,
        )
        for name in names
    }
