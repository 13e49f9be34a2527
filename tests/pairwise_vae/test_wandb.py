"""W&B as users expect it: figures as images, prior samples as 3D molecules, summary, checkpoint artifacts."""

from __future__ import annotations

from pathlib import Path

import pytest
import wandb
from pairwise_helpers import run_main, tiny_run_flags
from pairwise_vae.training.run_log import RunLog


@pytest.mark.slow  # a training run and W&B's own process: about 14 CPU-s
def test_an_offline_run_holds_the_images_molecules_and_summary(tiny_npz, tmp_path):
    assert run_main(tiny_run_flags(tiny_npz, tmp_path / "runs", 1, "--wandb", "offline", "--run-name", "run")) == 0
    (offline,) = (tmp_path / "runs" / "run" / "wandb").glob("offline-run-*")
    images = {path.name.split("_")[0] for path in offline.rglob("media/images/**/*.png")}
    assert {"loss", "bond", "ramachandran", "free", "structures"} <= images, images
    molecules = list(offline.rglob("media/molecule/**/*.pdb"))
    assert len(molecules) == 4 and all("HETATM" in path.read_text() for path in molecules)
    # an offline run keeps its config and summary in its binary log until 'wandb sync'; W&B's service
    # process writes that log after finish() returns, and teardown waits for it (as exiting the command does)
    wandb.teardown()
    log = next(offline.glob("*.wandb")).read_bytes()
    for key in (b"best/kabsch_rmsd", b"best_validation_loss", b"exit_code", b"log_checkpoints", b"batch_size"):
        assert key in log, key


def test_log_checkpoints_needs_online(tiny_npz, tmp_path, capsys):
    flags = tiny_run_flags(tiny_npz, tmp_path / "runs", 1, "--wandb", "offline", "--log-checkpoints")
    assert run_main(flags) == 1
    assert capsys.readouterr().err.startswith("error: --log-checkpoints uploads to W&B and needs --wandb online")
    assert not (tmp_path / "runs").exists()


class FakeRun:
    """Stands in for an online W&B run: records what is logged."""

    def __init__(self) -> None:
        self.artifacts: list[tuple] = []

    def log_artifact(self, artifact, aliases):
        self.artifacts.append((artifact, aliases))


def test_checkpoints_go_up_as_one_model_artifact(tmp_path: Path):
    for name in ("best.pt", "last.pt"):
        (tmp_path / name).write_bytes(b"weights")
    run = FakeRun()
    RunLog(tmp_path, run).log_checkpoints([tmp_path / "best.pt", tmp_path / "last.pt"], {"epoch": 3})
    ((artifact, aliases),) = run.artifacts
    assert artifact.type == "model" and artifact.name.startswith(f"pairwise-vae-{tmp_path.name}")
    assert sorted(artifact.manifest.entries) == ["best.pt", "last.pt"] and aliases == ["latest"]
    assert artifact.metadata == {"epoch": 3}
