"""The sampler a finished run stores in its checkpoints (:mod:`pairwise_vae.sampling.sampler`).

When a run finishes, ``best.pt`` and ``last.pt`` each get the sampler of their own weights,
fitted to the run's training split: ``last.pt`` holds the final model; ``best.pt`` holds the
weights of the epoch with the lowest validation loss, refitted for them unless they are the
final ones (then the fit is shared). A checkpoint that already holds a sampler keeps it: its
weights have not changed since (a checkpoint is rewritten without one whenever it is saved).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from pairwise_vae.model.vae import MolecularVAEMSE
from pairwise_vae.sampling.sampler import Sampler, fit_sampler
from pairwise_vae.training.checkpoint import load_checkpoint, model_from_checkpoint, sampler_record, store_sampler

FIT_BATCH = 512  # training frames encoded or decoded at once by the fit


def same_weights(state: dict[str, torch.Tensor], model: MolecularVAEMSE) -> bool:
    """Whether a checkpoint's state dict holds exactly ``model``'s weights and buffers."""
    current = model.state_dict()
    return state.keys() == current.keys() and all(torch.equal(state[k], v.cpu()) for k, v in current.items())


def store_fitted_samplers(
    run_dir: Path, model: MolecularVAEMSE, train_frames: np.ndarray, seed: int, compile_decoder: bool, bf16: bool
) -> list[str]:
    """Fit and store the sampler of ``best.pt`` and ``last.pt`` in ``run_dir`` (those that exist and hold none).

    Args:
        run_dir: the run folder.
        model: the final model, on the device the fits run on.
        train_frames: (F, N, 3) training frames, Angstrom.
        seed: seed of the mixture fit (the run's ``--seed``).
        compile_decoder, bf16: decode as :func:`~pairwise_vae.sampling.inference.decode_in_batches` does.

    Returns:
        The names of the checkpoints that got a sampler.
    """
    final: Sampler | None = None
    stored = []
    for name in ("last.pt", "best.pt"):
        path = run_dir / name
        if not path.is_file():
            continue
        payload = load_checkpoint(path)
        if sampler_record(payload) is not None:
            continue
        if same_weights(payload["model"], model):
            final = final or fit_sampler(model, train_frames, FIT_BATCH, compile_decoder, bf16, seed)
            sampler = final
        else:
            device = next(model.parameters()).device
            weights = model_from_checkpoint(payload, path).to(device)
            sampler = fit_sampler(weights, train_frames, FIT_BATCH, compile_decoder, bf16, seed)
        store_sampler(path, sampler.to_record())
        stored.append(name)
    return stored
