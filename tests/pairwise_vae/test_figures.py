"""Evaluation figures: files written, superposition, element colours, frames picked, molecules without a backbone."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from matplotlib.colors import to_rgb
from pairwise_helpers import random_orthogonal, replica_frames
from pairwise_vae.data.records import ConformationDataset, Topology
from pairwise_vae.evaluation.ensembles import compare_ensembles, projections, write_figures
from pairwise_vae.evaluation.metrics import dihedrals, find_backbone
from pairwise_vae.evaluation.references import EvaluationFrames
from pairwise_vae.evaluation.scoring import matched_scores
from pairwise_vae.evaluation.structure_figure import (
    OTHER_COLOUR,
    element_colour,
    principal_axes,
    spread_frames,
    structure_basins,
    superpose,
)

FIGURES = {"bonds_angles.png", "distances_rg.png", "structures.png", "ramachandran.png", "free_energy.png"}
MIRROR = np.array([1.0, 1.0, -1.0])
# capped alanine (ACE-ALA-NME) heavy atoms, phi -70 and psi 140 degrees, Angstrom
CAPPED_ALANINE = np.array(
    [
        [0.0, 0.0, 0.0],
        [1.52, 0.0, 0.0],
        [2.1, 1.05, 0.0],
        [2.103, -1.195, 0.0],
        [3.555, -1.348, 0.0],
        [3.927, -2.811, 0.25],
        [4.123, -0.917, -1.342],
        [3.548, -1.197, -2.393],
        [5.261, -0.229, -1.3],
        [5.921, 0.249, -2.511],
    ]
)
CAPPED_ALANINE_BONDS = np.array([[0, 1], [1, 2], [1, 3], [3, 4], [4, 5], [4, 6], [6, 7], [6, 8], [8, 9]])


def capped_alanine(atom_names: list[str], residue_ids: list[int]) -> Topology:
    return Topology(
        atomic_numbers=np.array([6, 6, 8, 7, 6, 6, 6, 8, 7, 6]),
        atom_names=np.array(atom_names),
        residue_ids=np.array(residue_ids),
        residue_names=np.array(["ACE"] * 3 + ["ALA"] * 5 + ["NME"] * 2),
        bonds=CAPPED_ALANINE_BONDS,
    )


def capped_alanine_frames(count: int, seed: int) -> np.ndarray:
    """(count, 10, 3) noisy copies, half of them mirrored (phi > 0), Angstrom."""
    rng = np.random.default_rng(seed)
    frames = CAPPED_ALANINE + rng.normal(scale=0.05, size=(count, 10, 3))
    frames[::2] *= MIRROR
    return frames


def aib9_ensembles(aib9: ConformationDataset) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """30 reference frames, their noisy reconstructions and 30 other noisy frames, all AIB9 replicas."""
    rng = np.random.default_rng(0)
    reference = aib9.coords[::300].astype(np.float64)
    others = aib9.coords[150::300].astype(np.float64)
    return (
        reference,
        reference + rng.normal(scale=0.05, size=reference.shape),
        others + 0.05 * rng.normal(size=others.shape),
    )


def test_write_figures_on_aib9_writes_the_five_figures(aib9: ConformationDataset, tmp_path: Path):
    written = write_figures(*aib9_ensembles(aib9), aib9.topology, tmp_path)
    assert {path.name for path in written} == FIGURES
    for path in written:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_superpose_brings_a_rotated_translated_copy_back_but_not_a_mirror_image(aib9: ConformationDataset):
    target = aib9.coords[0].astype(np.float64)
    generator = torch.Generator().manual_seed(3)
    rotations = [random_orthogonal(False, generator).numpy() for _ in range(4)]
    moved = np.stack([target @ rotation + np.array([5.0, -3.0, 12.0]) * k for k, rotation in enumerate(rotations)])
    np.testing.assert_allclose(superpose(moved, target), np.broadcast_to(target, moved.shape), atol=1e-4)
    np.testing.assert_allclose(superpose(moved[1], target), target, atol=1e-4)  # a single frame keeps its shape
    mirrored = superpose(target * MIRROR, target)  # a proper rotation cannot undo a reflection
    assert np.sqrt(((mirrored - target) ** 2).sum(-1).mean()) > 1.0


def test_principal_axes_form_a_rotation_with_the_longest_extent_first():
    rng = np.random.default_rng(1)
    cloud = rng.normal(size=(200, 3)) * np.array([1.0, 6.0, 3.0])  # longest along y, then z, then x
    axes = principal_axes(cloud)
    np.testing.assert_allclose(axes @ axes.T, np.eye(3), atol=1e-10)
    assert np.isclose(np.linalg.det(axes), 1.0)
    np.testing.assert_allclose(np.abs(axes), np.eye(3)[[1, 2, 0]], atol=0.1)


def test_element_colours_map_carbon_grey_nitrogen_blue_oxygen_red():
    carbon, nitrogen, oxygen = (to_rgb(element_colour(z)) for z in (6, 7, 8))
    assert carbon[0] == carbon[1] == carbon[2] and 0.3 < carbon[0] < 0.7
    assert nitrogen[2] > 0.8 and max(nitrogen[:2]) < 0.4
    assert oxygen[0] > 0.8 and max(oxygen[1:]) < 0.2
    sulfur = to_rgb(element_colour(16))
    assert min(sulfur[:2]) > 0.8 and sulfur[2] < 0.2
    assert element_colour(26) == OTHER_COLOUR  # iron: not in the table


def test_spread_frames_pick_low_median_and_high_radius_of_gyration():
    gyration = np.array([5.0, 1.0, 3.0, 2.0, 4.0, 6.0, 9.0])
    members = np.array([0, 1, 2, 3, 4, 5])  # frame 6 is not a member
    np.testing.assert_array_equal(spread_frames(gyration, members, 3), [3, 4, 5])  # Rg 2, 4, 6
    np.testing.assert_array_equal(spread_frames(gyration, members[:2], 3), [1, 0])  # fewer members than asked
    assert len(spread_frames(gyration, members[:0], 3)) == 0


def test_structure_rows_are_the_helix_classes_present(aib9: ConformationDataset):
    right = replica_frames(aib9, 0)[::80].astype(np.float64)  # right-handed helices
    backbone = find_backbone(aib9.topology)
    phi = (dihedrals(right, backbone.phi), dihedrals(right * MIRROR, backbone.phi))
    basins = structure_basins(len(right), len(right), phi)
    assert [basin.label for basin in basins] == ["right-handed helix", "left-handed helix"]
    np.testing.assert_array_equal(basins[0].reference, np.arange(10))
    assert len(basins[0].samples) == 0 and len(basins[1].reference) == 0
    np.testing.assert_array_equal(basins[1].samples, np.arange(10))
    (everything,) = structure_basins(4, 2, None)
    assert everything.label == "all frames" and len(everything.reference) == 4 and len(everything.samples) == 2


@pytest.mark.parametrize("peptide", [True, False], ids=["capped_alanine", "no_backbone"])
def test_molecules_without_inner_residues_or_backbone_get_figures_and_metrics(peptide: bool, tmp_path: Path):
    if peptide:  # one residue with phi and psi, none inner: the figures used to crash on it
        topology = capped_alanine(
            ["CH3", "C", "O", "N", "CA", "CB", "C", "O", "N", "CH3"], [1, 1, 1, 2, 2, 2, 2, 2, 3, 3]
        )
    else:
        topology = capped_alanine([f"X{k}" for k in range(10)], [1] * 10)
    reference, samples = capped_alanine_frames(24, seed=0), capped_alanine_frames(16, seed=1)
    written = write_figures(reference, reference + 0.02, samples, topology, tmp_path)
    assert {path.name for path in written} == FIGURES
    report = compare_ensembles(reference, reference + 0.02, samples, topology)
    frames = EvaluationFrames(reference[::2], "reference", "relation", reference[1::2], "pool", reference)
    report.update(matched_scores(samples, None, frames, topology))
    arrays = projections(reference, samples, topology)
    if peptide:
        assert report["handedness"]["reference"] == {"right": 0.5, "left": 0.5, "mixed": 0.0}
        assert arrays["reference_phi"].shape == (24, 1) and arrays["samples_psi"].shape == (16, 1)
        phi = arrays["reference_phi"][:, 0]  # -70 degrees, +70 in the mirrored (even) frames
        np.testing.assert_array_equal(np.sign(phi), np.tile([1.0, -1.0], 12))
        assert np.abs(np.abs(phi) - 70.0).max() < 20.0
    else:
        assert "handedness" not in report and set(arrays) == {"reference_rg", "samples_rg"}
    assert report["reconstruction"]["kabsch_rmsd"] < 1e-6
