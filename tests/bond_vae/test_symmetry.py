"""E(3) symmetry: encoder and loss invariant, EGNN layer equivariant, decoding driven by z, signed volumes odd."""

from __future__ import annotations

import pytest
import torch
from bond_helpers import (
    aib9_model,
    make_model,
    random_orthogonal,
    tiny_model_config,
    with_trained_size_coordinate_updates,
)
from bond_vae.bond_graph import torsion_quadruplets
from bond_vae.geometry import normalized_volumes, signed_volumes
from bond_vae.model.decoder import DistanceBasis, EGNNLayer
from bond_vae.model.encoder import EncoderConfig, ViSMPLayer, ViSNetEncoder
from bond_vae.model.graph import edge_index
from bond_vae.model.losses import pair_distance_loss, relative_chirality_loss


@pytest.mark.parametrize(("graph", "lmax"), [("bonds", 2), ("bonds+radius", 2), ("bonds+radius", 3)])
@pytest.mark.parametrize("reflect", [False, True])
def test_encoder_is_invariant_to_rotation_reflection_translation(aib9, positions, graph, lmax, reflect):
    model = make_model(aib9, graph=graph, lmax=lmax).double()
    generator = torch.Generator().manual_seed(1)
    rotation = random_orthogonal(reflect, generator)
    shift = 10.0 * torch.randn(1, 1, 3, generator=generator, dtype=torch.float64)
    mu, log_var = model.encode(positions)
    mu_moved, log_var_moved = model.encode(positions @ rotation.T + shift)
    torch.testing.assert_close(mu_moved, mu, atol=1e-9, rtol=1e-7)
    torch.testing.assert_close(log_var_moved, log_var, atol=1e-9, rtol=1e-7)
    assert not torch.allclose(mu[0], mu[1]), "different conformations should encode differently"


def test_egnn_layer_is_equivariant(aib9):
    torch.manual_seed(0)
    layer = EGNNLayer(hidden_channels=8, pair_channels=4, distance_features=6, coordinate_range=5.0).double()
    basis = DistanceBasis(num_features=6, distance_range=10.0).double()
    for parameter in layer.coordinate_mlp[-1].parameters():
        torch.nn.init.normal_(parameter)  # a realistic, non-negligible coordinate update
    generator = torch.Generator().manual_seed(2)
    n_atoms = 10
    h = torch.randn(3, n_atoms, 8, generator=generator, dtype=torch.float64)
    x = 3.0 * torch.randn(3, n_atoms, 3, generator=generator, dtype=torch.float64)
    pair_attributes = torch.randn(n_atoms, n_atoms, 4, generator=generator, dtype=torch.float64)
    pair_mask = 1.0 - torch.eye(n_atoms, dtype=torch.float64)
    for reflect in (False, True):
        rotation = random_orthogonal(reflect, generator)
        shift = torch.randn(1, 1, 3, generator=generator, dtype=torch.float64)
        h_out, x_out = layer(h, x, pair_attributes, pair_mask, basis)
        h_moved, x_moved = layer(h, x @ rotation.T + shift, pair_attributes, pair_mask, basis)
        torch.testing.assert_close(h_moved, h_out)
        torch.testing.assert_close(x_moved, x_out @ rotation.T + shift)
        assert (x_out - x).abs().max() > 1e-3, "the layer should move atoms"


def test_first_encoder_layer_computes_what_the_general_layer_computes_on_zero_vectors():
    """The first ViS-MP layer leaves out the terms of its (zero) incoming vectors; with the general
    layer's weights for the terms it keeps, it must give the general layer's increments."""
    torch.manual_seed(0)
    hidden, n_nodes, n_edges = 8, 12, 30
    general = ViSMPLayer(hidden, 2, cutoff=5.0, receives_vectors=True, update_edges=True).double()
    first = ViSMPLayer(hidden, 2, cutoff=5.0, receives_vectors=False, update_edges=False).double()
    # the first layer keeps the edge-direction gate (second half of s_proj) and o3 (last third of o_proj)
    kept_rows = {"s_proj": slice(hidden, None), "o_proj": slice(2 * hidden, None)}
    weights = general.state_dict()
    first.load_state_dict(
        {name: weights[name][kept_rows.get(name.split(".")[0], slice(None))] for name in first.state_dict()}
    )
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(n_nodes, hidden, generator=generator, dtype=torch.float64)
    graph = edge_index(torch.randint(0, n_nodes, (2, n_edges), generator=generator), n_nodes)
    distances = 1.0 + 3.0 * torch.rand(n_edges, generator=generator, dtype=torch.float64)
    edge_sh = torch.randn(n_edges, 3, generator=generator, dtype=torch.float64)
    edge_features = torch.randn(n_edges, hidden, generator=generator, dtype=torch.float64)
    zero_vectors = torch.zeros(n_nodes, 3, hidden, dtype=torch.float64)
    dx, dvec, df = general(x, zero_vectors, graph, distances, edge_sh, edge_features)
    first_dx, first_dvec, first_df = first(x, None, graph, distances, edge_sh, edge_features)
    torch.testing.assert_close(first_dx, dx)
    torch.testing.assert_close(first_dvec, dvec)
    assert first_df is None and df.abs().max() == 0, "zero vectors give no edge update"
    assert dvec.abs().max() > 1e-3, "the edge directions alone should start the vector features"
    assert sum(p.numel() for p in first.parameters()) < 0.6 * sum(p.numel() for p in general.parameters())


def test_decoded_structure_depends_on_z(aib9):
    """With coordinate updates of trained size (an untrained decoder returns its starting frame
    whatever z), moving z moves atoms by tenths of an Angstrom; the same z decodes identically."""
    model = with_trained_size_coordinate_updates(make_model(aib9))
    generator = torch.Generator().manual_seed(5)
    z = torch.randn(2, model.latent_dim, generator=generator)
    with torch.no_grad():
        decoded = model.decode(torch.cat([z, z[:1] + 0.5, z[:1]]))
    assert decoded.shape == (4, 58, 3)
    assert torch.equal(decoded[3], decoded[0]), "one latent, one structure"
    moved = (decoded[1:3] - decoded[0]).norm(dim=-1).amax(dim=-1)  # largest atom displacement, Angstrom
    assert (moved > 0.1).all(), f"two latents, two structures; moving z moves the atoms: {moved.tolist()}"


@pytest.mark.parametrize("latent_input", ["atoms", "shared"])
def test_per_atom_latent_input_gives_each_atom_its_own_reading_of_z(aib9, latent_input):
    """The shared map adds the same vector W (z1 - z2) to every atom's features when z moves; the
    per-atom map adds a different one to each atom."""
    config = tiny_model_config()
    config.decoder.latent_input = latent_input
    model = aib9_model(aib9, config)
    first_layer_inputs = []
    model.decoder.layers[0].register_forward_pre_hook(lambda _, args: first_layer_inputs.append(args[0]))
    z = torch.randn(2, model.latent_dim, generator=torch.Generator().manual_seed(3))
    model.decode(z)
    change = first_layer_inputs[0][1] - first_layer_inputs[0][0]  # (N, H): what moving z did to each atom
    spread_over_atoms = (change - change[:1]).abs().max()
    if latent_input == "shared":
        assert spread_over_atoms < 1e-6
    else:
        assert spread_over_atoms > 1e-2


def test_bond_loss_is_invariant(aib9, positions):
    bonds = torch.from_numpy(aib9.topology.bonds)
    generator = torch.Generator().manual_seed(3)
    other = positions.roll(1, dims=0)
    loss = pair_distance_loss(positions, other, bonds)
    for reflect in (False, True):
        rotation = random_orthogonal(reflect, generator)
        moved = positions @ rotation.T + torch.randn(3, generator=generator, dtype=torch.float64)
        torch.testing.assert_close(pair_distance_loss(moved, other, bonds), loss)


def test_relative_chirality_term_is_even_under_reflection_and_matches_the_sum_over_pairs(aib9, positions):
    quadruplets = torsion_quadruplets(torch.from_numpy(aib9.topology.bonds), 58)
    generator = torch.Generator().manual_seed(7)
    other = positions.roll(1, dims=0)  # each frame against another frame
    # hand computation: the mean over molecules and over all Q^2 pairs (a, b) of (s_a s_b - t_a t_b)^2
    s, t = normalized_volumes(other, quadruplets), normalized_volumes(positions, quadruplets)
    by_pairs = (s.unsqueeze(2) * s.unsqueeze(1) - t.unsqueeze(2) * t.unsqueeze(1)).pow(2).mean(dim=(1, 2)).mean()
    loss = relative_chirality_loss(other, positions, quadruplets)
    torch.testing.assert_close(loss, by_pairs)
    assert loss > 1e-3
    for reflect in (False, True):  # rotated or mirrored, translated, rescaled: the same products
        moved = 2.0 * other @ random_orthogonal(reflect, generator).T + 3.0
        torch.testing.assert_close(relative_chirality_loss(moved, positions, quadruplets), loss)
        mirror = positions @ random_orthogonal(reflect, generator).T
        assert relative_chirality_loss(mirror, positions, quadruplets).abs() < 1e-12


def test_normalized_volume_is_sine_of_the_dihedral_times_sines_of_the_bond_angles():
    # bonds of lengths 2, 3, 0.5 at right angles, dihedral 90 degrees: sin * sin * sin = 1; volume 2 * 3 * 0.5
    chain = torch.tensor([[[0.0, 0, 0], [2.0, 0, 0], [2.0, 3.0, 0], [2.0, 3.0, 0.5]]], dtype=torch.float64)
    quadruplets = torch.tensor([[0, 1, 2, 3]])
    assert signed_volumes(chain, quadruplets).item() == 3.0
    assert normalized_volumes(chain, quadruplets).item() == 1.0
    # dihedral 30 degrees, bond angles 90 degrees: sin(30) = 0.5
    tilted = chain.clone()
    tilted[0, 3] = torch.tensor([2.0 + 0.5 * 3**0.5 / 2, 3.0, 0.25], dtype=torch.float64)
    torch.testing.assert_close(
        normalized_volumes(tilted, quadruplets).abs(), torch.tensor([[0.5]], dtype=torch.float64)
    )


def test_signed_volume_matches_hand_computation_and_flips_in_a_mirror():
    chain = torch.tensor([[[0.0, 0, 0], [1.0, 0, 0], [1.0, 1.0, 0], [1.0, 1.0, 1.0]]], dtype=torch.float64)
    quadruplets = torsion_quadruplets(torch.tensor([[0, 1], [1, 2], [2, 3]]), 4)
    assert quadruplets.tolist() == [[0, 1, 2, 3]]
    # (1,0,0) . ((0,1,0) x (0,0,1)) = 1
    assert signed_volumes(chain, quadruplets).item() == 1.0
    assert signed_volumes(chain * torch.tensor([1.0, 1.0, -1.0], dtype=torch.float64), quadruplets).item() == -1.0


@pytest.mark.parametrize("readout", ["atoms", "mean"])
@pytest.mark.parametrize("graph", ["bonds", "bonds+radius"])
def test_atom_readout_tells_which_end_of_a_chain_a_kink_is_at(readout, graph):
    """Reversing a chain of identical atoms maps its graph onto itself, so the mean readout cannot
    tell a kink near one end from the same kink near the other; the per-atom readout must."""
    torch.manual_seed(0)
    n_atoms = 8
    bonds = torch.stack([torch.arange(n_atoms - 1), torch.arange(1, n_atoms)], dim=1)
    config = EncoderConfig(
        hidden_channels=16,
        num_layers=3,
        num_heads=2,
        num_rbf=8,
        graph=graph,
        readout=readout,
        bond_length_features=False,
    )  # bond-length features are listed by bond, which reversing the chain reorders
    encoder = ViSNetEncoder(config, latent_dim=4, bonds=bonds, n_atoms=n_atoms).double()
    numbers = torch.full((n_atoms,), 6)
    index = torch.arange(n_atoms, dtype=torch.float64)
    zigzag = torch.stack([1.3 * index, 0.8 * (-1.0) ** index, torch.zeros(n_atoms, dtype=torch.float64)], dim=1)
    zigzag[1, 2] = 1.0  # out of the plane near the first end
    kinked = zigzag.unsqueeze(0)
    mu, log_var = encoder(numbers, kinked)
    mu_reversed, log_var_reversed = encoder(numbers, kinked.flip(1))
    # the scale of what the (untrained) encoder sees of the kink at all: the kinked chain against the flat one
    flat = zigzag.clone()
    flat[1, 2] = 0.0
    kink_effect = (mu - encoder(numbers, flat.unsqueeze(0))[0]).abs().max()
    assert kink_effect > 1e-9
    if readout == "mean":
        torch.testing.assert_close(mu_reversed, mu)
        torch.testing.assert_close(log_var_reversed, log_var)
    else:  # measured: the reversed chain moves mu more than the kink itself does (1.3 to 1.6 times)
        assert (mu_reversed - mu).abs().max() > 0.5 * kink_effect


@pytest.mark.parametrize("graph", ["bonds", "bonds+radius"])
def test_narrow_vector_channels_keep_the_encoder_invariant(aib9, positions, graph):
    """Fewer vector than scalar channels (--encoder-vector-channels): fewer weights, the same
    symmetry; none (as many as scalar channels) keeps the weights of earlier checkpoints."""
    torch.manual_seed(0)
    numbers, bond_list = torch.from_numpy(aib9.topology.atomic_numbers), torch.from_numpy(aib9.topology.bonds)
    configs = {
        channels: EncoderConfig(
            hidden_channels=16, vector_channels=channels, num_layers=3, num_heads=2, num_rbf=8, lmax=2, graph=graph
        )
        for channels in (None, 16, 4)
    }
    encoders = {
        channels: ViSNetEncoder(config, latent_dim=4, bonds=bond_list, n_atoms=len(numbers)).double()
        for channels, config in configs.items()
    }
    shapes = {channels: {k: v.shape for k, v in e.state_dict().items()} for channels, e in encoders.items()}
    assert shapes[None] == shapes[16]
    layer_weights = {channels: sum(p.numel() for p in e.layers.parameters()) for channels, e in encoders.items()}
    assert layer_weights[4] < 0.7 * layer_weights[16]
    narrow = encoders[4]
    generator = torch.Generator().manual_seed(4)
    for reflect in (False, True):
        rotation = random_orthogonal(reflect, generator)
        shift = 10.0 * torch.randn(1, 1, 3, generator=generator, dtype=torch.float64)
        mu, log_var = narrow(numbers, positions)
        mu_moved, log_var_moved = narrow(numbers, positions @ rotation.T + shift)
        torch.testing.assert_close(mu_moved, mu, atol=1e-9, rtol=1e-7)
        torch.testing.assert_close(log_var_moved, log_var, atol=1e-9, rtol=1e-7)
    assert not torch.allclose(mu[0], mu[1]), "different conformations should encode differently"


def test_chirality_terms_of_a_molecule_without_four_atom_chains_are_zero_not_nan():
    """Bug: three atoms have no chains i-j-k-l, and 0 / 0 made the whole training loss NaN."""
    predicted = torch.randn(2, 3, 3, requires_grad=True)
    loss = relative_chirality_loss(predicted, torch.randn(2, 3, 3), torch.empty(0, 4, dtype=torch.long))
    loss.backward()
    assert loss.item() == 0.0 and torch.isfinite(predicted.grad).all()


def test_a_distance_term_over_no_pairs_is_zero_not_nan():
    predicted = torch.randn(2, 3, 3, requires_grad=True)
    loss = pair_distance_loss(predicted, torch.randn(2, 3, 3), torch.empty(0, 2, dtype=torch.long))
    loss.backward()
    assert loss.item() == 0.0 and torch.isfinite(predicted.grad).all()
