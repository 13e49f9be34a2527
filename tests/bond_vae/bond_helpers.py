"""Helpers of the bond_vae tests: tiny models, random orthogonal maps, dataset writers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from bond_vae.data.records import ConformationDataset
from bond_vae.model.decoder import DecoderConfig
from bond_vae.model.encoder import EncoderConfig
from bond_vae.model.parity import ParityRule
from bond_vae.model.vae import ModelConfig, MolecularVAE
from bond_vae.training.train import main

TINY_MODEL_FLAGS = [
    "--latent-dim",
    "4",
    "--encoder-hidden-channels",
    "16",
    "--encoder-num-layers",
    "2",
    "--encoder-num-heads",
    "2",
    "--encoder-num-rbf",
    "8",
    "--decoder-hidden-channels",
    "16",
    "--decoder-num-layers",
    "2",
    "--decoder-pair-channels",
    "16",
]


# the session's shared run (conftest.tiny_run): two epochs, a periodic checkpoint every 3 steps
SHARED_RUN_EPOCHS = 2
SHARED_RUN_FLAGS = ("--checkpoint-every", "3", "--run-name", "run")


def tiny_run_flags(data: Path, output_dir: Path, epochs: int = 1, *extra: str) -> list[str]:
    """Flags of a tiny eager fp32 training run on the CPU (batches of 8, W&B off); fp32, so that the
    results do not depend on whether this CPU has native bfloat16 (``--precision auto``)."""
    return [
        "--data",
        str(data),
        "--epochs",
        str(epochs),
        "--batch-size",
        "8",
        "--warmup-steps",
        "2",
        "--wandb",
        "disabled",
        "--output-dir",
        str(output_dir),
        "--device",
        "cpu",
        "--no-compile",
        "--precision",
        "fp32",
        "--test-trajectories",  # nothing held out: the frame counts the tests read are those of all the data
        "0",
        *TINY_MODEL_FLAGS,
        *extra,
    ]


def run_main(argv: list[str]) -> int:
    """Run the training command in this process; return its exit code."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    return exit_info.value.code


def tiny_model_config(graph: str = "bonds+radius", lmax: int = 1) -> ModelConfig:
    return ModelConfig(
        latent_dim=4,
        encoder=EncoderConfig(hidden_channels=16, num_layers=2, num_heads=2, num_rbf=8, lmax=lmax, graph=graph),
        decoder=DecoderConfig(hidden_channels=16, num_layers=2, pair_channels=16),
    )


def aib9_model(aib9: ConformationDataset, config: ModelConfig, parity: ParityRule | None = None) -> MolecularVAE:
    """A model of AIB9 with ``config`` (and ``parity``), initialised with seed 0, starting from the first frame."""
    torch.manual_seed(0)
    return MolecularVAE(
        config,
        torch.from_numpy(aib9.topology.atomic_numbers),
        torch.from_numpy(aib9.topology.bonds),
        torch.from_numpy(aib9.coords[0]),
        parity,
    )


def make_model(
    aib9: ConformationDataset, graph: str = "bonds+radius", lmax: int = 1, parity: ParityRule | None = None
) -> MolecularVAE:
    return aib9_model(aib9, tiny_model_config(graph, lmax), parity)


def with_trained_size_coordinate_updates(model: MolecularVAE, std: float = 0.2) -> MolecularVAE:
    """``model`` with the last layers of its decoder's coordinate updates redrawn at the size that
    training gives them (from torch's global random stream). At initialisation they are near zero,
    so an untrained decoder returns its starting frame whatever z and in any precision: tests of
    what z or bfloat16 do to the decoded atoms need these instead."""
    with torch.no_grad():
        for layer in model.decoder.layers:
            layer.coordinate_mlp[-1].weight.normal_(0.0, std)
        if model.decoder.coarse_displacement is not None:
            model.decoder.coarse_displacement[-1].weight.normal_(0.0, std)
    return model


def replica_frames(aib9: ConformationDataset, replica: int) -> np.ndarray:
    """(800, 58, 3) frames of one replica of the embedded AIB9 data, Angstrom. Replicas k and k + 6 run
    condition k: 0 right-handed helix 300 K, 1 left 300 K, 2 right 400 K, 3 left 400 K, 4 mixed 300 K
    (right-handed N-half, left-handed C-half), 5 extended 500 K."""
    return aib9.coords[aib9.trajectory_labels() == replica]


def write_npz(
    path: Path, dataset: ConformationDataset, coords: np.ndarray | None = None, **overrides: np.ndarray
) -> Path:
    """Write ``dataset`` (optionally with other coords or arrays) in the dataset format."""
    topology = dataset.topology
    arrays = {
        "coords": dataset.coords if coords is None else coords,
        "atomic_numbers": topology.atomic_numbers,
        "atom_names": topology.atom_names,
        "residue_ids": topology.residue_ids,
        "residue_names": topology.residue_names,
        "bonds": topology.bonds,
        "metadata": np.array("{}"),
    }
    arrays.update(overrides)
    np.savez(path, **arrays)
    return path


def random_orthogonal(reflect: bool, generator: torch.Generator) -> torch.Tensor:
    """A random 3x3 rotation (det +1), or rotation-reflection (det -1)."""
    q, r = torch.linalg.qr(torch.randn(3, 3, generator=generator, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r))
    if torch.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    if reflect:
        q = q @ torch.diag(torch.tensor([1.0, 1.0, -1.0], dtype=torch.float64))
    return q
