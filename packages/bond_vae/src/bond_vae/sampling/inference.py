"""A trained model at work: load a checkpoint for inference, encode and decode in batches."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from bond_vae.data.dataset import load_dataset
from bond_vae.data.records import ConformationDataset, DataError, Topology
from bond_vae.data.split import RunSplit, training_split
from bond_vae.model.vae import MolecularVAE
from bond_vae.runtime import resolve_device
from bond_vae.training.checkpoint import (
    config_from_checkpoint,
    load_checkpoint,
    model_from_checkpoint,
    topology_from_checkpoint,
)
from bond_vae.training.memory import molecules_at_once


def load_for_inference(
    checkpoint_path: Path, device_name: str
) -> tuple[dict[str, Any], MolecularVAE, Topology, torch.device]:
    """Checkpoint, its model in eval mode on the device, its molecule, and the device."""
    device = resolve_device(device_name)
    checkpoint = load_checkpoint(checkpoint_path)
    model = model_from_checkpoint(checkpoint, checkpoint_path).to(device).eval()
    return checkpoint, model, topology_from_checkpoint(checkpoint), device


def run_split(checkpoint: dict[str, Any], checkpoint_path: Path) -> tuple[ConformationDataset, RunSplit]:
    """The data a checkpoint's run trained on and its split into training, validation and test frames (as the
    trainer split them).

    Raises:
        DataError: the data cannot be read, or its atoms are no longer the checkpoint's molecule.
    """
    run = config_from_checkpoint(checkpoint, checkpoint_path)
    dataset = load_dataset(run.data, run.topology, run.select, run.stride)
    if not np.array_equal(dataset.topology.atomic_numbers, topology_from_checkpoint(checkpoint).atomic_numbers):
        raise DataError(f"{dataset.source}: its atoms differ from the checkpoint's molecule")
    split = training_split(
        dataset.coords,
        dataset.trajectory_labels(),
        run.max_frames,
        run.validation_fraction,
        run.split_seed,
        run.trajectories_held_out(),
    )
    return dataset, split


def batch_that_fits(model: MolecularVAE, batch_size: int, device: torch.device) -> int:
    """``batch_size``, or fewer molecules (at least one) where an encode or decode of ``batch_size`` without
    autograd would not fit in the free memory of ``device`` (:func:`~bond_vae.training.memory.molecules_at_once`).
    """
    return molecules_at_once(model.atomic_numbers.shape[0], model.config, device, batch_size)


@torch.no_grad()
def encode_in_batches(
    model: MolecularVAE, coords: np.ndarray, batch_size: int, device: torch.device, bf16: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Posterior parameters of (F, N, 3) Angstrom frames: means and log-variances, each (F, latent_dim),
    float32 (computed under bfloat16 autocast with ``bf16``), ``batch_size`` frames at a time or as many as fit
    (:func:`batch_that_fits`)."""
    model.eval()
    batch_size = batch_that_fits(model, batch_size, device)
    mus, log_vars = [], []
    starts = range(0, len(coords), batch_size)
    for start in tqdm(starts, desc="encoding", unit="batch", disable=len(starts) == 1):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            mu, log_var = model.encode(torch.from_numpy(coords[start : start + batch_size]).to(device))
        mus.append(mu.float().cpu())
        log_vars.append(log_var.float().cpu())
    return torch.cat(mus).numpy(), torch.cat(log_vars).numpy()


@torch.inference_mode()
def decode_in_batches(
    model: MolecularVAE,
    latents: torch.Tensor,
    batch_size: int,
    compile_decoder: bool,
    bf16: bool,
    stereocentre_layer: bool = True,
) -> np.ndarray:
    """Decode (K, D) latents batch by batch with a progress bar: returns (K, N, 3) Angstrom, float32.

    With ``compile_decoder``, and more than one batch to decode, the decoder runs through
    ``torch.compile`` (about 20 s once on a CPU, then 2-3x faster per batch); the last batch
    is padded to the full batch size so that one compiled graph serves all of them. With
    ``bf16`` the decoder runs under bfloat16 autocast, as ``--precision bf16`` trains it (about
    2x faster where bfloat16 is native; atoms move by about 0.001 A against float32). A batch holds
    ``batch_size`` latents or as many as fit in memory (:func:`batch_that_fits`). ``stereocentre_layer=False``
    decodes without the decoder's stereocentre layer.
    """
    model.eval()
    batch_size = batch_that_fits(model, batch_size, latents.device)
    batches = [latents[start : start + batch_size] for start in range(0, len(latents), batch_size)]
    decode = torch.compile(model.decoder, dynamic=False) if compile_decoder and len(batches) > 1 else model.decoder
    chunks = []
    for batch in tqdm(batches, desc="decoding", unit="batch", disable=len(batches) == 1):
        padding = batch_size - len(batch) if decode is not model.decoder else 0
        padded = torch.cat([batch, batch.new_zeros(padding, batch.shape[1])]) if padding else batch
        with torch.autocast(latents.device.type, dtype=torch.bfloat16, enabled=bf16):
            decoded = decode(padded, stereocentre_layer)
        chunks.append(decoded[: len(batch)].float().cpu())
    return torch.cat(chunks).numpy()
