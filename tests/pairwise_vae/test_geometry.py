"""Loss terms and geometry helpers against hand computation."""

from __future__ import annotations

import math

import pytest
import torch
from pairwise_helpers import random_orthogonal
from pairwise_vae import geometry
from pairwise_vae.evaluation.metrics import clash_fraction
from pairwise_vae.geometry import bond_length_statistics, distance_mae, kabsch_rmsd, pairwise_distances
from pairwise_vae.model.losses import distance_weights, kl_divergence, pairwise_distance_loss
from pairwise_vae.model.vae import ModelConfig, MolecularVAEMSE


def test_pairwise_loss_matches_hand_computation():
    predicted = torch.tensor([[[0.0, 0.0, 0.0], [3.0, 0.0, 0.0], [3.0, 4.0, 0.0]]])
    target = torch.tensor([[[0.0, 0.0, 0.0], [2.0, 0.0, 0.0], [2.0, 2.0, 0.0]]])
    # predicted distances (0-1, 0-2, 1-2) = 3, 5, 4; target = 2, sqrt(8), 2
    expected = ((3 - 2) ** 2 + (5 - math.sqrt(8)) ** 2 + (4 - 2) ** 2) / 3
    assert math.isclose(pairwise_distance_loss(predicted, target).item(), expected, rel_tol=1e-6)


def test_weighted_loss_and_inverse_variance_weights_match_hand_computation():
    # three atoms on a line; pair 0-1 never changes (variance 0), 0-2 and 1-2 swing by +-1 A
    frames = torch.tensor([[[0.0, 0, 0], [1, 0, 0], [3, 0, 0]], [[0.0, 0, 0], [1, 0, 0], [5, 0, 0]]])
    # distances (0-1, 0-2, 1-2) = (1, 3, 2) and (1, 5, 4): unbiased variances 0, 2, 2
    floor = 1.0
    raw = torch.tensor([1 / (0 + floor**2), 1 / (2 + floor**2), 1 / (2 + floor**2)])
    weights = distance_weights(frames, sigma_floor=floor)
    torch.testing.assert_close(weights, raw / raw.mean())
    predicted = torch.tensor([[[0.0, 0, 0], [3, 0, 0], [3, 4, 0]]])
    target = torch.tensor([[[0.0, 0, 0], [2, 0, 0], [2, 2, 0]]])
    squared_errors = torch.tensor([(3 - 2) ** 2, (5 - math.sqrt(8)) ** 2, (4 - 2) ** 2])
    expected = (weights * squared_errors).mean()
    torch.testing.assert_close(pairwise_distance_loss(predicted, target, weights), expected)


def test_pairwise_loss_equals_pdist_molecule_by_molecule(aib9):
    generator = torch.Generator().manual_seed(0)
    target = torch.from_numpy(aib9.coords[:5]).double()
    predicted = target + 0.3 * torch.randn(target.shape, generator=generator, dtype=torch.float64)
    per_molecule = [(torch.pdist(p) - torch.pdist(t)).pow(2).mean() for p, t in zip(predicted, target, strict=True)]
    assert torch.pdist(target[0]).numel() == 1653
    torch.testing.assert_close(pairwise_distance_loss(predicted, target), torch.stack(per_molecule).mean())
    # unlike pdist over a concatenated batch, the loss does not depend on batch composition
    torch.testing.assert_close(pairwise_distance_loss(predicted[:2], target[:2]), torch.stack(per_molecule[:2]).mean())


def test_log_variance_head_starts_near_minus_one_on_real_data(aib9):
    torch.manual_seed(0)
    model = MolecularVAEMSE(
        ModelConfig(),
        torch.from_numpy(aib9.topology.atomic_numbers),
        torch.from_numpy(aib9.topology.bonds),
        torch.from_numpy(aib9.coords[0]),
    )
    _, log_var = model.encode(torch.from_numpy(aib9.coords[:32]))
    assert (log_var - (-1.0)).abs().max() < 0.1, f"log_var spans {log_var.min():.3f}..{log_var.max():.3f}"


def test_kl_divergence_matches_closed_form():
    mu = torch.tensor([[0.5, -1.0]])
    log_var = torch.tensor([[math.log(2.0), 0.0]])
    expected = 0.5 * ((0.25 + 2.0 - 1.0 - math.log(2.0)) + (1.0 + 1.0 - 1.0 - 0.0))
    assert math.isclose(kl_divergence(mu, log_var).item(), expected, rel_tol=1e-6)
    assert kl_divergence(torch.zeros(3, 4), torch.zeros(3, 4)).abs().max() == 0


def test_kabsch_rmsd_of_rotated_copy_is_zero_and_mirror_needs_reflection(aib9):
    coords = torch.from_numpy(aib9.coords[:3]).double()
    generator = torch.Generator().manual_seed(0)
    rotated = coords @ random_orthogonal(False, generator).T + 5.0
    assert kabsch_rmsd(rotated, coords).max() < 1e-5
    mirrored = coords * torch.tensor([1.0, 1.0, -1.0], dtype=torch.float64)
    assert kabsch_rmsd(mirrored, coords, allow_reflection=True).max() < 1e-5
    assert kabsch_rmsd(mirrored, coords).min() > 0.5, "a helix and its mirror image should not superpose"


def test_kabsch_rmsd_matches_hand_computation_for_a_scaled_square():
    # every atom of a unit square moves 0.1 outwards: by symmetry no rotation helps, RMSD = 0.1
    reference = torch.tensor([[[1.0, 0, 0], [-1.0, 0, 0], [0, 1.0, 0], [0, -1.0, 0]]], dtype=torch.float64)
    generator = torch.Generator().manual_seed(1)
    scaled = 1.1 * reference @ random_orthogonal(False, generator).T + 3.0
    assert math.isclose(kabsch_rmsd(scaled, reference).item(), 0.1, rel_tol=1e-5)


def test_bond_length_statistics():
    reference = torch.tensor([[[0.0, 0, 0], [1.0, 0, 0], [2.0, 0, 0]]])
    predicted = torch.tensor([[[0.0, 0, 0], [1.05, 0, 0], [2.35, 0, 0]]])
    stats = bond_length_statistics(predicted, reference, torch.tensor([[0, 1], [1, 2]]))
    assert math.isclose(stats["bond_mae"], (0.05 + 0.30) / 2, rel_tol=1e-5)
    assert math.isclose(stats["bond_within_0.1"], 0.5)
    assert math.isclose(stats["bond_max_error"], 0.30, rel_tol=1e-5)


def test_all_pair_metrics_of_many_frames_are_the_same_in_chunks(aib9, monkeypatch):
    frames = torch.from_numpy(aib9.coords[:40]).double()
    moved = frames + 0.1 * torch.randn_like(frames)
    by_hand = (pairwise_distances(moved) - pairwise_distances(frames)).abs().mean().item()
    noisy = (moved + torch.linspace(0, 1, 40)[:, None, None] * torch.randn_like(moved)).numpy()  # some clash
    whole = (distance_mae(moved, frames), clash_fraction(noisy, aib9.topology.bonds))
    assert 0.0 < whole[1] < 1.0
    monkeypatch.setattr(geometry, "PAIR_VALUES_PER_CHUNK", 3 * 1653 * 7)  # 7 frames of AIB9's 1,653 pairs a chunk
    assert geometry.frames_per_chunk(1653) == 7
    assert distance_mae(moved, frames) == pytest.approx(by_hand, rel=1e-12) == whole[0]
    assert clash_fraction(noisy, aib9.topology.bonds) == whole[1]
