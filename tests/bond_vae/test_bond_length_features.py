"""``--encoder-bond-length-features``: standardised bond lengths as direct inputs of the latent heads."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from bond_helpers import aib9_model, random_orthogonal, run_main, tiny_model_config, tiny_run_flags
from bond_vae.data.split import training_split
from bond_vae.model.vae import MolecularVAE
from bond_vae.training.checkpoint import load_checkpoint, model_from_checkpoint


def featured_model(aib9, enabled: bool = True) -> MolecularVAE:
    """A tiny float64 model (seed 0) with or without the features, standardised on all embedded frames."""
    config = tiny_model_config()
    config.encoder.bond_length_features = enabled
    model = aib9_model(aib9, config).double()
    model.encoder.fit_bond_length_statistics(torch.from_numpy(aib9.coords).double())
    return model


def test_statistics_are_each_bonds_mean_and_standard_deviation(aib9):
    model = featured_model(aib9)
    bonds = aib9.topology.bonds
    lengths = np.linalg.norm(aib9.coords[:, bonds[:, 0]] - aib9.coords[:, bonds[:, 1]], axis=-1)
    np.testing.assert_allclose(model.encoder.bond_length_mean.numpy(), lengths.mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(model.encoder.bond_length_scale.numpy(), lengths.std(axis=0), rtol=1e-4)
    assert 0.02 < model.encoder.bond_length_scale.mean().item() < 0.05, "AIB9's bonds vary by about 0.03 A"


def test_features_add_the_projection_of_the_standardised_lengths_to_the_pooled_features(aib9, positions):
    plain, featured = featured_model(aib9, enabled=False), featured_model(aib9)
    shared = {key: value for key, value in featured.state_dict().items() if key in plain.state_dict()}
    plain.load_state_dict(shared)
    encoder = featured.encoder
    bonds = aib9.topology.bonds
    lengths = (positions[:, bonds[:, 0]] - positions[:, bonds[:, 1]]).norm(dim=-1)
    standardised = (lengths - encoder.bond_length_mean) / encoder.bond_length_scale
    added = encoder.bond_length_projection(standardised)
    mu, log_var = featured.encode(positions)
    plain_mu, plain_log_var = plain.encode(positions)
    torch.testing.assert_close(mu - plain_mu, added @ encoder.mu_head.weight.T)
    torch.testing.assert_close(log_var - plain_log_var, added @ encoder.log_var_head.weight.T)


def test_features_are_invariant_and_make_the_latent_feel_one_standard_deviation_of_a_bond(aib9, positions):
    generator = torch.Generator().manual_seed(5)
    featured, plain = featured_model(aib9), featured_model(aib9, enabled=False)
    mu, _ = featured.encode(positions)
    for reflect in (False, True):
        moved = positions @ random_orthogonal(reflect, generator).T + 3.0
        torch.testing.assert_close(featured.encode(moved)[0], mu)

    # stretch the first bond by its standard deviation, moving the second atom's side of the chain
    bond = aib9.topology.bonds[0]
    stretched = positions.clone()
    direction = positions[:, bond[1]] - positions[:, bond[0]]
    shift = featured.encoder.bond_length_scale[0] * direction / direction.norm(dim=-1, keepdim=True)
    stretched[:, bond[1]] += shift
    response = (featured.encode(stretched)[0] - mu).norm(dim=-1)
    plain_response = (plain.encode(stretched)[0] - plain.encode(positions)[0]).norm(dim=-1)
    assert (response > 5.0 * plain_response).all(), (response, plain_response)


@pytest.mark.slow  # a training run: about 13 CPU-s
def test_training_fits_the_statistics_on_the_training_split_and_the_checkpoint_keeps_them(aib9, tmp_path, tiny_npz):
    flags = tiny_run_flags(tiny_npz, tmp_path, 1, "--run-name", "run", "--encoder-bond-length-features")
    assert run_main(flags) == 0
    path = tmp_path / "run" / "best.pt"
    model = model_from_checkpoint(load_checkpoint(path), path)
    train = training_split(aib9.coords[:48], np.zeros(48, dtype=int), None, 0.1, 0, 0).train
    train = torch.from_numpy(train - train.mean(axis=1, keepdims=True))
    reference = featured_model(aib9)
    reference.encoder.fit_bond_length_statistics(train.double())
    torch.testing.assert_close(model.encoder.bond_length_mean, reference.encoder.bond_length_mean.float())
    torch.testing.assert_close(model.encoder.bond_length_scale, reference.encoder.bond_length_scale.float())
