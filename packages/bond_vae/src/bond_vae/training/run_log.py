"""The record of a training run: its folder, ``config.json``, the metrics history and W&B.

Each run writes its own folder ``<output-dir>/<name>/``; ``metrics.jsonl`` holds one JSON
record per epoch and split. W&B logs offline by default (files under the run folder).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from bond_vae.config import ConfigError, to_dict
from bond_vae.training.config import TrainConfig

WANDB_PROJECT = "bond-vae"


def new_run_folder(parent: Path, name: str | None) -> Path:
    """Create a fresh run folder; never reuse one (a suffix is added if the name is taken).

    ``mkdir`` either creates the folder or fails, so two runs started in the same second
    cannot share one.
    """
    base = name or time.strftime("%Y%m%d-%H%M%S")
    try:
        parent.mkdir(parents=True, exist_ok=True)
        for attempt in range(1000):
            folder = parent / (base if attempt == 0 else f"{base}-{attempt}")
            try:
                folder.mkdir()
                return folder
            except FileExistsError:
                continue
    except OSError as error:
        raise ConfigError(f"{parent}: cannot create the run folder ({error.strerror or error})") from None
    raise ConfigError(f"{parent}: could not create a new run folder named {base}")


def start_wandb(config: TrainConfig, run_dir: Path) -> Any:
    """A W&B run (offline unless asked), or None when disabled."""
    if config.wandb == "disabled":
        return None
    import wandb

    return wandb.init(
        project=WANDB_PROJECT,
        name=run_dir.name,
        id=run_dir.name.replace(".", "-"),
        resume="allow",
        dir=run_dir,
        mode=config.wandb,
        config=to_dict(config),
    )


class RunLog:
    """Rank 0's records of a run in its folder: the metrics history and the W&B run.

    Args:
        folder: the run folder.
        wandb_run: an active W&B run, or None.
    """

    def __init__(self, folder: Path, wandb_run: Any = None) -> None:
        self.folder = folder
        self.wandb_run = wandb_run

    @classmethod
    def start(cls, folder: Path, config: TrainConfig) -> RunLog:
        """Write ``config.json`` into ``folder`` and start W&B (or resume its run)."""
        (folder / "config.json").write_text(json.dumps(to_dict(config), indent=2) + "\n")
        return cls(folder, start_wandb(config, folder))

    @property
    def metrics_path(self) -> Path:
        return self.folder / "metrics.jsonl"

    def append(self, record: dict[str, Any]) -> None:
        """Add one record (a split's metrics of one epoch) to ``metrics.jsonl``."""
        with self.metrics_path.open("a") as stream:
            stream.write(json.dumps(record) + "\n")

    def history(self) -> list[dict[str, Any]]:
        """All records of ``metrics.jsonl``, oldest first."""
        if not self.metrics_path.exists():
            return []
        return [json.loads(line) for line in self.metrics_path.read_text().splitlines() if line.strip()]

    def log(
        self,
        values: dict[str, float],
        step: int,
        images: dict[str, Path] | None = None,
        molecules: dict[str, list[Path]] | None = None,
    ) -> None:
        """Send scalars, PNG images and PDB files (as 3D molecules) to W&B at an optimiser step.

        Nothing happens when W&B is off.
        """
        if self.wandb_run is None:
            return
        logged: dict[str, Any] = dict(values)
        if images or molecules:
            import wandb

            logged.update({name: wandb.Image(str(path)) for name, path in (images or {}).items()})
            logged.update({name: [wandb.Molecule(str(p)) for p in paths] for name, paths in (molecules or {}).items()})
        self.wandb_run.log(logged, step=step)

    def summarize(self, values: dict[str, Any]) -> None:
        """Set values of the W&B run summary (the numbers its run table shows); nothing when W&B is off."""
        if self.wandb_run is not None:
            self.wandb_run.summary.update(values)

    def log_checkpoints(self, paths: list[Path], metadata: dict[str, Any]) -> None:
        """Upload the run's checkpoints as one W&B model artifact (``<project>-<run folder>``, alias 'latest')."""
        if self.wandb_run is None:
            return
        import wandb

        artifact = wandb.Artifact(f"{WANDB_PROJECT}-{self.folder.name}", type="model", metadata=metadata)
        for path in paths:
            if path.is_file():
                artifact.add_file(str(path), name=path.name)
        self.wandb_run.log_artifact(artifact, aliases=["latest"])

    def finish(self, exit_code: int) -> None:
        """Close the W&B run with the process's exit code."""
        if self.wandb_run is not None:
            self.wandb_run.finish(exit_code=exit_code)
