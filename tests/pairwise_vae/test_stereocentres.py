"""Stereocentres of a chiral model: the loss term that holds them, the report's counts against hand-made frames,
and evaluate's report.

AIB9 has no stereocentres (two equivalent methyls on every CA), but by atom index each CA's
signed volume (CA, N, CB1, CB2) keeps its sign within one MD run; a rule built from those
volumes stands in for a chiral molecule's.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from pairwise_helpers import make_model, tiny_model_config, with_trained_size_coordinate_updates
from pairwise_vae.config import from_dict, to_dict
from pairwise_vae.evaluation.evaluate import main as evaluate_main
from pairwise_vae.evaluation.stereocentres import stereocentre_agreement, stereocentre_report
from pairwise_vae.geometry import normalized_volumes, signed_volumes
from pairwise_vae.model.decoder import DecoderConfig
from pairwise_vae.model.parity import ParityRule, orient_reconstructions, place_stereocentres, stereocentre_moves
from pairwise_vae.model.vae import BETWEEN_REACH, between_count, latents_between
from pairwise_vae.training.checkpoint import model_payload, save_checkpoint
from pairwise_vae.training.config import TrainConfig

AIB_CA = [4, 10, 16, 22, 28, 34, 40, 46, 52]
CENTRES = torch.tensor([[a, a - 1, a + 1, a + 2] for a in AIB_CA])  # CA, N, CB1, CB2


def index_rule(frame: np.ndarray) -> ParityRule:
    """A chiral rule with the nine CA volumes by index and their signs in ``frame`` (N, 3)."""
    signs = torch.sign(signed_volumes(torch.from_numpy(frame[None]).double(), CENTRES))[0].float()
    return ParityRule("chiral", CENTRES, signs, reason="test: AIB9's CA volumes by atom index")


def test_the_stereocentre_term_of_a_chiral_model_sees_one_inverted_centre(aib9):
    model = make_model(aib9)
    model.config.stereocentre_weight = 2.0
    positions = torch.from_numpy(aib9.coords[:2])
    inverted = positions.clone()
    inverted[:, [5, 6]] = positions[:, [6, 5]]  # CB1 <-> CB2 of the first residue: its centre inverted
    mu = log_var = torch.zeros(2, model.latent_dim)

    def chirality(rule: ParityRule, reconstruction: torch.Tensor) -> float:
        model.parity = rule
        terms = model.criterion(positions, reconstruction, mu, log_var, beta=0.0)
        model.config.stereocentre_weight = 0.0
        without = model.criterion(positions, reconstruction, mu, log_var, beta=0.0).total
        model.config.stereocentre_weight = 2.0
        assert (terms.total - without).item() == pytest.approx(2.0 * terms.stereocentres.item(), rel=1e-5, abs=1e-7)
        return terms.stereocentres.item()

    rule = index_rule(aib9.coords[0])
    # by hand: the sum over the nine centres of max(0, |t_a| / 2 - sign(t_a) s_a)^2, s and t the normalised volumes of
    # the reconstruction and the input: only the first centre is inverted (its sign flipped, its size changed
    # through its methyls), so only it counts, with (|t_0| / 2 + |s_0|)^2
    s, t = (normalized_volumes(coords.double(), CENTRES) for coords in (inverted, positions))
    assert (torch.sign(s[:, 0]) == -torch.sign(t[:, 0])).all() and (torch.sign(s[:, 1:]) == torch.sign(t[:, 1:])).all()
    expected = (0.5 * t[:, 0].abs() + s[:, 0].abs()).pow(2).mean().item()
    assert expected > 0.05
    added = chirality(rule, inverted) - chirality(ParityRule("mirror-symmetric"), inverted)
    assert added == pytest.approx(expected, rel=1e-4)
    mirrored = chirality(rule, -inverted) - chirality(ParityRule("mirror-symmetric"), -inverted)
    assert mirrored == pytest.approx(expected, rel=1e-4), "the mirror image has the same centre inverted"
    assert chirality(rule, -positions) == pytest.approx(0.0, abs=1e-6), "the mirror image keeps every relation"


def test_agreement_counts_inverted_centres_by_hand(aib9):
    frames = aib9.coords[:4].astype(np.float64)
    rule = index_rule(frames[0])
    frames[1][[5, 6]] = frames[1][[6, 5]]  # CB1 <-> CB2 of the first residue: only its centre inverted
    frames[3] = -frames[3]  # the mirror image: all nine inverted
    found = stereocentre_agreement(frames, rule)
    assert found["per_centre"] == pytest.approx([0.5] + [0.75] * 8)
    assert found["all_kept"] == pytest.approx(0.5)
    assert found["inverted_per_frame"] == pytest.approx((0 + 1 + 0 + 9) / 4)


def test_only_a_chiral_rule_gets_a_stereocentre_entry(aib9):
    frames = aib9.coords[:3]
    assert stereocentre_report(ParityRule("mirror-symmetric"), aib9.topology, {"samples": frames}) is None
    found = stereocentre_report(index_rule(frames[0]), aib9.topology, {"samples": frames, "relaxed_samples": None})
    assert found["centres"][:2] == ["AIB2:CA", "AIB3:CA"]
    assert set(found) == {"centres", "samples"} and found["samples"]["all_kept"] == 1.0


def test_evaluate_reports_the_stereocentres_of_a_chiral_model(aib9, tmp_path, tiny_npz):
    model = make_model(aib9)
    model.parity = index_rule(aib9.coords[0])
    path = tmp_path / "tiny.pt"
    config = TrainConfig(data=tiny_npz, model=tiny_model_config(), validation_fraction=0.25)
    save_checkpoint(path, model_payload(config, aib9.topology, model))
    reference = tmp_path / "reference.npz"
    mixed = aib9.coords[:20].copy()
    mixed[::4][:, [5, 6]] = mixed[::4][:, [6, 5]]  # 5 of 20 frames with the first centre inverted
    np.savez(reference, coords=mixed, atomic_numbers=aib9.topology.atomic_numbers, bonds=aib9.topology.bonds)
    argv = ["--data", str(reference), "--num-samples", "20", "--device", "cpu", "--no-compile"]
    evaluate_main([str(path), *argv, "--output", str(tmp_path / "report")])
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    found = report["stereocentres"]
    assert found["reference"]["all_kept"] == pytest.approx(0.75)
    assert found["reference"]["per_centre"][0] == pytest.approx(0.75)
    assert set(found) == {"centres", "reference", "reconstructions", "samples", "samples_before_placement"}
    assert found["samples"]["all_kept"] == 1.0 and found["reconstructions"]["all_kept"] == 1.0, "the layer places all"
    criterion = report["quality_bar"]["criteria"]["stereocentres"]
    assert criterion["value"] == found["samples_before_placement"]["all_kept"], "judged on the EGNN's own samples"
    assert criterion["bar"] == ">= 0.740 (reference 0.750 - 0.01)"
    assert criterion["criterion"].endswith("before the decoder's stereocentre layer (after it: 1.000)")
    markdown = (tmp_path / "report" / "report.md").read_text()
    assert "## Stereocentres" in markdown and "| reference | 0.750 | 0.250 | AIB2:CA (0.750) |" in markdown
    assert "| samples before the stereocentre layer |" in markdown


def test_a_chiral_rule_orients_reconstructions_by_their_stereocentres(aib9):
    inputs = torch.from_numpy(aib9.coords[:1]).double()
    rebuilt = inputs.clone()
    for centre in CENTRES[:5]:  # five of the nine centres inverted, the backbone chains as in the input
        rebuilt[:, centre[[2, 3]]] = inputs[:, centre[[3, 2]]]
    rule = index_rule(aib9.coords[0])
    bonds = torch.from_numpy(aib9.topology.bonds)

    def inverted(coords: torch.Tensor) -> int:
        return int((signed_volumes(coords, CENTRES)[0] * signed_volumes(inputs, CENTRES)[0] < 0).sum())

    assert inverted(rebuilt) == 5
    mirror_symmetric = ParityRule("mirror-symmetric", CENTRES, torch.zeros(0), reason="test")
    assert inverted(orient_reconstructions(rebuilt, inputs, mirror_symmetric, bonds)) == 5
    assert inverted(orient_reconstructions(rebuilt, inputs, rule, bonds)) == 4, "the other hand"


def test_latents_between_lie_on_the_lines_through_posterior_means_reaching_past_them():
    mu = torch.tensor([[0.0, 0.0], [2.0, 4.0]])
    z = latents_between(mu, 400)
    assert z.shape == (400, 2)
    assert torch.allclose(z[:, 1], 2.0 * z[:, 0]), "on the line through the two means"
    reach = 2.0 * BETWEEN_REACH
    assert z[:, 0].min() >= -reach and z[:, 0].max() <= 2.0 + reach, "at most BETWEEN_REACH of the segment beyond"
    assert (z[:, 0] < 0).any() and (z[:, 0] > 2.0).any(), "past both means"
    assert ((z[:, 0] > 0) & (z[:, 0] < 2.0)).float().mean() > 0.3, "and between them"
    assert len(torch.unique(z[:, 0])) > 100, "spread along the line, not only its ends"


def test_a_chiral_model_in_training_also_decodes_latents_between_posterior_means(aib9):
    model = make_model(aib9)
    model.config.stereocentre_weight = 10.0
    positions = torch.from_numpy(aib9.coords[:8])
    assert model(positions)[0].shape == (8, 58, 3), "AIB9 is not chiral: the reconstructions only"
    model.parity = index_rule(aib9.coords[0])
    decoded, mu, log_var = model(positions)
    assert decoded.shape == (8 + between_count(8), 58, 3) == (10, 58, 3)
    model.eval()
    assert model(positions)[0].shape == (8, 58, 3), "not outside training"
    model.train()
    # by hand: the term sums the reconstructions' hinge against their inputs and the between decodes' against the
    # first K inputs (stand-ins for the training configuration)
    centres = model.parity.centres
    decoded = positions[[0, 1, 2, 3, 4, 5, 6, 7, 0, 1]].clone()
    decoded[9][[5, 6]] = decoded[9][[6, 5]]  # the second between decode has the first centre inverted
    terms = model.criterion(positions, decoded, mu, log_var, beta=0.0)
    s, t = (normalized_volumes(coords.double(), centres)[:, 0] for coords in (decoded[9:], positions[1:2]))
    expected = (0.5 * t.abs() + s.abs()).pow(2).item() / 2  # one of the K = 2 between decodes
    assert expected > 0.05
    assert terms.stereocentres.item() == pytest.approx(expected, rel=1e-4)
    model.config.stereocentre_weight = 0.0
    assert model(positions)[0].shape == (8, 58, 3), "the term off: no decodes between"


def invert_through_neighbours(frame: torch.Tensor, centre: torch.Tensor) -> torch.Tensor:
    """(N, 3) ``frame`` with the centre atom of (4,) ``centre`` reflected through the plane of its three neighbours:
    its configuration inverted, its distances to them kept."""
    c, a, b, d = frame[centre]
    normal = torch.linalg.cross(b - a, d - a)
    normal = normal / normal.norm()
    inverted = frame.clone()
    inverted[centre[0]] = c - 2 * torch.dot(c - a, normal) * normal
    return inverted


def aib9_layer(aib9) -> tuple[torch.Tensor, ParityRule, torch.Tensor, torch.Tensor]:
    """AIB9's first frame, the chiral index rule of its CAs and the layer's moves for them."""
    frame = torch.from_numpy(aib9.coords[0]).float()
    axes, branches = stereocentre_moves(aib9.topology.bonds, aib9.topology.n_atoms, CENTRES)
    return frame, index_rule(aib9.coords[0]), axes, branches


def swap_methyls(frame: torch.Tensor, centre: torch.Tensor) -> torch.Tensor:
    """(N, 3) ``frame`` with the two methyls of (4,) ``centre`` (CA, N, CB1, CB2) swapped: its index-centre
    inverted, every bond kept."""
    swapped = frame.clone()
    swapped[centre[[2, 3]]] = frame[centre[[3, 2]]]
    return swapped


def bond_lengths(coords: torch.Tensor, bonds: np.ndarray) -> torch.Tensor:
    """(..., N, 3) -> (..., n_bonds) Angstrom."""
    return (coords[..., bonds[:, 0], :] - coords[..., bonds[:, 1], :]).norm(dim=-1)


def test_the_layer_turns_a_centres_small_branches_about_its_backbone(aib9):
    _, _, axes, branches = aib9_layer(aib9)
    names = aib9.topology.atom_names
    first = [names[int(atom)] for atom in axes[0]], [names[int(atom)] for atom in branches[0].nonzero().flatten()]
    assert sorted(first[0]) == ["C", "N"] and sorted(first[1]) == ["CB1", "CB2"], first
    assert (branches.sum(dim=1) == 2).all()


def test_the_stereocentre_layer_inverts_an_inverted_centre_keeping_bonds_and_backbone(aib9):
    frame, rule, axes, branches = aib9_layer(aib9)
    inverted = swap_methyls(frame, CENTRES[3])
    assert (torch.sign(signed_volumes(inverted[None], CENTRES))[0] != rule.signs).sum() == 1
    placed = place_stereocentres(torch.stack([inverted, -inverted, frame]), CENTRES, rule.signs, axes, branches)
    assert (torch.sign(signed_volumes(placed[:1], CENTRES)) == rule.signs).all()
    moved = (placed[0] - inverted).norm(dim=-1) > 1e-6
    assert moved.nonzero().flatten().tolist() == branches[3].nonzero().flatten().tolist(), "only its two methyls"
    torch.testing.assert_close(
        bond_lengths(placed[0], aib9.topology.bonds), bond_lengths(inverted, aib9.topology.bonds)
    )
    torch.testing.assert_close(placed[1], -placed[0], msg="a mirror image is placed in its own hand")
    torch.testing.assert_close(placed[2], frame, atol=0, rtol=0, msg="every centre kept: the frame stays")


def test_the_stereocentre_layer_places_every_centre_in_the_hand_of_most(aib9):
    frame, rule, axes, branches = aib9_layer(aib9)
    five = frame
    for centre in CENTRES[:5]:
        five = swap_methyls(five, centre)
    placed = place_stereocentres(five[None], CENTRES, rule.signs, axes, branches)[0]
    assert (torch.sign(signed_volumes(placed[None], CENTRES))[0] == -rule.signs).all(), "five of nine: the other hand"
    moved = (placed - five).norm(dim=-1) > 1e-6
    assert moved.nonzero().flatten().tolist() == branches[5:].any(dim=0).nonzero().flatten().tolist()


def test_a_centre_in_a_ring_is_reflected_through_its_neighbours(aib9):
    """AIB9 with a bond between the first residue's methyl CB1 and its N (a three-membered ring through the CA)."""
    bonds = np.concatenate([aib9.topology.bonds, [[CENTRES[0, 2].item(), CENTRES[0, 1].item()]]])
    axes, branches = stereocentre_moves(bonds, aib9.topology.n_atoms, CENTRES)
    assert not branches[0].any() and branches[1:].any(dim=1).all()
    frame, rule, _, _ = aib9_layer(aib9)
    inverted = invert_through_neighbours(frame, CENTRES[0])
    placed = place_stereocentres(inverted[None], CENTRES, rule.signs, axes, branches)[0]
    torch.testing.assert_close(placed, frame, atol=1e-5, rtol=0, msg="the CA reflected back, nothing else moved")


def test_a_chiral_model_decodes_its_output_through_the_stereocentre_layer_and_trains_without_it(aib9):
    rule = index_rule(aib9.coords[0])
    model = make_model(aib9, parity=rule)
    with_trained_size_coordinate_updates(model, std=0.5)  # so that some centres come out inverted
    z = 3 * torch.randn(64, model.latent_dim)
    model.eval()
    with torch.no_grad():
        raw, placed = model.decoder(z, stereocentre_layer=False), model.decode(z)
    signs = torch.sign(signed_volumes(raw, CENTRES)) * rule.signs
    assert ((signs > 0).any(dim=1) & (signs < 0).any(dim=1)).any(), "some raw decodes mix the hands"
    signs = torch.sign(signed_volumes(placed, CENTRES)) * rule.signs
    assert ((signs > 0).all(dim=1) | (signs < 0).all(dim=1)).all(), "each placed decode has one hand"
    decoder = model.decoder
    replaced = place_stereocentres(raw, CENTRES, rule.signs, decoder.centre_axes, decoder.centre_branches)
    torch.testing.assert_close(placed, replaced - replaced.mean(dim=1, keepdim=True))
    model.train()
    with torch.no_grad():
        torch.testing.assert_close(model.decode(z), raw, msg="training steps see the EGNN's own output")


def test_the_stereocentre_layer_is_off_for_other_rules_and_for_checkpoints_from_before_it(aib9):
    assert make_model(aib9).decoder.centres is None, "no chiral rule"
    record = to_dict(DecoderConfig())
    assert record.pop("place_stereocentres") is True
    assert from_dict(DecoderConfig, record).place_stereocentres is False
