"""Classifier two-sample tests on AIB9 ensembles with known answers, and matched floors by hand."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from pairwise_vae.data.records import ConformationDataset
from pairwise_vae.evaluation.floors import matched_floors
from pairwise_vae.evaluation.metrics import dihedrals, find_backbone, helix_classes
from pairwise_vae.evaluation.two_sample import (
    FEATURE_SETS,
    c2st,
    c2st_ensembles,
    c2st_floors,
    local_geometry_features,
    torsion_features,
)

FRAMES_PER_SET = 1000


def random_halves(aib9: ConformationDataset, seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Two disjoint sets of ``FRAMES_PER_SET`` AIB9 frames drawn at random from the whole file."""
    order = np.random.default_rng(seed).permutation(len(aib9.coords))
    return aib9.coords[order[:FRAMES_PER_SET]], aib9.coords[order[FRAMES_PER_SET : 2 * FRAMES_PER_SET]]


def test_same_distribution_is_indistinguishable(aib9: ConformationDataset) -> None:
    first, second = random_halves(aib9)
    results = c2st_ensembles(first, second, aib9.topology)
    assert set(results) == set(FEATURE_SETS)
    for result in results.values():
        assert abs(result.auc - 0.5) < 0.08
        assert result.per_class == FRAMES_PER_SET and result.folds == 5 and len(result.fold_aucs) == 5
    assert results["backbone_torsions"].n_features == 4 * len(find_backbone(aib9.topology).residue_ids)


def test_opposite_helix_hands_are_told_apart(aib9: ConformationDataset) -> None:
    classes = helix_classes(dihedrals(aib9.coords, find_backbone(aib9.topology).phi))
    right, left = aib9.coords[classes == 0], aib9.coords[classes == 1]
    torsions = c2st(torsion_features(right, aib9.topology), torsion_features(left, aib9.topology))
    assert torsions.auc > 0.95
    assert torsions.per_class == min(len(right), len(left))
    linear = c2st(torsion_features(right, aib9.topology), torsion_features(left, aib9.topology), classifier="logistic")
    assert linear.auc > 0.95


def test_stretched_bonds_show_in_local_geometry_only(aib9: ConformationDataset) -> None:
    """Scaling a conformation by 1.03 lengthens its ~1.5 Angstrom bonds by ~0.045 Angstrom and keeps
    every angle and torsion."""
    first, second = random_halves(aib9)
    results = c2st_ensembles(first, second * np.float32(1.03), aib9.topology)
    assert results["local_geometry"].auc > 0.95
    assert abs(results["backbone_torsions"].auc - 0.5) < 0.08


def test_features_of_a_molecule_without_backbone(aib9: ConformationDataset) -> None:
    topology = dataclasses.replace(aib9.topology, atom_names=np.full(aib9.topology.n_atoms, "X"))
    coords = aib9.coords[:40]
    assert torsion_features(coords, topology) is None
    geometry = local_geometry_features(coords, topology)
    assert geometry.shape[0] == 40 and geometry.shape[1] > len(topology.bonds)
    np.testing.assert_allclose(
        geometry[:, 0], np.linalg.norm(coords[:, topology.bonds[0, 0]] - coords[:, topology.bonds[0, 1]], axis=-1)
    )
    results = c2st_ensembles(coords[:20], coords[20:], topology)
    assert results["backbone_torsions"] is None and results["local_geometry"] is not None


def test_unknown_classifier_and_too_few_frames_are_refused() -> None:
    features = np.zeros((10, 3))
    with pytest.raises(ValueError, match="unknown classifier"):
        c2st(features, features, classifier="forest")
    with pytest.raises(ValueError, match="at least 2 frames"):
        c2st(features[:1], features)


def test_matched_floor_equals_the_metric_by_hand(aib9: ConformationDataset) -> None:
    pool, reference = aib9.coords[:3000], aib9.coords[3000:5000]

    def metric(samples: np.ndarray, frames: np.ndarray) -> float:
        return float(samples[:, 0, 0].mean() - frames[:, 0, 0].mean())

    def metrics(samples: np.ndarray, frames: np.ndarray) -> dict[str, float]:
        return {"shift": metric(samples, frames)}

    floor = matched_floors(metrics, pool, reference, n_samples=37, n_reference=53, repeats=4, seed=11)["shift"]
    assert (floor.n_samples, floor.n_reference, floor.matched) == (37, 53, True)
    by_hand = []
    for pool_indices, reference_indices in zip(floor.pool_indices, floor.reference_indices, strict=True):
        assert len(np.unique(pool_indices)) == 37 and pool_indices.max() < len(pool)
        assert len(np.unique(reference_indices)) == 53 and reference_indices.max() < len(reference)
        by_hand.append(pool[pool_indices, 0, 0].mean() - reference[reference_indices, 0, 0].mean())
    np.testing.assert_allclose(floor.values, by_hand, rtol=1e-6)
    np.testing.assert_allclose([floor.mean, floor.std], [np.mean(by_hand), np.std(by_hand)], rtol=1e-6)
    assert len(set(floor.values)) == 4  # fresh subsets each draw
    assert matched_floors(metrics, pool, reference, 37, 53, repeats=4, seed=11)["shift"].values == floor.values
    assert set(floor.to_dict()) >= {"mean", "std", "values", "n_samples", "n_reference", "matched"}


def test_matched_floor_with_a_small_pool_uses_all_of_it(aib9: ConformationDataset) -> None:
    pool, reference = aib9.coords[:20], aib9.coords[20:50]
    floor = matched_floors(lambda s, r: {"sizes": float(len(s) + 1000 * len(r))}, pool, reference, 25, 40)["sizes"]
    assert (floor.n_samples, floor.n_reference, floor.matched) == (20, 30, False)
    assert floor.values == [20 + 1000 * 30.0]


def test_c2st_floor_is_the_c2st_of_the_pool_at_the_model_sizes(aib9: ConformationDataset) -> None:
    pool, reference = aib9.coords[::2][:1000], aib9.coords[1::2][:1000]
    floors = c2st_floors(
        pool, reference, aib9.topology, n_samples=150, n_reference=200, repeats=2, seed=5, classifier="logistic"
    )
    for name, featurize in FEATURE_SETS.items():
        floor = floors[name]
        assert (floor.n_samples, floor.n_reference, len(floor.values)) == (150, 200, 2)
        pool_features, reference_features = featurize(pool, aib9.topology), featurize(reference, aib9.topology)
        for value, pool_indices, reference_indices in zip(
            floor.values, floor.pool_indices, floor.reference_indices, strict=True
        ):
            assert (
                value
                == c2st(pool_features[pool_indices], reference_features[reference_indices], classifier="logistic").auc
            )
        assert abs(floor.mean - 0.5) < 0.15
