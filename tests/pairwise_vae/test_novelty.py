"""Nearest-training-frame RMSDs against brute force, and the data-copying statistic on copies and fresh frames."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pairwise_vae.data.records import ConformationDataset
from pairwise_vae.evaluation import novelty as novelty_module
from pairwise_vae.evaluation.novelty import candidate_rmsd, copying_statistic, distance_vectors, nearest_rmsd, novelty
from pairwise_vae.geometry import kabsch_rmsd


def disjoint_sets(aib9: ConformationDataset, *sizes: int, seed: int = 0) -> list[np.ndarray]:
    """Disjoint random sets of AIB9 frames of the given sizes."""
    order = np.random.default_rng(seed).permutation(len(aib9.coords))
    bounds = np.cumsum((0, *sizes))
    return [aib9.coords[order[a:b]] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def test_candidate_rmsd_is_kabsch_with_reflection(aib9: ConformationDataset) -> None:
    queries, frames = aib9.coords[:6].astype(np.float64), aib9.coords[100:110].astype(np.float64)
    frames[3] = queries[0] * np.array([-1.0, 1.0, 1.0]) @ np.linalg.qr(np.random.default_rng(1).normal(size=(3, 3)))[0]
    centred_queries = queries - queries.mean(axis=1, keepdims=True)
    centred_frames = frames - frames.mean(axis=1, keepdims=True)
    pairs = np.tile(np.arange(10), (6, 1))
    got = candidate_rmsd(centred_queries, centred_frames, pairs)
    expected = kabsch_rmsd(
        torch.from_numpy(np.repeat(queries, 10, axis=0)), torch.from_numpy(np.tile(frames, (6, 1, 1))), True
    ).reshape(6, 10)
    np.testing.assert_allclose(got, expected.numpy(), atol=1e-5)
    assert got[0, 3] < 1e-5  # a rotated mirror image superposes exactly


def test_prefiltered_nearest_equals_brute_force(aib9: ConformationDataset) -> None:
    queries, frames = disjoint_sets(aib9, 50, 300)
    rmsd, index = nearest_rmsd(queries, frames)
    brute = kabsch_rmsd(
        torch.from_numpy(np.repeat(queries, len(frames), axis=0)),
        torch.from_numpy(np.tile(frames, (len(queries), 1, 1))),
        allow_reflection=True,
    ).reshape(len(queries), len(frames))
    np.testing.assert_allclose(rmsd, brute.min(dim=1).values.numpy(), atol=1e-5)
    np.testing.assert_array_equal(index, brute.argmin(dim=1).numpy())


def test_a_subset_of_pairs_still_finds_the_nearest_frame_of_near_copies(
    aib9: ConformationDataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(novelty_module, "FINGERPRINT_PAIRS", 100)  # of AIB9's 1,653, as for a large molecule
    frames, fresh = disjoint_sets(aib9, 1000, 50)
    assert distance_vectors(frames[:3]).shape == (3, 100)
    rng = np.random.default_rng(3)
    chosen = rng.choice(len(frames), 50, replace=False)
    copies = frames[chosen] + rng.normal(0.0, 0.05, (50, 58, 3)).astype(np.float32)
    rmsd, index = nearest_rmsd(copies, frames)
    np.testing.assert_array_equal(index, chosen)
    assert rmsd.max() < 0.15
    # fresh frames: nearly always the brute-force nearest, within a few per cent where not
    rmsd, _ = nearest_rmsd(fresh, frames)
    exhaustive, _ = nearest_rmsd(fresh, frames, candidates=len(frames))
    assert np.mean(np.isclose(rmsd, exhaustive, atol=1e-6)) >= 0.8
    assert np.all(rmsd <= 1.1 * exhaustive + 1e-6)


def test_copying_statistic_by_hand() -> None:
    z, p_value = copying_statistic(np.array([1.0, 2.0, 3.0]), np.array([4.0, 5.0, 6.0]))
    assert z == pytest.approx(-4.5 / np.sqrt(9 * 7 / 12))
    assert p_value == pytest.approx(0.0495, abs=1e-3)
    z_far, _ = copying_statistic(np.array([4.0, 5.0, 6.0]), np.array([1.0, 2.0, 3.0]))
    assert z_far == pytest.approx(-z)


def test_copies_of_training_frames_are_flagged_and_fresh_frames_are_not(aib9: ConformationDataset) -> None:
    training, test, fresh = disjoint_sets(aib9, 3000, 500, 500)
    rng = np.random.default_rng(2)
    copies = training[rng.choice(len(training), 500, replace=False)] + rng.normal(0.0, 0.01, (500, 58, 3)).astype(
        np.float32
    )
    copied = novelty(copies, test, training)
    assert 0.01 < copied.sample_median < 0.02
    assert copied.test_median > 0.2
    assert copied.z < -10 and copied.p_value < 1e-10
    honest = novelty(fresh, test, training)
    assert honest.sample_median == pytest.approx(honest.test_median, rel=0.1)
    assert abs(honest.z) < 3 and honest.p_value > 0.003
    assert honest.test_median == copied.test_median and honest.test_p5 < honest.test_median
    record = honest.to_dict()
    assert record["n_samples"] == 500 and record["n_training"] == 3000 and record["copying_z"] == honest.z
