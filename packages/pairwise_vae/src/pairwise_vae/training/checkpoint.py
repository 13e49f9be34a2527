"""Checkpoints: their contents, written atomically, read with ``torch.load(weights_only=True)``.

This module alone knows what a checkpoint holds: the training settings (``config``), the
molecule (``topology``, see :meth:`Topology.to_record`), the model weights, the parity rule
decided from the training data (``parity``, see :meth:`ParityRule.to_record`; a checkpoint
without one loads with the rule ``none``), and for a run to resume, the optimiser, scheduler,
:class:`Progress` and random states; a finished run adds its fitted sampler (``sampler``: the
record of :class:`pairwise_vae.sampling.sampler.Sampler`, see :func:`store_sampler`). It holds
only tensors and plain Python types, so loading one cannot run code. It records which package
wrote it and in which format, so a checkpoint of another package, or of a newer format, is
refused with a clear message instead of failing deep in torch.
"""

from __future__ import annotations

import math
import os
import pickle
import random
import tempfile
import warnings
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pairwise_vae import __version__
from pairwise_vae.config import ConfigError, from_dict, to_dict
from pairwise_vae.data.records import Topology
from pairwise_vae.model.parity import ParityRule
from pairwise_vae.model.vae import MolecularVAEMSE
from pairwise_vae.training.config import TrainConfig

CHECKPOINT_FORMAT = "pairwise_vae.checkpoint"
CHECKPOINT_VERSION = 7  # 2: readout and last decoder layer without unused weights (0.2.0); 3: normalised EGNN decoder;
# 4: first encoder layer without weights for its (zero) incoming vector features; 5: encoder readout per atom;
# 6: decoder latent input per atom; 7: the fitted sampler (optional "sampler" key)
# older formats still read, with the settings added since then at the values that give their model
UPGRADES = {5: {"decoder": {"latent_input": "shared"}}, 6: {}}
FORMAT_TAGS = ("format", "format_version", "package_version")  # what save_checkpoint adds to a payload


# state-dict keys renamed since format 2 was introduced: old name -> new name
RENAMED_KEYS = {"decoder.topology": "decoder.hop_counts"}


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message names the file."""


@dataclass
class Progress:
    """Where a training run stands.

    ``epoch``: epochs completed; ``batch_in_epoch``: batches of the current epoch done;
    ``step``: optimiser steps taken (skipped ones included); ``best_validation``: lowest
    validation loss so far (that of best.pt); ``skipped_steps``: steps skipped as non-finite;
    ``schedule``: the fields of the learning-rate and beta ``Schedule`` the run follows (see
    ``training/schedule.py``; None in checkpoints written before it was recorded).
    """

    epoch: int = 0
    batch_in_epoch: int = 0
    step: int = 0
    best_validation: float = math.inf
    skipped_steps: int = 0
    schedule: dict[str, int | float] | None = None


def model_payload(config: TrainConfig, topology: Topology, model: MolecularVAEMSE) -> dict[str, Any]:
    """What inference needs: settings, molecule, weights and parity rule (no optimiser state)."""
    return {
        "config": to_dict(config),
        "topology": topology.to_record(),
        "model": model.state_dict(),
        "parity": model.parity.to_record(),
    }


def training_payload(
    config: TrainConfig,
    topology: Topology,
    model: MolecularVAEMSE,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    progress: Progress,
    device: torch.device,
) -> dict[str, Any]:
    """Everything a run needs to resume where it stands (rank 0's view of a data-parallel run)."""
    return {
        **model_payload(config, topology, model),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        **asdict(progress),
        "rng": rng_state(device),
    }


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` plus format tags to ``path`` atomically (temporary file, then rename).

    Raises:
        CheckpointError: the file could not be written (a full disk, say); an older file at
            ``path`` is left as it was.
    """
    tagged = {
        "format": CHECKPOINT_FORMAT,
        "format_version": CHECKPOINT_VERSION,
        "package_version": __version__,
        **payload,
    }
    temporary = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(handle, "wb") as stream:
            torch.save(tagged, stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except OSError as error:
        raise CheckpointError(
            f"{path}: could not write the checkpoint ({error.strerror or error}); the previous one is intact"
        ) from None
    finally:
        if temporary is not None:
            Path(temporary).unlink(missing_ok=True)


def load_checkpoint(path: Path | str, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read and check a checkpoint of this package.

    Raises:
        CheckpointError: missing, unreadable, foreign or too new.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch warns about unusual pickles before failing on them
            payload = torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(
            f"{path}: not a readable checkpoint (corrupt, truncated or not written by pairwise_vae): {reason[:200]}"
        ) from None
    if not isinstance(payload, dict) or "format" not in payload:
        raise CheckpointError(f"{path}: not a pairwise_vae checkpoint")
    if payload["format"] != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: is a {str(payload['format']).split('.')[0]} checkpoint, not a pairwise_vae one")
    if payload.get("format_version", 0) > CHECKPOINT_VERSION:
        raise CheckpointError(
            f"{path}: written in checkpoint format {payload['format_version']} "
            f"by pairwise_vae {payload.get('package_version')}; "
            f"this pairwise_vae {__version__} reads format {CHECKPOINT_VERSION} at most: upgrade pairwise_vae"
        )
    if payload.get("format_version", 0) in UPGRADES:
        model_settings = payload.get("config", {}).get("model", {})
        for section, settings in UPGRADES[payload["format_version"]].items():
            if isinstance(model_settings.get(section), dict):
                for name, value in settings.items():
                    model_settings[section].setdefault(name, value)
    elif payload.get("format_version", 0) < CHECKPOINT_VERSION:
        raise CheckpointError(
            f"{path}: written in checkpoint format {payload.get('format_version')} "
            f"by pairwise_vae {payload.get('package_version')}, "
            f"whose model layout this pairwise_vae {__version__} does not read: use that version, or train again"
        )
    return payload


def config_from_checkpoint(payload: dict[str, Any], path: Path | str = "checkpoint") -> TrainConfig:
    """The training settings a checkpoint was written with."""
    try:
        return from_dict(TrainConfig, payload["config"])
    except ConfigError as error:
        raise CheckpointError(f"{path}: {error}") from None
    except (KeyError, TypeError) as error:
        raise CheckpointError(f"{path}: checkpoint holds no valid training settings ({error})") from None


def topology_from_checkpoint(payload: dict[str, Any]) -> Topology:
    """The molecule a checkpoint's model was built for."""
    return Topology.from_record(payload["topology"])


def sampler_record(payload: dict[str, Any]) -> dict[str, Any] | None:
    """The fitted sampler a checkpoint holds (the record of ``Sampler.to_record``), or None: written before
    format 7, or by a run that did not finish."""
    return payload.get("sampler")


def store_sampler(path: Path, record: dict[str, Any]) -> None:
    """Add a fitted sampler's record (plain tensors and types) to the checkpoint at ``path``, rewritten
    atomically in the current format.

    Raises:
        CheckpointError: the checkpoint cannot be read or written.
    """
    payload = load_checkpoint(path)
    save_checkpoint(path, {**{k: v for k, v in payload.items() if k not in FORMAT_TAGS}, "sampler": record})


def progress_from_checkpoint(payload: dict[str, Any]) -> Progress:
    """Where the checkpoint's run stood when it was written."""
    return Progress(**{name: payload.get(name, default) for name, default in asdict(Progress()).items()})


def restore_optimisation(
    payload: dict[str, Any], optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.LRScheduler
) -> None:
    """Load the optimiser and learning-rate scheduler states of a training checkpoint."""
    optimizer.load_state_dict(payload["optimizer"])
    scheduler.load_state_dict(payload["scheduler"])


def model_from_checkpoint(payload: dict[str, Any], path: Path | str = "checkpoint") -> MolecularVAEMSE:
    """Rebuild the model recorded in a loaded checkpoint, weights included."""
    model_config = config_from_checkpoint(payload, path).model
    try:
        topology = payload["topology"]
        n_atoms = topology["atomic_numbers"].shape[0]
        parity = ParityRule.from_record(payload.get("parity"))
        model = MolecularVAEMSE(
            model_config, topology["atomic_numbers"], topology["bonds"], torch.zeros(n_atoms, 3), parity
        )
        model.load_state_dict({RENAMED_KEYS.get(key, key): value for key, value in payload["model"].items()})
    except (KeyError, TypeError, ValueError, RuntimeError) as error:
        raise CheckpointError(
            f"{path}: checkpoint does not describe a valid model ({str(error).splitlines()[0][:200]})"
        ) from None
    return model


def rng_state(device: torch.device) -> dict[str, Any]:
    """States of the Python, NumPy and torch random generators (CPU, and ``device`` if a GPU), as plain types."""
    numpy_state = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": (numpy_state[0], torch.from_numpy(numpy_state[1].copy()), *numpy_state[2:]),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
    }


def restore_rng_state(state: dict[str, Any], device: torch.device) -> None:
    """Inverse of :func:`rng_state`; the CUDA state is restored when the run is on a GPU again."""
    random.setstate(state["python"])
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, keys.numpy(), *rest))
    torch.set_rng_state(state["torch"])
    if state["cuda"] is not None and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)
