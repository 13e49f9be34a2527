"""Fixtures of the bond_vae tests: the embedded AIB9 data, tiny datasets, an untrained checkpoint and a tiny run."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from bond_helpers import (
    SHARED_RUN_EPOCHS,
    SHARED_RUN_FLAGS,
    make_model,
    run_main,
    tiny_model_config,
    tiny_run_flags,
    write_npz,
)
from bond_vae.data.dataset import DEFAULT_DATASET, load_dataset
from bond_vae.data.records import ConformationDataset
from bond_vae.training import train as train_command
from bond_vae.training import validation
from bond_vae.training.checkpoint import model_payload, save_checkpoint
from bond_vae.training.config import TrainConfig


@pytest.fixture(scope="session", autouse=True)
def small_training_reports():
    """Training runs in these processes end with a report of 100 samples instead of 1,000, and their validation
    passes draw 128 samples instead of 512: the tests read what the report and the metrics hold, their sizes cost
    only time (more than half of a tiny run's)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(train_command, "TRAINING_REPORT_SAMPLES", 100)
        patch.setattr(validation, "EVALUATION_SAMPLES", 128)
        yield


@pytest.fixture(scope="session")
def aib9() -> ConformationDataset:
    return load_dataset(DEFAULT_DATASET)


@pytest.fixture()
def positions(aib9: ConformationDataset) -> torch.Tensor:
    """(6, 58, 3) AIB9 frames, float64 so that symmetry checks are tight."""
    return torch.from_numpy(aib9.coords[::7][:6]).double()


@pytest.fixture()
def tiny_npz(tmp_path: Path, aib9: ConformationDataset) -> Path:
    """48 AIB9 frames as an .npz file."""
    return write_npz(tmp_path / "tiny.npz", aib9, aib9.coords[:48])


@pytest.fixture()
def tiny_checkpoint(aib9: ConformationDataset, tmp_path: Path, tiny_npz: Path) -> Path:
    """An untrained model's checkpoint whose run trained on 36 of the 48 frames of ``tiny_npz`` (and held none
    out for a test set: evaluate scores half of the 12 validation frames)."""
    config = TrainConfig(data=[tiny_npz], model=tiny_model_config(), validation_fraction=0.25, test_trajectories=0)
    path = tmp_path / "tiny.pt"
    save_checkpoint(path, model_payload(config, aib9.topology, make_model(aib9)))
    return path


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory, aib9: ConformationDataset) -> Path:
    """The folder of one finished tiny training run (eager, CPU; ``tiny_run_flags`` with
    ``SHARED_RUN_EPOCHS`` epochs and ``SHARED_RUN_FLAGS``) on the 48 frames of ``tiny_npz``,
    shared by the tests that read it. Tests that resume it work on a copy."""
    folder = tmp_path_factory.mktemp("shared_run")
    data = write_npz(folder / "tiny.npz", aib9, aib9.coords[:48])
    assert run_main(tiny_run_flags(data, folder / "runs", SHARED_RUN_EPOCHS, *SHARED_RUN_FLAGS)) == 0
    return folder / "runs" / "run"
