"""Metrics on structures with known answers; sample and evaluate commands; PDB output read back."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from pairwise_helpers import make_model, replica_frames, tiny_model_config, with_trained_size_coordinate_updates
from pairwise_vae.bond_graph import angle_triplets
from pairwise_vae.data.dataset import TEST_DATASET, load_dataset
from pairwise_vae.data.records import Topology
from pairwise_vae.data.split import subsample
from pairwise_vae.evaluation.ensembles import compare_ensembles
from pairwise_vae.evaluation.evaluate import main as evaluate_main
from pairwise_vae.evaluation.metrics import (
    bond_angles,
    clash_fraction,
    dihedrals,
    find_backbone,
    helix_handedness,
    jensen_shannon_distance,
    latent_statistics,
    radius_of_gyration,
)
from pairwise_vae.geometry import bond_lengths, kabsch_rmsd, pairwise_distances
from pairwise_vae.sampling.inference import decode_in_batches
from pairwise_vae.sampling.sample import main as sample_main
from pairwise_vae.training.checkpoint import load_checkpoint, model_from_checkpoint, model_payload, save_checkpoint
from pairwise_vae.training.config import TrainConfig

MIRROR = np.array([1.0, 1.0, -1.0])


def test_dihedral_and_angle_of_hand_built_geometry():
    # a trans (180 degree) and a +90 degree dihedral, and a right angle
    coords = np.array([[[1.0, 0, 0], [0, 0, 0], [0, 1.0, 0], [-1.0, 1.0, 0], [0, 1.0, 1.0]]])
    trans = dihedrals(coords, np.array([[0, 1, 2, 3]]))[0, 0]
    assert math.isclose(abs(trans), 180.0, abs_tol=1e-6)
    plus = dihedrals(coords, np.array([[0, 1, 2, 4]]))[0, 0]
    assert math.isclose(abs(plus), 90.0, abs_tol=1e-6)
    assert math.isclose(dihedrals(coords * MIRROR, np.array([[0, 1, 2, 4]]))[0, 0], -plus, abs_tol=1e-6)
    assert math.isclose(bond_angles(coords, np.array([[0, 1, 2]]))[0, 0], 90.0, abs_tol=1e-6)


def test_mirrored_helix_is_flagged_by_handedness_but_not_by_distance_metrics(aib9):
    right = replica_frames(aib9, 0)[::25].astype(np.float64)  # right-handed helices
    mirrored = right * MIRROR
    backbone = find_backbone(aib9.topology)
    assert len(backbone.residue_ids) == 9
    assert helix_handedness(dihedrals(right, backbone.phi)) == {"right": 1.0, "left": 0.0, "mixed": 0.0}
    assert helix_handedness(dihedrals(mirrored, backbone.phi)) == {"right": 0.0, "left": 1.0, "mixed": 0.0}
    report = compare_ensembles(right, mirrored, mirrored, aib9.topology)
    assert report["reconstruction"]["bond_mae"] < 1e-9 and report["reconstruction"]["distance_mae"] < 1e-9
    assert report["reconstruction"]["kabsch_rmsd_reflection_allowed"] < 1e-6
    assert report["reconstruction"]["mirror_gap"] > 1.0, "the proper-rotation RMSD must see the mirror image"
    assert report["samples"]["bonds_within_0.1_of_reference_mean"] > 0.99  # thermal spread only
    assert report["handedness"]["samples"]["left"] == 1.0 and report["handedness"]["reference"]["right"] == 1.0
    assert report["samples"]["ramachandran_js_distance"]["mean"] > 0.9


def test_reconstruction_error_is_broken_down_by_the_reference_frames_helix_class(aib9):
    helices = replica_frames(aib9, 0)[::80].astype(np.float64)  # right-handed helices
    mixed = replica_frames(aib9, 4)[::80].astype(np.float64)  # right-handed N-half, left-handed C-half
    reference = np.concatenate([helices, mixed])
    rebuilt_as_helices = np.concatenate([helices, helices])  # the mixed frames come back helical
    reconstruction = compare_ensembles(reference, rebuilt_as_helices, reference, aib9.topology)["reconstruction"]
    by_class = reconstruction["kabsch_rmsd_by_reference_class"]
    assert list(by_class) == ["right", "left", "mixed"]
    assert by_class["right"] < 1e-6 and by_class["left"] is None and by_class["mixed"] > 1.0
    assert math.isclose(reconstruction["kabsch_rmsd"], by_class["mixed"] / 2, rel_tol=1e-6)
    assert 0.0 < reconstruction["kabsch_rmsd_median"] <= reconstruction["kabsch_rmsd"]


def test_clash_fraction_counts_frames_with_close_distant_atoms(aib9):
    coords = aib9.coords[:4].astype(np.float64).copy()
    assert clash_fraction(coords, aib9.topology.bonds) == 0.0
    coords[1, 57] = coords[1, 0] + 0.5  # the amide N onto the acetyl methyl: far apart in the chain
    assert clash_fraction(coords, aib9.topology.bonds) == 0.25


def test_a_molecule_without_atoms_four_bonds_apart_has_no_clashes():
    """Bug: the closest pair of no pairs at all (an acetyl cap of 3 heavy atoms) raised a numpy error."""
    coords = np.zeros((2, 3, 3))
    coords[:, 1, 0], coords[:, 2, 0] = 1.5, 1.0  # atoms 0 and 2 only 0.5 A apart, but bonded through atom 1
    assert clash_fraction(coords, np.array([[0, 1], [1, 2]])) == 0.0


def test_jensen_shannon_distance_bounds():
    counts = np.array([[3.0, 1.0], [0.0, 4.0]])
    assert jensen_shannon_distance(counts, counts) < 1e-6
    assert math.isclose(jensen_shannon_distance(np.array([1.0, 0.0]), np.array([0.0, 1.0]), pseudo_count=0.0), 1.0)


def test_radius_of_gyration_and_latent_statistics():
    square = np.array([[[1.0, 0, 0], [-1.0, 0, 0], [0, 1.0, 0], [0, -1.0, 0]]])
    assert math.isclose(radius_of_gyration(square)[0], 1.0)
    mu = np.stack([np.linspace(-1, 1, 100), np.zeros(100)], axis=1)
    stats = latent_statistics(mu, np.zeros_like(mu))
    assert stats["active_units"] == 1
    assert math.isclose(stats["kl_per_dimension"][1], 0.0, abs_tol=1e-9)


def test_angle_triplets_of_a_chain():
    assert angle_triplets(np.array([[0, 1], [1, 2], [2, 3]]), 4).tolist() == [[0, 1, 2], [1, 2, 3]]


def test_sample_writes_npz_and_pdb_that_read_back(tiny_checkpoint, tmp_path, aib9, capsys):
    sample_main(
        [str(tiny_checkpoint), "--num-samples", "5", "--output", str(tmp_path / "out" / "samples"), "--device", "cpu"]
    )
    samples = load_dataset(tmp_path / "out" / "samples.npz")
    assert samples.coords.shape == (5, 58, 3)
    pdb = (tmp_path / "out" / "samples.pdb").read_text()
    assert pdb.count("MODEL") == 5 and pdb.count("ENDMDL") == 5 and "CONECT" in pdb
    np.save(tmp_path / "first.npy", samples.coords[:1])
    from_pdb = load_dataset(tmp_path / "first.npy", tmp_path / "out" / "samples.pdb")
    assert from_pdb.topology.atom_names.tolist() == aib9.topology.atom_names.tolist()
    assert from_pdb.topology.residue_names.tolist() == aib9.topology.residue_names.tolist()
    assert {tuple(b) for b in from_pdb.topology.bonds.tolist()} == {
        tuple(sorted(b)) for b in aib9.topology.bonds.tolist()
    }
    np.testing.assert_allclose(
        np.array(
            [
                [float(line[30:38]), float(line[38:46]), float(line[46:54])]
                for line in pdb.splitlines()
                if line.startswith("HETATM")
            ][:58]
        ),
        samples.coords[0],
        atol=1e-3,
    )


def test_sample_interpolates_and_decodes_given_latents(tiny_checkpoint, tmp_path, tiny_npz):
    sample_main(
        [
            str(tiny_checkpoint),
            "--interpolate",
            "0,40",
            "--steps",
            "4",
            "--data",
            str(tiny_npz),
            "--output",
            str(tmp_path / "path"),
            "--no-pdb",
            "--device",
            "cpu",
        ]
    )
    assert load_dataset(tmp_path / "path.npz").coords.shape == (4, 58, 3)
    np.save(tmp_path / "z.npy", np.zeros((3, 4), dtype=np.float32))
    sample_main(
        [str(tiny_checkpoint), "--latents", str(tmp_path / "z.npy"), "--output", str(tmp_path / "z"), "--device", "cpu"]
        + ["--no-torsion-noise"]  # latents get the model's torsion noise by default
    )
    coords = load_dataset(tmp_path / "z.npz").coords
    np.testing.assert_allclose(coords[0], coords[2], atol=1e-6)


def test_evaluate_writes_the_report(tiny_checkpoint, tmp_path, capsys, aib9):
    evaluate_main(
        [str(tiny_checkpoint), "--output", str(tmp_path / "report"), "--num-samples", "20", "--device", "cpu"]
    )
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    # 12 validation frames (48 x 0.25) cut in halves of 6: the reference and the floor's unseen frames; the
    # model is scored with as many samples as those (6 of its 20)
    assert report["matched"] == {
        "n_samples": 6,
        "n_reference": 6,
        "pool": "the odd-numbered blocks of the same frames (6 frames)",
        "floor_draws": 1,
    }
    assert "even-numbered of 12 contiguous blocks" in report["reference"]["description"]
    # each validation frame borders a training frame: blocks of 12 / 300 frames, so 1 frame away
    assert "not independent of them: each frame lies 1 to 1 frames" in report["reference"]["relation"]
    assert set(report["ensemble_metrics"]["ramachandran_js_distance_mean"]) == {"samples", "floor", "floor_std"}
    assert report["novelty"]["samples"]["n_training"] == 36 and report["novelty"]["samples"]["n_test"] == 6
    assert len(report["ensemble_metrics"]) == 9
    bar = report["quality_bar"]
    assert list(bar["criteria"]) == [
        "kabsch_rmsd",
        "helix_fractions",
        "ramachandran_js",
        "torsion_c2st",
        "bonds_within_0.1",
        "clash_fraction",
        "radius_of_gyration",
    ]
    assert all(isinstance(c["met"], bool) for c in bar["criteria"].values()) and bar["applicable"] == 7
    assert capsys.readouterr().out.splitlines()[-1] == bar["summary"]
    assert report["reference"]["frames"] == 6
    # an untrained decoder returns its starting frame (within 1e-3 A) whatever z: the reconstruction
    # metrics are those of that one frame against each reference frame
    reference = torch.from_numpy(load_dataset(tmp_path / "report" / "reference.npz").coords).double()
    start = model_from_checkpoint(load_checkpoint(tiny_checkpoint)).decoder.reference_positions.double()
    start = start.expand_as(reference)
    bonds = torch.from_numpy(aib9.topology.bonds)
    expected = {
        "kabsch_rmsd": kabsch_rmsd(start, reference).mean(),
        "kabsch_rmsd_reflection_allowed": kabsch_rmsd(start, reference, allow_reflection=True).mean(),
        "bond_mae": (bond_lengths(start, bonds) - bond_lengths(reference, bonds)).abs().mean(),
        "distance_mae": (pairwise_distances(start) - pairwise_distances(reference)).abs().mean(),
    }
    assert expected["kabsch_rmsd"] > 0.5 and expected["bond_mae"] > 0.01, "frames unlike the starting one"
    for key, value in expected.items():
        assert report["reconstruction"][key] == pytest.approx(value.item(), abs=2e-3), key
    assert set(report["handedness"]) == {"reference", "reconstruction", "samples"}
    assert len(report["samples"]["ramachandran_js_distance"]["per_residue"]) == 9
    for figure in ("ramachandran.png", "free_energy.png", "bonds_angles.png", "distances_rg.png", "structures.png"):
        assert (tmp_path / "report" / figure).stat().st_size > 1000
    markdown = (tmp_path / "report" / "report.md").read_text()
    assert "Kabsch RMSD" in markdown and "| same, mean over reference frames that are right / left / mixed" in markdown
    assert "| metric | samples | floor |" in markdown and "| criterion | value | bar | met |" in markdown
    assert "## Two-sample tests" in markdown and "## Novelty" in markdown
    js = report["ensemble_metrics"]["ramachandran_js_distance_mean"]
    row = f"| phi/psi Jensen-Shannon distance, mean over residues | {js['samples']:.4f} | {js['floor']:.4f} |"
    assert row in markdown
    assert bar["summary"] in markdown


def test_a_model_of_the_embedded_data_is_judged_on_the_independent_test_trajectories(aib9, tmp_path):
    config = TrainConfig(model=tiny_model_config())  # data=None: the embedded AIB9 ensemble
    checkpoint = tmp_path / "embedded.pt"
    save_checkpoint(checkpoint, model_payload(config, aib9.topology, make_model(aib9)))
    argv = [str(checkpoint), "--output", str(tmp_path / "report"), "--num-samples", "20", "--max-frames", "60"]
    # the raw decoder: this checkpoint holds no sampler, and refitting one encodes all 8,640 training frames
    evaluate_main([*argv, "--device", "cpu", "--no-compile", "--prior", "standard", "--no-torsion-noise"])
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert report["reference"]["description"] == "aib9_test.npz (the AIB9 test trajectories)"
    assert "seeds 21, 22, 23, 24, 25, 26" in report["reference"]["relation"]
    assert "share no frame and no trajectory" in report["reference"]["relation"]
    expected = subsample(load_dataset(TEST_DATASET).coords, 60)
    np.testing.assert_allclose(load_dataset(tmp_path / "report" / "reference.npz").coords, expected, atol=1e-3)
    # the floors: 20 of the 960 validation frames (unseen in training) against the 60 test frames, three draws
    assert report["matched"] == {
        "n_samples": 20,
        "n_reference": 60,
        "pool": "960 validation frames of the training trajectories, unseen in training",
        "floor_draws": 3,
    }
    assert report["ensemble_metrics"]["ramachandran_js_distance_mean"]["floor_std"] > 0.0
    novelty = report["novelty"]["samples"]
    assert (novelty["n_training"], novelty["n_test"], novelty["n_samples"]) == (8640, 60, 20)
    # independent frames lie well away from every training frame (training frames 2.5 ps apart lie ~0.5 A apart)
    assert novelty["test_nearest_training_rmsd_median"] > 0.4


@pytest.mark.parametrize(
    "command, argv, expected",
    [
        (sample_main, ["{missing}"], "checkpoint not found"),
        (sample_main, ["{checkpoint}", "--output", "{existing}"], "already exists"),
        (sample_main, ["{checkpoint}", "--latents", "{bad_latents}"], "shape (K, 4)"),
        (sample_main, ["{checkpoint}", "--interpolate", "0,x"], "two frame indices"),
        (sample_main, ["{foreign}"], "not a pairwise_vae one"),
        (evaluate_main, ["{checkpoint}", "--output", "{existing_dir}"], "already exists"),
        (evaluate_main, ["{corrupt}"], "not a readable checkpoint"),
        (evaluate_main, ["{checkpoint}", "--data", "{wrong_molecule}"], "differ from the checkpoint"),
    ],
)
def test_sample_and_evaluate_reject_bad_input(command, argv, expected, tiny_checkpoint, tmp_path, capsys, aib9):
    (tmp_path / "existing.npz").write_text("keep me")
    (tmp_path / "existing_dir").mkdir()
    np.save(tmp_path / "bad_latents.npy", np.zeros((3, 7), dtype=np.float32))
    torch.save({"format": "bond_vae.checkpoint", "format_version": 2}, tmp_path / "foreign.pt")
    (tmp_path / "corrupt.pt").write_bytes(b"PK\x03\x04 broken")
    other = Topology(
        aib9.topology.atomic_numbers.copy(),
        aib9.topology.atom_names,
        aib9.topology.residue_ids,
        aib9.topology.residue_names,
        aib9.topology.bonds,
    )
    other.atomic_numbers[0] = 7
    np.savez(
        tmp_path / "wrong.npz", coords=aib9.coords[:5], atomic_numbers=other.atomic_numbers, bonds=aib9.topology.bonds
    )
    paths = {
        "missing": tmp_path / "missing.pt",
        "checkpoint": tiny_checkpoint,
        "existing": tmp_path / "existing",
        "existing_dir": tmp_path / "existing_dir",
        "bad_latents": tmp_path / "bad_latents.npy",
        "foreign": tmp_path / "foreign.pt",
        "corrupt": tmp_path / "corrupt.pt",
        "wrong_molecule": tmp_path / "wrong.npz",
    }
    with pytest.raises(SystemExit) as exit_info:
        command([arg.format(**paths) for arg in argv] + ["--device", "cpu"])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 1
    assert len(err.splitlines()) == 1 and expected in err, err
    assert (tmp_path / "existing.npz").read_text() == "keep me"


@pytest.mark.slow  # torch.compile of the decoder: 6 to 25 CPU-s
def test_compiled_batched_decoding_matches_one_eager_batch(aib9):
    model = make_model(aib9).eval()
    latents = torch.randn(10, model.latent_dim, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = model.decode(latents).numpy()
    decoded = decode_in_batches(model, latents, batch_size=4, compile_decoder=True, bf16=False)  # 4 + 4 + 2 padded
    np.testing.assert_allclose(decoded, expected, rtol=1e-4, atol=1e-4)


def test_bf16_decoding_stays_within_0_02_angstrom_of_float32(aib9):
    model = with_trained_size_coordinate_updates(make_model(aib9).eval())  # as training moves the output
    latents = torch.randn(16, model.latent_dim, generator=torch.Generator().manual_seed(0))
    full = decode_in_batches(model, latents, batch_size=8, compile_decoder=False, bf16=False)
    half = decode_in_batches(model, latents, batch_size=8, compile_decoder=False, bf16=True)
    start = model.decoder.reference_positions.numpy()
    assert np.abs(full - start).max() > 0.5  # the decoder moved the atoms
    deviation = np.linalg.norm(half - full, axis=-1)
    assert 0.0 < deviation.max() < 0.02, deviation.max()  # bf16 did run, and stayed close
