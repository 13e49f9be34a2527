"""The EGNN decoder keeps its features of order one through all layers, in float32 and under bfloat16."""

from __future__ import annotations

import pytest
import torch
from bond_vae.model.decoder import DecoderConfig, EGNNDecoder


def feature_scales(decoder: EGNNDecoder, z: torch.Tensor, bf16: bool) -> tuple[list[float], torch.Tensor]:
    """Root-mean-square of the node features after each layer that updates them, and the decoded coordinates."""
    scales: list[float] = []
    hooks = [
        layer.register_forward_hook(
            lambda module, inputs, output: scales.append(output[0].float().pow(2).mean().sqrt().item())
        )
        for layer in decoder.layers[:-1]
    ]
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        decoded = decoder(z).float()
    for hook in hooks:
        hook.remove()
    return scales, decoded


@pytest.mark.parametrize("bf16", [False, True], ids=["fp32", "bf16"])
def test_node_features_stay_order_one_at_initialisation(aib9, bf16):
    torch.manual_seed(0)
    config = DecoderConfig(num_layers=6)
    frame = torch.from_numpy(aib9.coords[0]).float()
    decoder = EGNNDecoder(
        config, 32, torch.from_numpy(aib9.topology.atomic_numbers), torch.from_numpy(aib9.topology.bonds), frame
    )
    for layer in decoder.layers:  # trained-size coordinate updates, not the near-zero initial ones
        torch.nn.init.normal_(layer.coordinate_mlp[-1].weight, std=0.4)
    z = torch.randn(8, 32)
    scales, decoded = feature_scales(decoder, z, bf16)
    assert len(scales) == config.num_layers - 1
    assert max(scales) < 3.0, f"node-feature RMS per layer {scales}: should stay of order one"
    moved = (decoded - decoder.reference_positions).norm(dim=-1).max()
    assert moved > 1.0, f"the decoder should move the atoms (by {moved:.2f} A), or precision cannot show"
    if bf16:
        _, reference = feature_scales(decoder, z, bf16=False)
        assert (decoded - reference).abs().max() < 0.1, "bfloat16 decoding should agree with float32 to 0.1 A"
