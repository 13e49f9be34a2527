"""Mirror images: the parity rule decided from the data, applied to output, kept in checkpoints."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from bond_helpers import make_model, random_orthogonal, tiny_model_config
from bond_vae.bond_graph import torsion_quadruplets
from bond_vae.config import ConfigError
from bond_vae.data.records import Topology
from bond_vae.evaluation.evaluate import main as evaluate_main
from bond_vae.geometry import pairwise_distances, signed_volumes
from bond_vae.model.parity import ParityRule, atom_classes, decide_parity, orient_path, orient_samples, reflect
from bond_vae.model.vae import MolecularVAE
from bond_vae.sampling.sample import main as sample_main
from bond_vae.training.checkpoint import load_checkpoint, model_from_checkpoint, model_payload, save_checkpoint
from bond_vae.training.config import TrainConfig
from bond_vae.training.validation import validate

MIRROR = torch.tensor([1.0, 1.0, -1.0])
AIB_CA = [4, 10, 16, 22, 28, 34, 40, 46, 52]

# a toy chiral molecule: centre C0 bonded to N1, O2, C3 (which carries the chain C5-C6) and the methyl C4,
# four topologically different neighbours
TOY_BONDS = np.array([[0, 1], [0, 2], [0, 3], [0, 4], [3, 5], [5, 6]])
TOY_TOPOLOGY = Topology(
    atomic_numbers=np.array([6, 7, 8, 6, 6, 6, 6]),
    atom_names=np.array(["C0", "N1", "O2", "C3", "C4", "C5", "C6"]),
    residue_ids=np.ones(7, dtype=np.int64),
    residue_names=np.full(7, "TOY"),
    bonds=TOY_BONDS,
)
TETRAHEDRON = torch.tensor([[1.0, 1.0, 1.0], [1.0, -1.0, -1.0], [-1.0, 1.0, -1.0], [-1.0, -1.0, 1.0]]) / 3**0.5
TOY_SIGN = 1.0  # sign of the centre's volume (N1 - C0) . ((O2 - C0) x (C3 - C0)) in toy_frames


def toy_frames(n_frames: int, seed: int = 0) -> torch.Tensor:
    """(n_frames, 7, 3) centred, randomly rotated and jiggled conformations of the toy molecule, one handedness."""
    generator = torch.Generator().manual_seed(seed)
    base = torch.zeros(7, 3)
    base[1:5] = 1.5 * TETRAHEDRON
    base[5] = base[3] + 1.5 * torch.tensor([0.0, 1.0, 0.0])
    base[6] = base[5] + 1.5 * torch.tensor([1.0, 0.0, 0.0])
    frames = []
    for _ in range(n_frames):
        rotation = random_orthogonal(False, generator).float()
        frame = base @ rotation.T + 0.05 * torch.randn(7, 3, generator=generator)
        frames.append(frame - frame.mean(dim=0))
    return torch.stack(frames)


def centre_signs(coords: torch.Tensor) -> torch.Tensor:
    """(B,) sign of the toy centre's signed volume."""
    return torch.sign(signed_volumes(coords, torch.tensor([[0, 1, 2, 3]])))[:, 0]


def chain_agreement(
    coords: torch.Tensor, targets: torch.Tensor, bonds: np.ndarray, chains: torch.Tensor | None = None
) -> torch.Tensor:
    """(B,) sum over (Q, 4) ``chains`` (by default the bonded four-atom chains) of v(coords) * v(targets): positive
    where both have one handedness."""
    if chains is None:
        chains = torsion_quadruplets(torch.from_numpy(bonds), coords.shape[1])
    return (signed_volumes(coords.double(), chains) * signed_volumes(targets.double(), chains)).sum(dim=1)


def test_toy_frames_have_the_stated_sign():
    assert (centre_signs(toy_frames(50)) == TOY_SIGN).all()


def test_aib9_has_no_stereocentres_although_its_alpha_carbons_keep_their_sign_by_index(aib9):
    """The first 300 frames are one MD run: each CA's volume by index never flips there, yet Aib's CA
    carries two equivalent methyls (CB1, CB2), so it is not a stereocentre."""
    coords = torch.from_numpy(aib9.coords[:300])
    volumes = signed_volumes(coords, torch.tensor([[a, a - 1, a + 1, a + 2] for a in AIB_CA]))
    assert ((volumes > 0).all(dim=0) | (volumes < 0).all(dim=0)).all()
    classes = atom_classes(aib9.topology.atomic_numbers, aib9.topology.bonds)
    assert all(classes[a + 1] == classes[a + 2] for a in AIB_CA)  # CB1 ~ CB2
    rule = decide_parity(coords, aib9.topology)
    assert rule.mode == "mirror-symmetric" and len(rule.centres) == 0
    assert rule.summary().startswith("parity: mirror-symmetric (no stereocentres: of 19 atoms")


def test_toy_molecule_with_one_handedness_is_chiral_at_its_centre():
    frames = toy_frames(200)
    rule = decide_parity(frames, TOY_TOPOLOGY)
    assert rule.mode == "chiral"
    assert rule.centres.tolist() == [[0, 1, 2, 3]] and rule.signs.tolist() == [TOY_SIGN]
    assert "TOY1:C0" in rule.reason
    mirrored = decide_parity(frames * MIRROR, TOY_TOPOLOGY)
    assert mirrored.mode == "chiral" and mirrored.signs.tolist() == [-TOY_SIGN]


def test_a_racemic_toy_ensemble_is_mirror_symmetric():
    frames = toy_frames(200)
    frames[::3] = frames[::3] * MIRROR  # a third of the frames of the other handedness
    assert decide_parity(frames, TOY_TOPOLOGY).mode == "mirror-symmetric"


def test_the_parity_flag_overrides_the_decision(aib9):
    frames = toy_frames(100)
    assert decide_parity(frames, TOY_TOPOLOGY, "mirror-symmetric").mode == "mirror-symmetric"
    assert decide_parity(frames, TOY_TOPOLOGY, "none").mode == "none"
    assert decide_parity(frames, TOY_TOPOLOGY, "chiral").mode == "chiral"
    with pytest.raises(ConfigError) as error:
        decide_parity(torch.from_numpy(aib9.coords[:300]), aib9.topology, "chiral")
    message = str(error.value)
    assert "--parity chiral" in message and "no stereocentres" in message and "\n" not in message


def test_reflection_keeps_distances_and_centroid_and_flips_volumes():
    frames = toy_frames(4) + torch.tensor([1.0, -2.0, 3.0])
    mask = torch.tensor([True, False, True, False])
    reflected = reflect(frames, mask)
    torch.testing.assert_close(pairwise_distances(reflected), pairwise_distances(frames))
    torch.testing.assert_close(reflected.mean(dim=1), frames.mean(dim=1))
    assert centre_signs(reflected).tolist() == [-TOY_SIGN, TOY_SIGN, -TOY_SIGN, TOY_SIGN]


def test_mirror_symmetric_samples_come_in_both_handednesses_about_equally_and_reproducibly():
    rule = ParityRule("mirror-symmetric", reason="test")
    raw = toy_frames(400)
    oriented = orient_samples(raw, rule, torch.Generator().manual_seed(1))
    right = (centre_signs(oriented) == TOY_SIGN).float().mean().item()
    assert 0.4 <= right <= 0.6, right
    torch.testing.assert_close(oriented, orient_samples(raw, rule, torch.Generator().manual_seed(1)))
    torch.testing.assert_close(orient_samples(raw, ParityRule(), torch.Generator().manual_seed(1)), raw)


def test_chiral_samples_keep_the_data_stereocentre_signs_even_when_decoded_mirrored():
    rule = decide_parity(toy_frames(100), TOY_TOPOLOGY)
    raw = toy_frames(30, seed=1)
    raw[::2] = raw[::2] * MIRROR
    assert (centre_signs(raw) == -TOY_SIGN).sum() == 15
    assert (centre_signs(orient_samples(raw, rule)) == TOY_SIGN).all()


def test_model_sample_of_a_tiny_chiral_model_keeps_the_data_handedness():
    """The decoder starts from a mirrored frame, so its raw output has the wrong hand; sample() fixes it."""
    data = toy_frames(100)
    rule = decide_parity(data, TOY_TOPOLOGY)
    torch.manual_seed(0)
    model = MolecularVAE(
        tiny_model_config(),
        torch.from_numpy(TOY_TOPOLOGY.atomic_numbers),
        torch.from_numpy(TOY_BONDS),
        data[0] * MIRROR,
        rule,
    )
    generator = torch.Generator().manual_seed(2)
    with torch.no_grad():
        raw = model.decode(torch.randn(16, model.latent_dim, generator=generator))
    assert (centre_signs(raw) == -TOY_SIGN).all(), "the raw output should have the mirrored hand"
    samples = model.sample(16, generator=torch.Generator().manual_seed(2))
    assert (centre_signs(samples) == TOY_SIGN).all()
    torch.testing.assert_close(pairwise_distances(samples), pairwise_distances(raw))


@pytest.mark.parametrize("mode", ["mirror-symmetric", "chiral"])
def test_reconstructions_take_the_handedness_of_their_input(aib9, mode):
    model = make_model(aib9).eval()
    centres = torch.tensor([[a, a - 1, a + 1, a + 2] for a in AIB_CA])  # a chiral rule's: AIB9's CAs by index
    model.parity = ParityRule(mode, centres, torch.ones(len(centres)), reason="test")
    chains = centres if mode == "chiral" else None  # what each rule compares
    frames = torch.from_numpy(aib9.coords[:4])
    inputs = torch.cat([frames, frames * MIRROR])
    with torch.no_grad():
        raw = model.decode(model.encode(inputs)[0])
    assert (chain_agreement(raw, inputs, aib9.topology.bonds, chains) < 0).any(), "mirror-blind: one hand is wrong"
    reconstructed = model.reconstruct(inputs)
    assert (chain_agreement(reconstructed, inputs, aib9.topology.bonds, chains) > 0).all()
    model.parity = ParityRule()
    torch.testing.assert_close(model.reconstruct(inputs), raw)


def test_an_interpolation_path_starts_in_the_input_hand_and_stays_continuous():
    start = toy_frames(1)[0]
    path = toy_frames(6, seed=3)
    path[1::2] = path[1::2] * MIRROR  # raw output flipping hand at every step
    rule = ParityRule("mirror-symmetric", reason="test")
    for first in (start, start * MIRROR):
        oriented = orient_path(path, first, rule, torch.from_numpy(TOY_BONDS))
        assert (centre_signs(oriented) == centre_signs(first[None])).all()
    torch.testing.assert_close(orient_path(path, start, ParityRule(), torch.from_numpy(TOY_BONDS)), path)


def test_validation_metrics_see_oriented_reconstructions_and_the_loss_stays_raw(aib9):
    model = make_model(aib9)
    coords = torch.from_numpy(aib9.coords[:8]) * MIRROR
    raw = validate(model, coords, beta=1e-3, amp=False)
    model.parity = ParityRule("mirror-symmetric", reason="test")
    oriented = validate(model, coords, beta=1e-3, amp=False)
    assert oriented.metrics["loss"] == raw.metrics["loss"]
    bonds = aib9.topology.bonds
    assert (chain_agreement(torch.from_numpy(raw.reconstructed), coords, bonds) < 0).any()
    assert (chain_agreement(torch.from_numpy(oriented.reconstructed), coords, bonds) > 0).all()
    assert oriented.metrics["kabsch_rmsd"] < raw.metrics["kabsch_rmsd"]


def test_checkpoint_keeps_the_rule_and_an_older_one_without_it_loads_as_none(tmp_path):
    rule = decide_parity(toy_frames(100), TOY_TOPOLOGY)
    torch.manual_seed(0)
    model = MolecularVAE(
        tiny_model_config(),
        torch.from_numpy(TOY_TOPOLOGY.atomic_numbers),
        torch.from_numpy(TOY_BONDS),
        toy_frames(1)[0],
        rule,
    )
    payload = model_payload(TrainConfig(model=tiny_model_config()), TOY_TOPOLOGY, model)
    save_checkpoint(tmp_path / "new.pt", payload)
    restored = model_from_checkpoint(load_checkpoint(tmp_path / "new.pt")).parity
    assert (restored.mode, restored.centres.tolist(), restored.signs.tolist()) == ("chiral", [[0, 1, 2, 3]], [TOY_SIGN])
    assert restored.reason == rule.reason
    del payload["parity"]  # as checkpoints were written before the rule
    save_checkpoint(tmp_path / "old.pt", payload)
    old = model_from_checkpoint(load_checkpoint(tmp_path / "old.pt"))
    assert old.parity.mode == "none"
    raw = toy_frames(8) * MIRROR
    assert (centre_signs(orient_samples(raw, old.parity)) == -TOY_SIGN).all(), "none leaves output as decoded"


def test_a_training_run_records_the_rule_decided_from_its_data(tiny_run):
    payload = load_checkpoint(tiny_run / "best.pt")
    assert payload["parity"]["mode"] == "mirror-symmetric"
    assert model_from_checkpoint(payload).parity.mode == "mirror-symmetric"


@pytest.fixture()
def mirror_symmetric_checkpoint(aib9, tmp_path, tiny_npz):
    model = make_model(aib9)
    model.parity = ParityRule("mirror-symmetric", reason="test")
    config = TrainConfig(data=tiny_npz, model=tiny_model_config(), validation_fraction=0.25)
    path = tmp_path / "tiny.pt"
    save_checkpoint(path, model_payload(config, aib9.topology, model))
    return path, model


def test_sample_mirrors_about_half_of_the_prior_samples(mirror_symmetric_checkpoint, tmp_path, aib9):
    path, model = mirror_symmetric_checkpoint
    sample_main(
        [
            str(path),
            "--num-samples",
            "200",
            "--seed",
            "3",
            "--output",
            str(tmp_path / "s"),
            "--no-pdb",
            "--device",
            "cpu",
            "--prior",  # the raw decoder on N(0, I): its mirror images are the decoded ones, reflected
            "standard",
            "--no-torsion-noise",
        ]
    )
    written = np.load(tmp_path / "s.npz")
    coords = torch.from_numpy(written["coords"])
    with torch.no_grad():
        raw = model.decode(torch.randn(200, model.latent_dim, generator=torch.Generator().manual_seed(3)))
    mirrored = chain_agreement(coords, raw, aib9.topology.bonds) < 0
    assert 0.35 <= mirrored.float().mean().item() <= 0.65
    torch.testing.assert_close(coords[mirrored], -raw[mirrored], atol=1e-5, rtol=0)
    assert json.loads(str(written["metadata"]))["parity"] == "mirror-symmetric"


def test_sample_interpolation_follows_the_hand_of_its_first_frame(mirror_symmetric_checkpoint, tmp_path, aib9):
    path, _ = mirror_symmetric_checkpoint
    mirrored = (torch.from_numpy(aib9.coords[:48]) * MIRROR).numpy()
    data = tmp_path / "mirrored.npz"
    np.savez(data, coords=mirrored, atomic_numbers=aib9.topology.atomic_numbers, bonds=aib9.topology.bonds)
    argv = ["--interpolate", "0,40", "--steps", "5", "--data", str(data), "--no-pdb", "--device", "cpu"]
    sample_main([str(path), *argv, "--output", str(tmp_path / "path")])
    frames = torch.from_numpy(np.load(tmp_path / "path.npz")["coords"])
    bonds = aib9.topology.bonds
    assert chain_agreement(frames[:1], torch.from_numpy(mirrored[:1]), bonds).item() > 0
    assert (chain_agreement(frames[1:], frames[:-1], bonds) > 0).all()


def test_evaluate_reconstructs_mirrored_references_in_their_own_hand(mirror_symmetric_checkpoint, tmp_path, aib9):
    path, _ = mirror_symmetric_checkpoint
    data = tmp_path / "mirrored.npz"
    mirrored = (torch.from_numpy(aib9.coords[:20]) * MIRROR).numpy()
    np.savez(data, coords=mirrored, atomic_numbers=aib9.topology.atomic_numbers, bonds=aib9.topology.bonds)
    argv = ["--data", str(data), "--num-samples", "20", "--device", "cpu", "--no-compile"]
    evaluate_main([str(path), *argv, "--output", str(tmp_path / "report")])
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert report["parity"].startswith("parity: mirror-symmetric")
    assert report["reconstruction"]["mirror_gap"] < 0.05, report["reconstruction"]
