"""The reference's split-half floor of the ensemble metrics, and the quality bar's pass / fail / n/a."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from pairwise_vae.evaluation.ensembles import compare_ensembles, floor_comparison, reference_floor, split_halves
from pairwise_vae.evaluation.quality_bar import bar_report, judge

MIRROR = np.array([1.0, 1.0, -1.0])


@pytest.fixture(scope="module")
def two_basins(aib9) -> np.ndarray:
    """(600, 58, 3) frames in time order: 300 right-handed helices, then their 300 mirror images (left-handed)."""
    right = aib9.coords[:1500:5].astype(np.float64)
    return np.concatenate([right, right * MIRROR])


def test_split_halves_interleave_contiguous_blocks():
    first, second = split_halves(40)
    assert first.tolist() == [i for i in range(40) if i // 2 % 2 == 0]
    assert second.tolist() == [i for i in range(40) if i // 2 % 2 == 1]
    assert [len(half) for half in split_halves(3)] == [2, 1]


def test_js_floor_of_a_two_basin_reference_is_small_and_positive(two_basins, aib9):
    floor = reference_floor(two_basins, 1000, aib9.topology)
    assert floor["frames"] == {"reference_half": 300, "other_half": 300, "other_half_used": 300}
    assert "20 contiguous blocks" in floor["method"] and "fewer than the 1000 samples" in floor["method"]
    # each half holds both basins in equal parts (a first-vs-second-half split would give JS ~ 1 here)
    assert (
        floor["handedness"]["reference"] == floor["handedness"]["samples"] == {"right": 0.5, "left": 0.5, "mixed": 0.0}
    )
    assert 0.0 < floor["samples"]["ramachandran_js_distance"]["mean"] < 0.35
    assert floor["samples"]["bonds_within_0.1_of_reference_mean"] > 0.99


def test_floor_subsamples_the_other_half_to_the_sample_count(two_basins, aib9):
    floor = reference_floor(two_basins, 100, aib9.topology)
    assert floor["frames"] == {"reference_half": 300, "other_half": 300, "other_half_used": 100}
    assert floor["samples"]["count"] == 100
    assert reference_floor(two_basins[:1], 100, aib9.topology) is None


def test_mirrored_samples_sit_far_above_the_floor_and_fail_the_bar(two_basins, aib9):
    right = two_basins[:300]
    report = compare_ensembles(two_basins, two_basins, right * MIRROR, aib9.topology)
    report.update(floor_comparison(report, two_basins, aib9.topology))
    js = report["ensemble_metrics"]["ramachandran_js_distance_mean"]
    assert js["samples"] > js["reference_floor"] + 0.2  # half the reference basins, none of the other half
    assert report["ensemble_metrics"]["helix_right_fraction_difference"] == pytest.approx(
        {"samples": 0.5, "reference_floor": 0.0}
    )
    bar = bar_report(judge(report))
    assert bar["criteria"]["kabsch_rmsd"]["met"] is True  # reconstructions are the frames themselves
    assert bar["criteria"]["helix_fractions"]["met"] is False
    assert bar["criteria"]["ramachandran_js"]["met"] is False
    assert bar["summary"] == "quality bar: 4 of 6 met (failed: helix_fractions, ramachandran_js)"


def test_a_molecule_without_backbone_gets_na_for_the_phi_psi_criteria(aib9):
    topology = dataclasses.replace(aib9.topology, atom_names=np.array(["X"] * aib9.topology.n_atoms))
    frames = aib9.coords[:40].astype(np.float64)
    report = compare_ensembles(frames, frames, frames[::2], topology)
    report.update(floor_comparison(report, frames, topology))
    assert "ramachandran_js_distance_mean" not in report["ensemble_metrics"]
    assert report["ensemble_metrics"]["bonds_within_0.1_of_reference_mean"]["reference_floor"] > 0.99
    bar = bar_report(judge(report))
    assert bar["criteria"]["helix_fractions"] == {
        "criterion": bar["criteria"]["helix_fractions"]["criterion"],
        "value": None,
        "bar": "no backbone phi/psi in this molecule",
        "met": None,
    }
    assert (bar["met"], bar["applicable"], bar["passed"]) == (4, 4, True)
    assert bar["summary"] == "quality bar: 4 of 4 met (n/a: helix_fractions, ramachandran_js)"


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
            "ramachandran_js_distance_mean": {"samples": 0.34, "reference_floor": 0.25},
            "helix_mixed_fraction_difference": {"samples": 0.05, "reference_floor": 0.01},
            **{key: {"samples": value, "reference_floor": 0.0} for key, value in differences.items()},
        },
    }


def test_the_bar_passes_when_every_criterion_is_met():
    bar = bar_report(judge(passing_report()))
    assert (bar["met"], bar["applicable"], bar["passed"]) == (6, 6, True)
    assert bar["summary"] == "quality bar: 6 of 6 met"
    assert bar["criteria"]["ramachandran_js"]["bar"] == "<= 0.350 (reference floor 0.250 + 0.1)"


@pytest.mark.parametrize(
    "failed, change",
    [
        ("kabsch_rmsd", lambda r: r["reconstruction"].update(kabsch_rmsd=0.51)),
        ("helix_fractions", lambda r: r["ensemble_metrics"]["helix_left_fraction_difference"].update(samples=0.06)),
        ("ramachandran_js", lambda r: r["ensemble_metrics"]["ramachandran_js_distance_mean"].update(samples=0.36)),
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
    assert bar["summary"] == f"quality bar: 5 of 6 met (failed: {failed})"


def test_without_a_reference_floor_the_js_criterion_is_na():
    report = passing_report()
    report["ensemble_metrics"]["ramachandran_js_distance_mean"]["reference_floor"] = None
    bar = bar_report(judge(report))
    assert bar["criteria"]["ramachandran_js"]["met"] is None
    assert bar["summary"] == "quality bar: 5 of 5 met (n/a: ramachandran_js)"
