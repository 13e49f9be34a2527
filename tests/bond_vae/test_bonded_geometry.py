"""bond_vae's optional loss terms: 1-3 and 1-4 distance MSEs, relative chirality, steric, aligned."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from bond_helpers import make_model, random_orthogonal, run_main, tiny_model_config, tiny_run_flags
from bond_vae.bond_graph import pairs_bonds_apart, torsion_quadruplets
from bond_vae.model.losses import (
    aligned_coordinate_loss,
    kl_divergence,
    pair_distance_loss,
    relative_chirality_loss,
    steric_loss,
    steric_pairs,
)
from bond_vae.model.vae import MolecularVAE
from bond_vae.training.checkpoint import load_checkpoint, model_from_checkpoint, model_payload, save_checkpoint
from bond_vae.training.config import TrainConfig
from bond_vae.training.train import main

CHAIN_BONDS = np.array([[0, 1], [1, 2], [2, 3], [3, 4]])


def test_pairs_two_and_three_bonds_apart_in_a_chain():
    assert pairs_bonds_apart(CHAIN_BONDS, 5, 1).tolist() == CHAIN_BONDS.tolist()
    assert pairs_bonds_apart(CHAIN_BONDS, 5, 2).tolist() == [[0, 2], [1, 3], [2, 4]]
    assert pairs_bonds_apart(CHAIN_BONDS, 5, 3).tolist() == [[0, 3], [1, 4]]
    assert pairs_bonds_apart(CHAIN_BONDS, 5, 4).tolist() == [[0, 4]]


def test_pairs_of_a_branched_molecule_a_ring_and_disconnected_atoms():
    # 0, 2 and 3 on atom 1; 4 on atom 3 (the carbon skeleton of isopentane)
    branched = np.array([[1, 0], [1, 2], [1, 3], [3, 4]])
    assert pairs_bonds_apart(branched, 5, 2).tolist() == [[0, 2], [0, 3], [1, 4], [2, 3]]
    assert pairs_bonds_apart(branched, 5, 3).tolist() == [[0, 4], [2, 4]]
    # in a four-ring the far atom is two bonds away either way round: shortest paths count
    ring = np.array([[0, 1], [1, 2], [2, 3], [3, 0]])
    assert pairs_bonds_apart(ring, 4, 2).tolist() == [[0, 2], [1, 3]]
    assert pairs_bonds_apart(ring, 4, 3).shape == (0, 2)
    # atom 2 is bonded to nothing: it pairs with no atom, whatever the hop count
    assert pairs_bonds_apart(np.array([[0, 1]]), 3, 2).shape == (0, 2)
    assert pairs_bonds_apart(np.array([[0, 1]]), 3, 3).shape == (0, 2)


def test_aib9_pairs_are_the_ends_of_bonded_chains(aib9):
    """AIB9 has no rings: the 1-3 pairs are the ends of bonded triplets, the 1-4 pairs those of quadruplets."""
    bonds = aib9.topology.bonds
    model = make_model(aib9)
    neighbours = [set() for _ in range(58)]
    for i, j in bonds.tolist():
        neighbours[i].add(j)
        neighbours[j].add(i)
    ends_of_triplets = {(i, k) for j in range(58) for i in neighbours[j] for k in neighbours[j] if i < k}
    quadruplets = torsion_quadruplets(torch.from_numpy(bonds), 58).tolist()
    ends_of_quadruplets = {(min(i, m), max(i, m)) for i, _, _, m in quadruplets}
    assert {tuple(pair) for pair in model.angle_pairs.tolist()} == ends_of_triplets
    assert {tuple(pair) for pair in model.torsion_pairs.tolist()} == ends_of_quadruplets


def chain_model(angle_weight: float, torsion_weight: float) -> MolecularVAE:
    config = tiny_model_config()
    config.angle_weight, config.torsion_weight = angle_weight, torsion_weight
    torch.manual_seed(0)
    return MolecularVAE(config, torch.full((5,), 6), torch.from_numpy(CHAIN_BONDS), torch.zeros(5, 3)).double()


def test_terms_match_hand_computation_on_a_five_atom_chain():
    # target: a planar staircase with unit bonds; 1-3 distances sqrt(2), 1-4 distances sqrt(5)
    target = torch.tensor([[[0.0, 0, 0], [1, 0, 0], [1, 1, 0], [2, 1, 0], [2, 2, 0]]], dtype=torch.float64)
    # reconstruction: a straight line with bonds of 1.5 A; 1-3 distances 3, 1-4 distances 4.5
    predicted = torch.tensor([[[1.5 * k, 0.0, 0.0] for k in range(5)]], dtype=torch.float64)
    mu = torch.tensor([[1.0, 0.0, 0.0, 0.0]], dtype=torch.float64)  # KL 0.5 nats
    log_var = torch.zeros(1, 4, dtype=torch.float64)
    bond = 0.5**2
    angle = (3.0 - math.sqrt(2.0)) ** 2  # three 1-3 pairs, all equal
    torsion = (4.5 - math.sqrt(5.0)) ** 2  # two 1-4 pairs, all equal
    terms = chain_model(angle_weight=2.0, torsion_weight=0.5).criterion(target, predicted, mu, log_var, beta=0.1)
    assert math.isclose(terms.reconstruction.item(), bond, rel_tol=1e-12)
    assert math.isclose(terms.angle.item(), angle, rel_tol=1e-12)
    assert math.isclose(terms.torsion.item(), torsion, rel_tol=1e-12)
    assert math.isclose(terms.kl.item(), 0.5, rel_tol=1e-12)
    expected_total = bond + 2.0 * angle + 0.5 * torsion + 0.1 * 0.5
    assert math.isclose(terms.total.item(), expected_total, rel_tol=1e-12)
    # the terms are reported with zero weights too, and then stay out of the total
    unweighted = chain_model(0.0, 0.0).criterion(target, predicted, mu, log_var, beta=0.1)
    assert math.isclose(unweighted.angle.item(), angle, rel_tol=1e-12)
    assert math.isclose(unweighted.total.item(), bond + 0.1 * 0.5, rel_tol=1e-12)


def test_steric_term_matches_hand_computation_and_is_e3_invariant(aib9, positions):
    # the five-atom chain folded so that its ends (4 bonds apart) are 2.0 A apart; (0, 3) at 1.5 A does not count
    assert steric_pairs(torch.from_numpy(CHAIN_BONDS), 5).tolist() == [[0, 4]]
    folded = torch.tensor([[[0.0, 0, 0], [1.5, 0, 0], [1.5, 1.5, 0], [0, 1.5, 0], [0.0, 0.0, 2.0]]])
    torch.testing.assert_close(
        steric_loss(folded, steric_pairs(torch.from_numpy(CHAIN_BONDS), 5), 2.6), torch.tensor(0.36)
    )
    model = chain_model(0.0, 0.0)
    model.config.steric_weight = 2.0
    terms = model.criterion(folded, folded, torch.zeros(1, 4), torch.zeros(1, 4), beta=0.0)
    torch.testing.assert_close(terms.steric, torch.tensor(0.36))
    torch.testing.assert_close(terms.total, torch.tensor(0.72))
    pairs = steric_pairs(torch.from_numpy(aib9.topology.bonds), 58)
    assert steric_loss(positions, pairs, 2.6) == 0.0, "the MD frames have no contacts this close"
    squeezed = 0.6 * positions
    loss = steric_loss(squeezed, pairs, 2.6)
    assert loss > 0.1
    generator = torch.Generator().manual_seed(3)
    for reflect in (False, True):
        moved = squeezed @ random_orthogonal(reflect, generator).T + 5.0
        torch.testing.assert_close(steric_loss(moved, pairs, 2.6), loss)


def test_zero_weights_give_exactly_the_bond_length_loss(aib9):
    model = make_model(aib9)
    batch = torch.from_numpy(aib9.coords[:6])
    torch.manual_seed(1)
    reconstruction, mu, log_var = model(batch)
    terms = model.criterion(batch, reconstruction, mu, log_var, beta=1e-3)
    old = pair_distance_loss(reconstruction, batch, model.bonds) + 1e-3 * kl_divergence(mu, log_var).mean()
    assert torch.equal(terms.total, old)
    assert terms.angle > 0 and terms.torsion > 0, "reported, but left out of the total"
    assert terms.relative_chirality == 0, "computed only when weighted"
    model.config.angle_weight, model.config.torsion_weight = 1.0, 3.0
    model.config.relative_chirality_weight = 0.5
    weighted = model.criterion(batch, reconstruction, mu, log_var, beta=1e-3)
    relative = relative_chirality_loss(reconstruction, batch, model.quadruplets)
    assert weighted.relative_chirality == relative > 0
    torch.testing.assert_close(weighted.total, old + terms.angle + 3.0 * terms.torsion + 0.5 * relative)


@pytest.mark.parametrize("reflect", [False, True])
def test_terms_are_invariant_under_rotation_reflection_translation(aib9, positions, reflect):
    model = make_model(aib9)
    other = positions.roll(1, dims=0)
    generator = torch.Generator().manual_seed(7)
    moved, other_moved = (
        x @ random_orthogonal(reflect, generator).T + 5.0 * torch.randn(3, generator=generator, dtype=torch.float64)
        for x in (positions, other)
    )
    for pairs in (model.angle_pairs, model.torsion_pairs):
        loss = pair_distance_loss(positions, other, pairs)
        assert loss > 1e-4, "two different conformations"
        torch.testing.assert_close(pair_distance_loss(moved, other, pairs), loss, rtol=1e-10, atol=0)
        torch.testing.assert_close(pair_distance_loss(moved, other_moved, pairs), loss, rtol=1e-10, atol=0)


def test_aligned_coordinate_loss_against_hand_computation_and_under_e3(aib9):
    generator = torch.Generator().manual_seed(0)
    target = torch.from_numpy(aib9.coords[:3]).double()
    centred = target - target.mean(dim=1, keepdim=True)
    # shrunk about the centroid: the best superposition is the identity, MSD = (1 - s)^2 |T|^2 / N
    shrunk = 0.9 * centred
    expected = (0.01 * centred.pow(2).sum(dim=(1, 2)) / 58).mean()
    torch.testing.assert_close(aligned_coordinate_loss(shrunk, target), expected)
    for reflect in (False, True):
        moved = shrunk @ random_orthogonal(reflect, generator).double().T + torch.tensor([3.0, -1.0, 7.0])
        torch.testing.assert_close(aligned_coordinate_loss(moved, target), expected)
        assert aligned_coordinate_loss(centred @ random_orthogonal(reflect, generator).double().T, target) < 1e-9
    # one atom displaced: the loss sees it (0.5 A on 1 of 58 atoms, a little less after superposition)
    displaced = target.clone()
    displaced[:, 10, 0] += 0.5
    assert 0.5 * 0.25 / 58 < aligned_coordinate_loss(displaced, target) <= 0.25 / 58
    predicted = shrunk.clone().float().requires_grad_(True)
    aligned_coordinate_loss(predicted, target.float()).backward()
    assert torch.isfinite(predicted.grad).all() and predicted.grad.abs().sum() > 0


def test_aligned_weight_adds_the_aligned_term_to_the_total(aib9):
    model = make_model(aib9)
    positions = torch.from_numpy(aib9.coords[:4])
    shrunk = 0.8 * (positions - positions.mean(dim=1, keepdim=True))
    mu, log_var = torch.zeros(4, model.latent_dim), torch.zeros(4, model.latent_dim)
    off = model.criterion(positions, shrunk, mu, log_var, beta=0.0)
    assert off.aligned == 0.0, "off by default"
    model.config.aligned_weight = 0.5
    terms = model.criterion(positions, shrunk, mu, log_var, beta=0.0)
    torch.testing.assert_close(terms.aligned, aligned_coordinate_loss(shrunk, positions))
    torch.testing.assert_close(terms.total, off.total + 0.5 * terms.aligned)


def test_a_non_finite_batch_gives_a_non_finite_aligned_term_not_an_svd_error(aib9):
    """Bug: with the aligned term on (the default since 0.3), a NaN coordinate made the SVD raise
    LinAlgError and killed the run, where the trainer should skip the step as for any non-finite loss."""
    positions = torch.from_numpy(aib9.coords[:3])
    shrunk = 0.8 * (positions - positions.mean(dim=1, keepdim=True))
    poisoned = shrunk.clone()
    poisoned[1, 5, 0] = float("nan")
    assert torch.isnan(aligned_coordinate_loss(poisoned, positions))
    infinite = positions.clone()
    infinite[0, 0, 2] = float("inf")
    assert torch.isnan(aligned_coordinate_loss(shrunk, infinite))
    assert torch.isfinite(aligned_coordinate_loss(shrunk, positions)), "finite batches: see the hand computation"
    model = make_model(aib9)
    model.config.aligned_weight = 0.1
    mu, log_var = torch.zeros(3, model.latent_dim), torch.zeros(3, model.latent_dim)
    assert not torch.isfinite(model.criterion(positions, poisoned, mu, log_var, beta=0.0).total)


def test_checkpoints_hold_no_pairs_and_old_ones_load(aib9, tmp_path):
    """The pair buffers are rebuilt from the bonds: a checkpoint written before they existed loads."""
    model = make_model(aib9)
    payload = model_payload(TrainConfig(model=tiny_model_config()), aib9.topology, model)
    assert not any("pairs" in key for key in payload["model"])
    for name in ("angle_weight", "torsion_weight"):
        del payload["config"]["model"][name]  # as written before the options existed
    save_checkpoint(tmp_path / "old.pt", payload)
    restored = model_from_checkpoint(load_checkpoint(tmp_path / "old.pt"))
    assert restored.config.angle_weight == 0.0 and restored.config.torsion_weight == 0.0
    assert torch.equal(restored.angle_pairs, model.angle_pairs)
    assert torch.equal(restored.torsion_pairs, model.torsion_pairs)


def test_flags_are_in_the_help(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "--angle-weight" in out and "--torsion-weight" in out and "--steric-weight" in out


@pytest.mark.parametrize(
    "flag",
    [
        "--angle-weight",
        "--torsion-weight",
        "--steric-weight",
        "--relative-chirality-weight",
        "--stereocentre-weight",
        "--aligned-weight",
    ],
)
def test_negative_weights_are_refused_in_one_line(flag, tiny_npz, tmp_path, capsys):
    argv = tiny_run_flags(tiny_npz, tmp_path / "runs", 1, flag, "-0.5")
    assert run_main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and flag in err, err
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow  # a training run: about 13 CPU-s
def test_a_run_records_the_terms(tiny_npz, tmp_path):
    """Every weight 1 and beta 0: the recorded training loss is the sum of the recorded terms. A steric
    distance of 4 A (the default 2.6 A is never reached in MD frames) makes the steric term count."""
    weights = ("--angle-weight", "1", "--torsion-weight", "1", "--steric-weight", "1", "--relative-chirality-weight")
    argv = tiny_run_flags(tiny_npz, tmp_path / "runs", 1, *weights, "1", "--steric-distance", "4.0", "--beta", "0")
    assert run_main([*argv, "--run-name", "run", "--evaluate-every", "2"]) == 0
    records = [json.loads(line) for line in (tmp_path / "runs" / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [record["split"] for record in records] == ["train", "validation"]
    for record in records:
        assert record["angle"] > 0 and record["torsion"] > 0, record
    train = records[0]
    assert train["steric"] > 0.1 and train["relative_chirality"] > 0, train
    terms = ("reconstruction", "angle", "torsion", "steric", "relative_chirality")
    assert train["loss"] == pytest.approx(sum(train[term] for term in terms), rel=1e-5), train
