"""The model's samples against the reference at matched sizes, each number beside its floor
(:func:`matched_scores`).

The samples are scored at ``n = min(samples, pool)`` frames against all the reference frames, and
each floor is the same number for ``n`` unseen MD frames of the pool against the same reference
(:mod:`bond_vae.evaluation.floors`), so that a perfect model means "as good as more MD from the
same engine" whatever the sizes. Three kinds of number:

* the flat ensemble metrics (:func:`bond_vae.evaluation.ensembles.ensemble_metrics`: phi/psi
  Jensen-Shannon distance, helix fractions, bonds, clashes, radius of gyration);
* classifier two-sample tests (:mod:`bond_vae.evaluation.two_sample`): the ROC AUC of telling
  samples from reference frames on backbone torsions (a joint test of how residues move together)
  and on local geometry (bond lengths and angles);
* novelty (:mod:`bond_vae.evaluation.novelty`): how close samples lie to their nearest
  training frame against how close the reference frames lie to it.

With relaxed samples, each number is given for them beside the model's own.
"""

from __future__ import annotations

import numpy as np

from bond_vae.data.records import Topology
from bond_vae.evaluation.ensembles import ensemble_metrics, sample_agreement
from bond_vae.evaluation.floors import MatchedFloor, matched_floors
from bond_vae.evaluation.novelty import novelty
from bond_vae.evaluation.references import EvaluationFrames
from bond_vae.evaluation.two_sample import FEATURE_SETS, c2st_ensembles, c2st_floors


def beside_floor(samples: float | None, relaxed: float | None, floor: MatchedFloor | None, with_relaxed: bool) -> dict:
    """One row of a report table: the samples' value, the relaxed samples' (``with_relaxed``), the floor's
    mean and its spread over draws (None without a floor)."""
    return {
        "samples": samples,
        **({"relaxed_samples": relaxed} if with_relaxed else {}),
        "floor": None if floor is None else floor.mean,
        "floor_std": None if floor is None else floor.std,
    }


def matched_scores(
    samples: np.ndarray, relaxed: np.ndarray | None, frames: EvaluationFrames, topology: Topology
) -> dict:
    """The ``matched``, ``ensemble_metrics``, ``two_sample`` and ``novelty`` entries of a report.

    Args:
        samples: (S, N, 3) the model's samples, Angstrom.
        relaxed: (S, N, 3) the same samples relaxed, or None.
        frames: the reference, the pool of unseen MD and the training frames.
        topology: the molecule.

    Returns:
        ``matched``: the sizes and where the floors come from; ``ensemble_metrics`` and ``two_sample``
        (ROC AUC per feature set; None where the molecule lacks the features or a set has one frame):
        per key the rows of :func:`beside_floor`; ``novelty``: :class:`NoveltyResult` entries of the samples (and of the
        relaxed samples), None without training frames.
    """
    reference, pool = frames.reference, frames.pool
    n = len(samples) if pool is None else min(len(samples), len(pool))
    ensembles = {"samples": samples[:n]}
    if relaxed is not None:
        ensembles["relaxed_samples"] = relaxed[:n]

    def metrics(ensemble: np.ndarray, against: np.ndarray) -> dict[str, float]:
        return ensemble_metrics(sample_agreement(ensemble, against, topology))

    scores = {name: metrics(ensemble, reference) for name, ensemble in ensembles.items()}
    floors = {} if pool is None else matched_floors(metrics, pool, reference, n, len(reference))
    relaxed_scores = scores.get("relaxed_samples", {})
    table = {
        key: beside_floor(value, relaxed_scores.get(key), floors.get(key), relaxed is not None)
        for key, value in scores["samples"].items()
    }
    testable = min(n, len(reference)) >= 2  # a two-sample test needs two frames of each set
    tests = {
        name: c2st_ensembles(ensemble, reference, topology) if testable else dict.fromkeys(FEATURE_SETS)
        for name, ensemble in ensembles.items()
    }
    test_floors = {} if pool is None or not testable else c2st_floors(pool, reference, topology, n, len(reference))
    two_sample: dict[str, dict | None] = {}
    for feature_set, result in tests["samples"].items():
        if result is None:
            two_sample[feature_set] = None
            continue
        relaxed_result = tests.get("relaxed_samples", {}).get(feature_set)
        two_sample[feature_set] = beside_floor(
            result.auc,
            None if relaxed_result is None else relaxed_result.auc,
            test_floors.get(feature_set),
            relaxed is not None,
        ) | {"per_class": result.per_class, "folds": result.folds, "classifier": result.classifier}
    found_novelty = None
    if frames.training is not None:
        full = {"samples": samples} | ({} if relaxed is None else {"relaxed_samples": relaxed})
        found_novelty = {
            name: novelty(ensemble, reference, frames.training).to_dict() for name, ensemble in full.items()
        }
    draws = len(next(iter(floors.values())).values) if floors else 0
    return {
        "matched": {
            "n_samples": n,
            "n_reference": len(reference),
            "pool": frames.pool_description,
            "floor_draws": draws,
        },
        "ensemble_metrics": table,
        "two_sample": two_sample,
        "novelty": found_novelty,
    }
