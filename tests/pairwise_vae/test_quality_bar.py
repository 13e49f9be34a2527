"""Matched floors of the ensemble metrics and two-sample tests, and the quality bar's pass / fail / n/a."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from pairwise_helpers import replica_frames
from pairwise_vae.evaluation.ensembles import compare_ensembles, ensemble_metrics, sample_agreement
from pairwise_vae.evaluation.quality_bar import bar_report, judge
from pairwise_vae.evaluation.references import EvaluationFrames, frames_to_training, split_halves
from pairwise_vae.evaluation.scoring import matched_scores
from pairwise_vae.evaluation.two_sample import c2st_ensembles

MIRROR = np.array([1.0, 1.0, -1.0])


@pytest.fixture(scope="module")
def right_helices(aib9) -> np.ndarray:
    """(1500, 58, 3) right-handed helices of the two 300 K replicas of that condition, float64, in time order."""
    return np.concatenate([replica_frames(aib9, 0), replica_frames(aib9, 6)])[:1500].astype(np.float64)


@pytest.fixture(scope="module")
def two_basins(right_helices) -> np.ndarray:
    """(600, 58, 3) frames in time order: 300 right-handed helices, then 300 left-handed ones (the mirror images
    of other right-handed frames: exact mirror pairs would let a classifier match a frame to its partner)."""
    return np.concatenate([right_helices[0::5], right_helices[1::5] * MIRROR])


@pytest.fixture(scope="module")
def unseen(right_helices) -> np.ndarray:
    """(600, 58, 3) frames of the same two basins that are not in ``two_basins`` (other time steps)."""
    return np.concatenate([right_helices[2::5], right_helices[3::5] * MIRROR])


def judged_on(reference: np.ndarray, pool: np.ndarray | None) -> EvaluationFrames:
    return EvaluationFrames(reference, "reference", "relation", pool, "pool", None)


def test_split_halves_interleave_contiguous_blocks():
    first, second = split_halves(40)
    assert first.tolist() == [i for i in range(40) if i // 2 % 2 == 0]
    assert second.tolist() == [i for i in range(40) if i // 2 % 2 == 1]
    assert [len(half) for half in split_halves(3)] == [2, 1]


def test_frames_to_the_nearest_training_frame_by_hand():
    train = np.array([0, 1, 2, 5, 6, 9])
    assert frames_to_training(train, np.array([3, 4, 7, 8, 10])).tolist() == [1, 1, 1, 1, 1]
    assert frames_to_training(np.array([0, 10]), np.array([3, 4, 6, 12])).tolist() == [3, 4, 4, 2]


def test_samples_and_floor_are_scored_at_the_pool_size_against_the_whole_reference(two_basins, unseen, aib9):
    right_400k = np.concatenate([replica_frames(aib9, 2), replica_frames(aib9, 8)])
    samples = right_400k[:1200].astype(np.float64)  # 1,200 right-handed frames (400 K), more than the pool's
    pool = unseen[::2]
    scores = matched_scores(samples, None, judged_on(two_basins, pool), aib9.topology)
    assert scores["matched"] == {"n_samples": 300, "n_reference": 600, "pool": "pool", "floor_draws": 1}
    # by hand: the first 300 samples against all 600 reference frames; the whole pool against them
    by_hand = ensemble_metrics(sample_agreement(samples[:300], two_basins, aib9.topology))
    floor = ensemble_metrics(sample_agreement(pool, two_basins, aib9.topology))
    for key, row in scores["ensemble_metrics"].items():
        assert row == {"samples": by_hand[key], "floor": floor[key], "floor_std": 0.0}, key
    # the pool holds both basins in equal parts, the samples (almost) one of them
    assert scores["ensemble_metrics"]["helix_right_fraction_difference"]["samples"] > 0.3
    assert scores["ensemble_metrics"]["helix_right_fraction_difference"]["floor"] == 0.0
    torsions = scores["two_sample"]["backbone_torsions"]
    assert torsions["samples"] == c2st_ensembles(samples[:300], two_basins, aib9.topology)["backbone_torsions"].auc
    assert torsions["per_class"] == 300 and torsions["floor"] < 0.65 < torsions["samples"]
    assert scores["novelty"] is None  # no training frames given


def test_a_larger_pool_is_subsampled_in_several_draws(two_basins, unseen, aib9):
    scores = matched_scores(two_basins[::10], None, judged_on(two_basins, unseen), aib9.topology)
    assert scores["matched"]["n_samples"] == 60 and scores["matched"]["floor_draws"] == 3
    js = scores["ensemble_metrics"]["ramachandran_js_distance_mean"]
    assert js["floor_std"] > 0.0  # three different subsets of 60 pool frames
    assert 0.0 < js["floor"] < 0.6


def test_without_a_pool_there_is_no_floor(two_basins, aib9):
    scores = matched_scores(two_basins[:50], None, judged_on(two_basins, None), aib9.topology)
    assert scores["matched"]["n_samples"] == 50 and scores["matched"]["floor_draws"] == 0
    assert all(row["floor"] is None for row in scores["ensemble_metrics"].values())
    assert scores["two_sample"]["backbone_torsions"]["floor"] is None


def test_mirrored_samples_sit_far_above_the_floor_and_fail_the_bar(two_basins, unseen, aib9):
    right = two_basins[:300]
    report = compare_ensembles(two_basins, two_basins, right * MIRROR, aib9.topology)
    report.update(matched_scores(right * MIRROR, None, judged_on(two_basins, unseen[::2]), aib9.topology))
    js = report["ensemble_metrics"]["ramachandran_js_distance_mean"]
    assert js["samples"] > js["floor"] + 0.2  # half the reference basins, none of the other half
    assert report["ensemble_metrics"]["helix_right_fraction_difference"]["samples"] == 0.5
    bar = bar_report(judge(report))
    assert bar["criteria"]["kabsch_rmsd"]["met"] is True  # reconstructions are the frames themselves
    assert bar["criteria"]["helix_fractions"]["met"] is False
    assert bar["criteria"]["ramachandran_js"]["met"] is False
    assert bar["criteria"]["torsion_c2st"]["met"] is False  # every right-handed reference frame is told apart
    assert bar["summary"] == "quality bar: 4 of 7 met (failed: helix_fractions, ramachandran_js, torsion_c2st)"


def test_a_molecule_without_backbone_gets_na_for_the_phi_psi_criteria(aib9):
    topology = dataclasses.replace(aib9.topology, atom_names=np.array(["X"] * aib9.topology.n_atoms))
    frames = aib9.coords[:40].astype(np.float64)
    report = compare_ensembles(frames, frames, frames[::2], topology)
    report.update(matched_scores(frames[::2], None, judged_on(frames[::2], frames[1::2]), topology))
    assert "ramachandran_js_distance_mean" not in report["ensemble_metrics"]
    assert report["two_sample"]["backbone_torsions"] is None
    assert report["ensemble_metrics"]["bonds_within_0.1_of_reference_mean"]["floor"] > 0.99
    bar = bar_report(judge(report))
    assert bar["criteria"]["helix_fractions"] == {
        "criterion": bar["criteria"]["helix_fractions"]["criterion"],
        "value": None,
        "bar": "no backbone phi/psi in this molecule",
        "met": None,
    }
    assert (bar["met"], bar["applicable"], bar["passed"]) == (4, 4, True)
    assert bar["summary"] == "quality bar: 4 of 4 met (n/a: helix_fractions, ramachandran_js, torsion_c2st)"


def passing_report() -> dict:
    """The parts of an evaluation report the bar reads, every criterion met."""
    differences = {"helix_right_fraction_difference": 0.04, "helix_left_fraction_difference": 0.01}
    return {
        "reconstruction": {"kabsch_rmsd": 0.45},
        "samples": {
            "bonds_within_0.1_of_reference_mean": 0.985,
            "clash_fraction": {"samples": 0.02, "reference": 0.015},
            "radius_of_gyration": {"sample_mean": 6.15, "reference_mean": 6.0},
        },
        "ensemble_metrics": {
            "ramachandran_js_distance_mean": {"samples": 0.34, "floor": 0.25},
            "helix_mixed_fraction_difference": {"samples": 0.05, "floor": 0.01},
            **{key: {"samples": value, "floor": 0.0} for key, value in differences.items()},
        },
        "two_sample": {"backbone_torsions": {"samples": 0.64, "floor": 0.55}},
    }


def test_the_bar_passes_when_every_criterion_is_met():
    bar = bar_report(judge(passing_report()))
    assert (bar["met"], bar["applicable"], bar["passed"]) == (7, 7, True)
    assert bar["summary"] == "quality bar: 7 of 7 met"
    assert bar["criteria"]["ramachandran_js"]["bar"] == "<= 0.350 (matched floor 0.250 + 0.1)"
    assert bar["criteria"]["torsion_c2st"]["bar"] == "<= 0.650 (matched floor 0.550 + 0.1)"


@pytest.mark.parametrize(
    "failed, change",
    [
        ("kabsch_rmsd", lambda r: r["reconstruction"].update(kabsch_rmsd=0.51)),
        ("helix_fractions", lambda r: r["ensemble_metrics"]["helix_left_fraction_difference"].update(samples=0.06)),
        ("ramachandran_js", lambda r: r["ensemble_metrics"]["ramachandran_js_distance_mean"].update(samples=0.36)),
        ("torsion_c2st", lambda r: r["two_sample"]["backbone_torsions"].update(samples=0.66)),
        ("bonds_within_0.1", lambda r: r["samples"].update({"bonds_within_0.1_of_reference_mean": 0.975})),
        ("clash_fraction", lambda r: r["samples"]["clash_fraction"].update(samples=0.03)),
        ("radius_of_gyration", lambda r: r["samples"]["radius_of_gyration"].update(sample_mean=5.75)),
    ],
)
def test_the_bar_fails_each_criterion_just_past_its_threshold(failed, change):
    report = passing_report()
    change(report)
    bar = bar_report(judge(report))
    assert [key for key, c in bar["criteria"].items() if not c["met"]] == [failed]
    assert bar["passed"] is False
    assert bar["summary"] == f"quality bar: 6 of 7 met (failed: {failed})"


def test_a_chiral_molecule_is_judged_on_the_samples_that_keep_every_stereocentre():
    report = passing_report()
    without = bar_report(judge(report))
    report["stereocentres"] = {"reference": {"all_kept": 1.0}, "samples": {"all_kept": 0.99}}
    bar = bar_report(judge(report))
    assert (bar["met"], bar["applicable"]) == (without["met"] + 1, without["applicable"] + 1)
    assert bar["criteria"]["stereocentres"]["bar"] == ">= 0.990 (reference 1.000 - 0.01)"
    report["stereocentres"]["samples"]["all_kept"] = 0.985
    bar = bar_report(judge(report))
    assert [key for key, c in bar["criteria"].items() if c["met"] is False] == ["stereocentres"]


def test_without_a_floor_the_criteria_read_against_it_are_na():
    report = passing_report()
    report["ensemble_metrics"]["ramachandran_js_distance_mean"]["floor"] = None
    report["two_sample"]["backbone_torsions"]["floor"] = None
    bar = bar_report(judge(report))
    assert bar["criteria"]["ramachandran_js"]["met"] is None and bar["criteria"]["torsion_c2st"]["met"] is None
    assert bar["summary"] == "quality bar: 5 of 5 met (n/a: ramachandran_js, torsion_c2st)"
