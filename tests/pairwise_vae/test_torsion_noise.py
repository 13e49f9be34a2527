"""Torsion noise: rotatable bonds by hand, exact turns, the fitted covariance, E(3) behaviour, the CLI flags."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from pairwise_helpers import random_orthogonal
from pairwise_vae.bond_graph import angle_triplets
from pairwise_vae.data.dataset import load_dataset
from pairwise_vae.data.records import DataError
from pairwise_vae.evaluation.evaluate import main as evaluate_main
from pairwise_vae.evaluation.metrics import dihedrals
from pairwise_vae.sampling import torsion_noise
from pairwise_vae.sampling.sample import main as sample_main
from pairwise_vae.sampling.torsion_noise import TorsionNoise, fit_torsion_noise, rotatable_bonds, turn_about_bonds


def wrapped(degrees: np.ndarray) -> np.ndarray:
    return (degrees + 180.0) % 360.0 - 180.0


def bond_lengths(coords: np.ndarray, bonds: np.ndarray) -> np.ndarray:
    return np.linalg.norm(coords[:, bonds[:, 0]] - coords[:, bonds[:, 1]], axis=-1)


def bond_angles(coords: np.ndarray, triplets: np.ndarray) -> np.ndarray:
    first = coords[:, triplets[:, 0]] - coords[:, triplets[:, 1]]
    second = coords[:, triplets[:, 2]] - coords[:, triplets[:, 1]]
    cosine = (first * second).sum(-1) / np.linalg.norm(first, axis=-1) / np.linalg.norm(second, axis=-1)
    return np.degrees(np.arccos(np.clip(cosine, -1.0, 1.0)))


def test_rotatable_bonds_of_a_chain_and_of_a_ring_with_a_tail():
    chain = rotatable_bonds(np.array([[0, 1], [1, 2], [2, 3], [3, 4], [4, 5]]), 6)
    # terminal bonds 0-1 and 4-5 turn nothing; an inner bond i-j moves j's side unless that is the larger one
    assert chain.dihedrals.tolist() == [[0, 1, 2, 3], [1, 2, 3, 4], [2, 3, 4, 5]]
    assert [np.flatnonzero(mask).tolist() for mask in chain.moving] == [[3, 4, 5], [4, 5], [5]]
    longer = rotatable_bonds(np.array([[0, 1], [1, 2], [2, 3], [3, 4], [4, 5], [5, 6]]), 7)
    assert longer.dihedrals.tolist() == [[3, 2, 1, 0], [1, 2, 3, 4], [2, 3, 4, 5], [3, 4, 5, 6]]
    assert [np.flatnonzero(mask).tolist() for mask in longer.moving] == [[0], [4, 5, 6], [5, 6], [6]]

    # ring 1-2-3 with a tail 0 on atom 1 and 3-4-5: only 3-4 turns (ring bonds and terminal bonds do not)
    tail = rotatable_bonds(np.array([[0, 1], [1, 2], [2, 3], [3, 1], [3, 4], [4, 5]]), 6)
    assert tail.dihedrals.tolist() == [[1, 3, 4, 5]]
    assert np.flatnonzero(tail.moving[0]).tolist() == [5]


def test_turning_changes_each_dihedral_by_its_angle_and_keeps_bonds_and_angles(aib9):
    rotatable = rotatable_bonds(aib9.topology.bonds, aib9.topology.n_atoms)
    assert len(rotatable.dihedrals) == 27  # AIB9: phi, psi and omega of the backbone and the caps
    frames = aib9.coords[::500][:4].astype(np.float64)
    angles = np.random.default_rng(0).uniform(-60.0, 60.0, (len(frames), len(rotatable.dihedrals)))
    turned = turn_about_bonds(torch.from_numpy(frames), rotatable, torch.from_numpy(angles)).numpy()
    change = wrapped(dihedrals(turned, rotatable.dihedrals) - dihedrals(frames, rotatable.dihedrals))
    np.testing.assert_allclose(change, angles, atol=1e-8)
    bonds, triplets = aib9.topology.bonds, angle_triplets(aib9.topology.bonds, aib9.topology.n_atoms)
    np.testing.assert_allclose(bond_lengths(turned, bonds), bond_lengths(frames, bonds), atol=1e-10)
    np.testing.assert_allclose(bond_angles(turned, triplets), bond_angles(frames, triplets), atol=1e-8)
    assert np.abs(turned - frames).max() > 1.0


def test_fitted_covariance_is_that_of_the_residuals_without_basin_errors(aib9):
    rotatable = rotatable_bonds(aib9.topology.bonds, aib9.topology.n_atoms)
    frames = aib9.coords[:200].astype(np.float64)
    generator = np.random.default_rng(1)
    scales = np.linspace(3.0, 12.0, len(rotatable.dihedrals))
    errors = generator.standard_normal((len(frames), len(scales))) * scales
    errors[:, 1] -= 0.5 * errors[:, 0]  # two torsions that move together
    errors = np.clip(errors, -40.0, 40.0)
    errors[7, 3] = 120.0  # a torsion in another basin: this frame is left out
    reconstructed = turn_about_bonds(torch.from_numpy(frames), rotatable, torch.from_numpy(errors)).numpy()
    noise = fit_torsion_noise(reconstructed, frames, aib9.topology.bonds)
    assert (noise.frames, noise.kept) == (200, 199)
    expected = np.cov(np.delete(errors, 7, axis=0).T)
    np.testing.assert_allclose(noise.scale_tril @ noise.scale_tril.T, expected, atol=1e-5)
    assert "27 rotatable bonds" in noise.describe() and "199 of 200" in noise.describe()


def test_samples_get_the_fitted_spread_and_turning_commutes_with_rotations_and_translations(aib9):
    rotatable = rotatable_bonds(aib9.topology.bonds, aib9.topology.n_atoms)
    scales = np.linspace(2.0, 9.0, len(rotatable.dihedrals))
    noise = TorsionNoise(rotatable, np.diag(scales), frames=10, kept=10)
    frames = np.repeat(aib9.coords[:1], 4000, axis=0)
    noisy = noise.add_to(frames, torch.Generator().manual_seed(0))
    change = wrapped(dihedrals(noisy.astype(np.float64), rotatable.dihedrals) - dihedrals(frames, rotatable.dihedrals))
    np.testing.assert_allclose(change.std(axis=0), scales, rtol=0.06)
    np.testing.assert_allclose(change.mean(axis=0), 0.0, atol=0.5)

    generator = torch.Generator().manual_seed(3)
    start = torch.from_numpy(aib9.coords[::400][:3]).double()
    angles = 30.0 * torch.randn(3, len(rotatable.dihedrals), generator=generator, dtype=torch.float64)
    rotation = random_orthogonal(False, generator)
    shift = 10.0 * torch.randn(1, 1, 3, generator=generator, dtype=torch.float64)
    moved = turn_about_bonds(start @ rotation.T + shift, rotatable, angles)
    torch.testing.assert_close(moved, turn_about_bonds(start, rotatable, angles) @ rotation.T + shift)


def test_a_molecule_without_rotatable_bonds_and_a_model_without_usable_residuals_are_refused(aib9):
    triangle = np.zeros((3, 3, 3))
    with pytest.raises(DataError, match="no rotatable bond"):
        fit_torsion_noise(triangle, triangle, np.array([[0, 1], [1, 2], [2, 0]]))
    frames = aib9.coords[:5].astype(np.float64)
    rotatable = rotatable_bonds(aib9.topology.bonds, aib9.topology.n_atoms)
    flipped = turn_about_bonds(torch.from_numpy(frames), rotatable, torch.full((5, 27), 90.0, dtype=torch.float64))
    with pytest.raises(DataError, match="0 of 5 training frames"):
        fit_torsion_noise(flipped.numpy(), frames, aib9.topology.bonds)


def test_sample_and_evaluate_torsion_noise_keep_bond_lengths(tiny_checkpoint, tmp_path, aib9, monkeypatch, capsys):
    flags = ["--num-samples", "6", "--device", "cpu", "--no-pdb", "--no-compile"]
    monkeypatch.setattr(torsion_noise, "BASIN_ERROR_DEGREES", 0.0)  # every reconstruction counts as a basin error
    sample_main([str(tiny_checkpoint), "--output", str(tmp_path / "unfit"), *flags])
    note = "note: samples without torsion noise: 0 of 36 training frames are reconstructed without a torsion"
    assert note in capsys.readouterr().err
    assert json.loads(str(np.load(tmp_path / "unfit.npz")["metadata"]))["torsion_noise"] is False

    monkeypatch.setattr(torsion_noise, "BASIN_ERROR_DEGREES", 180.0)  # an untrained model: keep every frame
    sample_main([str(tiny_checkpoint), "--output", str(tmp_path / "noisy"), *flags])  # on by default
    sample_main([str(tiny_checkpoint), "--output", str(tmp_path / "raw"), "--no-torsion-noise", *flags])
    noisy, raw = load_dataset(tmp_path / "noisy.npz").coords, load_dataset(tmp_path / "raw.npz").coords
    bonds = aib9.topology.bonds
    np.testing.assert_allclose(bond_lengths(noisy, bonds), bond_lengths(raw, bonds), atol=1e-4)
    assert np.abs(noisy - raw).max() > 0.1
    assert json.loads(str(np.load(tmp_path / "noisy.npz")["metadata"]))["torsion_noise"] is True

    evaluate_main([str(tiny_checkpoint), "--output", str(tmp_path / "report"), *flags[:4]])
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert "27 rotatable bonds" in report["torsion_noise"]
    assert "(--torsion-noise)" in (tmp_path / "report" / "report.md").read_text()


def test_an_interpolation_is_decoded_without_torsion_noise(tiny_checkpoint, tmp_path, monkeypatch):
    monkeypatch.setattr(torsion_noise, "BASIN_ERROR_DEGREES", 180.0)  # a fit that would add noise
    flags = ["--interpolate", "0,5", "--steps", "3", "--no-pdb", "--device", "cpu"]
    sample_main([str(tiny_checkpoint), *flags, "--output", str(tmp_path / "default")])
    sample_main([str(tiny_checkpoint), *flags, "--no-torsion-noise", "--output", str(tmp_path / "off")])
    default, off = load_dataset(tmp_path / "default.npz").coords, load_dataset(tmp_path / "off.npz").coords
    np.testing.assert_array_equal(default, off)
    assert json.loads(str(np.load(tmp_path / "default.npz")["metadata"]))["torsion_noise"] is False
