"""Train the bond-length VAE: ``bond-vae-train`` (or ``python -m bond_vae``).

Each run writes its own folder ``<output-dir>/<timestamp>/`` holding ``config.json``,
``metrics.jsonl`` (one JSON record per epoch and split), ``last.pt`` and ``best.pt``
checkpoints (written atomically) and PNG plots. W&B logs offline by default (project
``bond-vae``, files under the run folder); ``--wandb online`` streams to your account.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from bond_vae import __version__
from bond_vae.checkpoint import (
    CheckpointError,
    load_checkpoint,
    model_from_checkpoint,
    restore_rng_state,
    rng_state,
    save_checkpoint,
)
from bond_vae.cli import exit_on_user_error
from bond_vae.config import (
    ConfigError,
    add_dataclass_arguments,
    dataclass_from_namespace,
    explicit_flags,
    from_dict,
    to_dict,
)
from bond_vae.data import (
    ConformationDataset,
    load_dataset,
    split_frames,
    subsample,
)
from bond_vae.distributed import (
    Ranks,
    any_rank,
    broadcast_from_main,
    check_device_count,
    device_for_rank,
    init_process_group,
    launch_local_ranks,
    leave_process_group,
    mean_over_ranks,
    ranks_from_environment,
    wait_for_all,
)
from bond_vae.evaluate import compare_ensembles, write_figures
from bond_vae.model import ModelConfig, MolecularVAE
from bond_vae.plots import plot_bond_lengths, plot_loss_curves
from bond_vae.utils import (
    bond_length_statistics,
    bond_lengths,
    kabsch_rmsd,
    pairwise_distances,
    seed_everything,
)

WANDB_PROJECT = "bond-vae"
WANDB_MODES = ("offline", "online", "disabled")
RESUME_OVERRIDABLE = ("epochs", "device", "wandb", "checkpoint_every", "evaluate_every", "compile", "precision")
PRECISIONS = ("auto", "bf16", "fp32")
EVALUATION_SAMPLES = 512
# the host reads step metrics (progress bar, W&B, non-finite steps, stop requests of a
# data-parallel run) every this many steps; in between it never waits for the device
SYNC_INTERVAL = 10
STEP_METRICS = ("loss", "reconstruction", "kl", "chirality", "grad_norm")


@dataclass
class TrainConfig:
    """Training run"""

    data: Path | None = field(
        default=None,
        metadata={
            "help": "dataset .npz, or .npy coordinates with --topology; none: the embedded AIB9 ensemble",
            "metavar": "FILE",
        },
    )
    topology: Path | None = field(
        default=None,
        metadata={
            "help": "topology of .npy coordinates: a PDB file or an atom-table .npy of [atom_name, residue_index] rows",
            "metavar": "FILE",
        },
    )
    output_dir: Path = field(
        default=Path("runs/bond_vae"), metadata={"help": "parent folder of the run folders", "metavar": "DIR"}
    )
    run_name: str | None = field(default=None, metadata={"help": "run folder name; none: the start time"})
    epochs: int = field(default=50, metadata={"help": "passes over the training split"})
    batch_size: int = field(
        default=64,
        metadata={"help": "molecules per optimiser step and device (with --devices N a step sees N times as many)"},
    )
    learning_rate: float = field(default=5e-4, metadata={"help": "peak AdamW learning rate"})
    weight_decay: float = field(default=1e-4, metadata={"help": "AdamW weight decay"})
    warmup_steps: int = field(default=300, metadata={"help": "linear learning-rate warm-up steps, then cosine decay"})
    grad_clip: float = field(default=1.0, metadata={"help": "gradient-norm clipping threshold"})
    beta: float = field(default=1e-3, metadata={"help": "weight of the KL term"})
    beta_warmup_epochs: float = field(default=5.0, metadata={"help": "epochs over which beta rises linearly from 0"})
    validation_fraction: float = field(
        default=0.1, metadata={"help": "fraction of frames held out, in contiguous blocks"}
    )
    max_frames: int | None = field(
        default=None, metadata={"help": "use only N frames, evenly spaced over the data (quick runs)"}
    )
    seed: int = field(default=0, metadata={"help": "seed of the split, initialisation, data order and noise"})
    device: str = field(default="auto", metadata={"help": "auto, cpu, cuda or cuda:N"})
    devices: int = field(
        default=1,
        metadata={
            "help": "data-parallel processes (DDP), started on this machine: one per GPU, or gloo processes on the CPU"
        },
    )
    precision: str = field(
        default="auto",
        metadata={
            "help": "bf16: bfloat16 autocast of the model (weights, losses and sums stay float32); fp32; auto: bf16 on CUDA, fp32 on the CPU (bf16 pays on CPUs with AVX-512 BF16 or AMX)",
            "choices": PRECISIONS,
        },
    )
    compile: bool = field(
        default=True,
        metadata={
            "help": "torch.compile the model for training (a minute of compiling first; off without a C compiler)"
        },
    )
    wandb: str = field(default="offline", metadata={"help": "Weights & Biases mode", "choices": WANDB_MODES})
    checkpoint_every: int = field(default=500, metadata={"help": "also save last.pt every N optimiser steps"})
    evaluate_every: int = field(
        default=5,
        metadata={"help": "every N epochs (and at the end): structural metrics of the validation split and plots"},
    )
    max_bad_steps: int = field(
        default=20,
        metadata={"help": f"stop after this many consecutive non-finite steps (checked every {SYNC_INTERVAL} steps)"},
    )
    resume: Path | None = field(
        default=None,
        metadata={"help": "continue the run of this checkpoint (its folder and settings)", "metavar": "CKPT"},
    )
    model: ModelConfig = field(default_factory=ModelConfig)

    def validate(self) -> None:
        """Raise :class:`ConfigError` for values no run can use."""
        positive = ("epochs", "batch_size", "devices", "checkpoint_every", "evaluate_every", "max_bad_steps")
        for name in positive:
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if not 0.0 <= self.validation_fraction < 1.0:
            raise ConfigError(f"--validation-fraction must be in [0, 1), got {self.validation_fraction}")
        if self.learning_rate <= 0 or self.beta < 0 or self.grad_clip <= 0:
            raise ConfigError("--learning-rate and --grad-clip must be positive and --beta non-negative")
        if self.model.decoder.pair_channels is not None and self.model.decoder.pair_channels < 1:
            raise ConfigError(f"--decoder-pair-channels must be at least 1, got {self.model.decoder.pair_channels}")
        if self.max_frames is not None and self.max_frames < 2:
            raise ConfigError(f"--max-frames must be at least 2, got {self.max_frames}")
        if self.model.latent_dim < 1 or self.model.encoder.hidden_channels % self.model.encoder.num_heads:
            raise ConfigError(
                "--latent-dim must be positive and --encoder-hidden-channels divisible by --encoder-num-heads"
            )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bond-vae-train",
        description="Train a ViSNet -> EGNN variational autoencoder of molecular conformations with a\n"
        "covalent-bond-length reconstruction loss.\n\n" + __doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"bond_vae {__version__}")
    add_dataclass_arguments(parser, TrainConfig)
    return parser


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


def reference_conformation(coords: torch.Tensor) -> torch.Tensor:
    """The frame whose interatomic distances are closest to the mean distances: (F, N, 3) -> (N, 3)."""
    sample = coords[:: max(1, len(coords) // 2000)]
    distances = torch.cdist(sample, sample)
    deviation = (distances - distances.mean(dim=0)).pow(2).mean(dim=(1, 2))
    return sample[deviation.argmin()].clone()


def rank_slice(order: torch.Tensor, batch_in_epoch: int, batch_size: int, ranks: Ranks) -> torch.Tensor:
    """This rank's part of a global batch: (batch_size,) entries of the epoch order.

    Global batch b takes ``world_size * batch_size`` consecutive entries of the order and rank r
    the r-th slice of them, so no two ranks see the same frame in an epoch.
    """
    start = (batch_in_epoch * ranks.world_size + ranks.rank) * batch_size
    return order[start : start + batch_size]


class StopRequested:
    """Turns SIGINT/SIGTERM into a flag the training loop checks after each step.

    A second signal interrupts at once, unless ``patient``: the ranks of a data-parallel run
    get each signal twice (from the terminal and from their launcher) and must reach the step at
    which they agree to stop.
    """

    def __init__(self, patient: bool = False) -> None:
        self.signal_name: str | None = None
        self.patient = patient
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopRequested:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc_info: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum: int, frame: object) -> None:
        if self.signal_name is not None and not self.patient:
            raise KeyboardInterrupt
        self.signal_name = signal.Signals(signum).name

    def __bool__(self) -> bool:
        return self.signal_name is not None


class Trainer:
    """Owns the model, optimiser, data and run folder of one training run."""

    def __init__(
        self, config: TrainConfig, dataset: ConformationDataset, checkpoint: dict | None, ranks: Ranks = Ranks()
    ) -> None:
        self.config = config
        self.ranks = ranks
        self.run_dir: Path | None = None
        self.wandb_run: Any = None
        self.device = device_for_rank(config.device, ranks)
        self.amp = config.precision == "bf16" or (config.precision == "auto" and self.device.type == "cuda")
        topology = dataset.topology
        coords = torch.from_numpy(subsample(dataset.coords, config.max_frames))
        coords = coords - coords.mean(dim=1, keepdim=True)
        train_index, validation_index = split_frames(len(coords), config.validation_fraction, config.seed)
        if len(train_index) < config.batch_size * ranks.world_size:
            raise ConfigError(
                f"{dataset.source}: the training split has {len(train_index)} frames, fewer than --batch-size {config.batch_size}"
                + (f" x {ranks.world_size} processes" if ranks.distributed else "")
            )
        self.train_coords = coords[train_index].to(self.device)
        self.validation_coords = coords[validation_index].to(self.device)
        self.topology = topology
        self.bonds = torch.from_numpy(topology.bonds).to(self.device)
        self.steps_per_epoch = len(train_index) // (config.batch_size * ranks.world_size)
        self.total_steps = self.steps_per_epoch * config.epochs

        if checkpoint is None:
            seed_everything(config.seed)
            self.model = MolecularVAE(
                config.model,
                torch.from_numpy(topology.atomic_numbers),
                torch.from_numpy(topology.bonds),
                reference_conformation(coords[train_index]),
            )
        else:
            self.model = model_from_checkpoint(checkpoint, config.resume)
        self.model.to(self.device)
        if ranks.distributed:
            # same initial weights on all ranks, then a noise stream of its own per rank, reseeded
            # from the step on resume (a single process restores its saved random state instead)
            start_step = checkpoint["step"] if checkpoint is not None else 0
            seed_everything(config.seed + 1_000_003 * (ranks.rank + 1) + start_step)
        self.network = self._training_network()
        # fused AdamW skips a step on the device when told of a non-finite gradient (found_inf)
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay, fused=True
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self._learning_rate_factor)
        self.topology_record = {
            "atomic_numbers": torch.from_numpy(topology.atomic_numbers),
            "bonds": torch.from_numpy(topology.bonds),
            "atom_names": topology.atom_names.tolist(),
            "residue_ids": topology.residue_ids.tolist(),
            "residue_names": topology.residue_names.tolist(),
        }
        self.epoch, self.batch_in_epoch, self.step = 0, 0, 0
        self.best_validation = math.inf
        self.consecutive_bad_steps = torch.zeros((), device=self.device)
        self.skipped_steps = torch.zeros((), device=self.device)
        if checkpoint is not None:
            self._restore(checkpoint)

    def _training_network(self) -> torch.nn.Module:
        """The model as the training step runs it: data-parallel across ranks, compiled if asked."""
        network: torch.nn.Module = self.model
        if self.ranks.distributed:
            device_ids = [self.device] if self.device.type == "cuda" else None
            network = torch.nn.parallel.DistributedDataParallel(network, device_ids=device_ids)
        if self.config.compile:
            if shutil.which("cc") or shutil.which("gcc") or shutil.which("clang"):
                return torch.compile(network)
            if self.ranks.is_main:
                print(
                    "warning: no C compiler on PATH, so torch.compile is off (--no-compile hides this)", file=sys.stderr
                )
        return network

    def _learning_rate_factor(self, step: int) -> float:
        if step < self.config.warmup_steps:
            return (step + 1) / self.config.warmup_steps
        progress = (step - self.config.warmup_steps) / max(1, self.total_steps - self.config.warmup_steps)
        return 0.05 + 0.95 * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    def beta_at(self, step: int) -> float:
        """KL weight at an optimiser step: linear warm-up from 0 to ``beta``."""
        warmup = self.config.beta_warmup_epochs * self.steps_per_epoch
        return self.config.beta * (1.0 if warmup <= 0 else min(1.0, step / warmup))

    def _restore(self, checkpoint: dict) -> None:
        stored = checkpoint["topology"]
        if not (
            torch.equal(stored["atomic_numbers"], self.topology_record["atomic_numbers"])
            and torch.equal(stored["bonds"], self.topology_record["bonds"])
        ):
            raise CheckpointError(
                f"{self.config.resume}: the checkpoint's molecule (atoms or bonds) differs from the data's"
            )
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.scheduler.load_state_dict(checkpoint["scheduler"])
        if checkpoint["config"].get("devices", 1) != self.ranks.world_size:
            raise CheckpointError(
                f"{self.config.resume}: the run was trained with {checkpoint['config'].get('devices', 1)} processes, "
                f"not {self.ranks.world_size}: resume it with as many (--devices)"
            )
        self.epoch, self.batch_in_epoch, self.step = (
            checkpoint["epoch"],
            checkpoint["batch_in_epoch"],
            checkpoint["step"],
        )
        self.best_validation = checkpoint["best_validation"]
        self.skipped_steps.fill_(checkpoint["skipped_steps"])
        if not self.ranks.distributed:
            restore_rng_state(checkpoint["rng"], self.device)

    def save(self, name: str) -> Path:
        """Write ``name`` (e.g. last.pt) in the run folder with everything needed to resume (rank 0 only)."""
        path = self.run_dir / name
        if not self.ranks.is_main:
            return path
        save_checkpoint(
            path,
            {
                "config": to_dict(self.config),
                "topology": self.topology_record,
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "epoch": self.epoch,
                "batch_in_epoch": self.batch_in_epoch,
                "step": self.step,
                "best_validation": self.best_validation,
                "skipped_steps": int(self.skipped_steps.item()),
                "rng": rng_state(self.device),
            },
        )
        return path

    def epoch_order(self, epoch: int) -> torch.Tensor:
        """Order of training frames in an epoch, a function of (seed, epoch) so resume can replay it."""
        generator = torch.Generator().manual_seed(self.config.seed * 1_000_003 + epoch)
        return torch.randperm(len(self.train_coords), generator=generator).to(self.device)

    def train_step(self, batch: torch.Tensor) -> torch.Tensor:
        """One optimiser step, queued without waiting for the device.

        A non-finite loss or gradient (on any rank) leaves the weights and optimiser state as
        they were: the fused optimiser skips its update on the device.

        Returns:
            (len(STEP_METRICS) + 1,) tensor: the metrics, then 1.0 if the step was applied, 0.0 if skipped.
        """
        self.network.train()
        beta = self.beta_at(self.step)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            outputs = self.network(batch)
        terms = self.model.criterion(batch, *outputs, beta=beta)
        self.optimizer.zero_grad(set_to_none=True)
        terms.total.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
        non_finite = any_rank((~(torch.isfinite(terms.total) & torch.isfinite(grad_norm))).float(), self.ranks)
        self.optimizer.found_inf = non_finite  # read by the fused AdamW step (as torch.amp.GradScaler does)
        self.optimizer.step()
        del self.optimizer.found_inf
        self.scheduler.step()
        metrics = (
            torch.stack([terms.total, terms.reconstruction, terms.kl, terms.chirality, grad_norm]).detach().float()
        )
        return torch.cat([metrics, 1.0 - non_finite.view(1)])

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """Loss terms at full beta, reconstruction and sample quality on the validation split."""
        self.model.eval()
        coords = self.validation_coords
        totals = {"loss": 0.0, "reconstruction": 0.0, "kl": 0.0}
        rmsd, reconstructions = [], []
        for start in range(0, len(coords), 256):
            batch = coords[start : start + 256]
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
                terms = self.model.loss(batch, self.config.beta)
                reconstruction = self.model.reconstruct(batch).float()
            for key, value in (("loss", terms.total), ("reconstruction", terms.reconstruction), ("kl", terms.kl)):
                totals[key] += value.item() * len(batch)
            rmsd.append(kabsch_rmsd(reconstruction, batch))
            reconstructions.append(reconstruction)
        reconstructed = torch.cat(reconstructions)
        generator = torch.Generator(device=self.device).manual_seed(self.config.seed)
        samples = self.model.sample(EVALUATION_SAMPLES, generator=generator).float()
        sample_lengths = bond_lengths(samples, self.bonds)
        reference_mean = bond_lengths(coords, self.bonds).mean(dim=0)
        metrics = {key: value / len(coords) for key, value in totals.items()}
        metrics.update(bond_length_statistics(reconstructed, coords, self.bonds))
        metrics["kabsch_rmsd"] = torch.cat(rmsd).mean().item()
        metrics["distance_mae"] = (pairwise_distances(reconstructed) - pairwise_distances(coords)).abs().mean().item()
        metrics["sample_bond_mae"] = (sample_lengths - reference_mean).abs().mean().item()
        self.validation_ensembles = (
            coords.double().cpu().numpy(),
            reconstructed.double().cpu().numpy(),
            samples.double().cpu().numpy(),
        )
        return metrics

    def structural_metrics(self) -> dict[str, float]:
        """Headline structural metrics of the last validation pass (see ``evaluate``)."""
        report = compare_ensembles(*self.validation_ensembles, self.topology)
        samples = report["samples"]
        metrics = {
            "kabsch_rmsd_reflection_allowed": report["reconstruction"]["kabsch_rmsd_reflection_allowed"],
            "mirror_gap": report["reconstruction"]["mirror_gap"],
            "sample_bonds_within_0.1": samples["bonds_within_0.1_of_reference_mean"],
            "sample_clash_fraction": samples["clash_fraction"]["samples"],
            "sample_radius_of_gyration": samples["radius_of_gyration"]["sample_mean"],
        }
        if "handedness" in report:
            metrics["sample_ramachandran_js"] = samples["ramachandran_js_distance"]["mean"]
            metrics.update({f"sample_{name}_handed": value for name, value in report["handedness"]["samples"].items()})
        return metrics

    def write_plots(self) -> dict[str, Path]:
        """Loss curves, bond-length histograms and the evaluation figures, in the run folder."""
        reference, reconstructed, samples = self.validation_ensembles
        images = {
            "loss_curves": plot_loss_curves(read_history(self.metrics_path), self.run_dir / "loss_curves.png"),
            "bond_lengths": plot_bond_lengths(
                bond_lengths(torch.from_numpy(reference), self.bonds.cpu()).numpy(),
                bond_lengths(torch.from_numpy(reconstructed), self.bonds.cpu()).numpy(),
                bond_lengths(torch.from_numpy(samples), self.bonds.cpu()).numpy(),
                self.run_dir / "bond_lengths.png",
            ),
        }
        folder = self.run_dir / "evaluation"
        folder.mkdir(exist_ok=True)
        images.update(
            {path.stem: path for path in write_figures(reference, reconstructed, samples, self.topology, folder)}
        )
        return {f"plots/{name}": path for name, path in images.items()}

    def attach(self, run_dir: Path) -> None:
        """Use ``run_dir`` for outputs: write the config and start W&B (rank 0)."""
        self.run_dir = run_dir
        if not self.ranks.is_main:
            return
        (run_dir / "config.json").write_text(json.dumps(to_dict(self.config), indent=2) + "\n")
        self.wandb_run = start_wandb(self.config, run_dir)

    @property
    def metrics_path(self) -> Path:
        return self.run_dir / "metrics.jsonl"

    def fit(self, stop: StopRequested) -> int:
        """Train until the last epoch or a stop request; returns the exit code."""
        progress = tqdm(
            total=self.total_steps,
            initial=self.step,
            unit="step",
            dynamic_ncols=True,
            desc="training",
            disable=not self.ranks.is_main,
        )
        exit_code, stopped = 0, False
        while self.epoch < self.config.epochs and not stopped and exit_code == 0:
            exit_code, stopped = self.run_epoch(progress, stop)
        progress.close()
        if stopped:
            path = self.save("last.pt")
            if self.ranks.is_main:
                print(
                    f"stopped by {stop.signal_name or 'a signal to another rank'} at epoch {self.epoch + 1}, step {self.step}; "
                    f"saved {path}. Resume with: bond-vae-train --resume {path}",
                    file=sys.stderr,
                )
            exit_code = 143 if stop.signal_name == "SIGTERM" else 130
        if self.wandb_run is not None:
            self.wandb_run.finish(exit_code=exit_code)
        return exit_code

    def stop_agreed(self, stop: StopRequested, synchronising: bool) -> bool:
        """Whether to stop after this step: at once alone, at the next synchronisation when data-parallel."""
        if not self.ranks.distributed:
            return bool(stop)
        if not synchronising:
            return False
        return bool(any_rank(torch.tensor(float(bool(stop)), device=self.device), self.ranks).item())

    def run_epoch(self, progress: tqdm, stop: StopRequested) -> tuple[int, bool]:
        """Train through the rest of the current epoch, then validate.

        Returns:
            The exit code (0, or 3 after too many non-finite steps) and whether a stop was requested.
        """
        config = self.config
        order = self.epoch_order(self.epoch)
        sums = torch.zeros(
            len(STEP_METRICS) + 1, device=self.device
        )  # metric sums over applied steps, then their count
        epoch_start = time.perf_counter()
        steps_done = 0
        while self.batch_in_epoch < self.steps_per_epoch:
            step_metrics = self.train_step(
                self.train_coords[rank_slice(order, self.batch_in_epoch, config.batch_size, self.ranks)]
            )
            applied = step_metrics[-1]
            sums += torch.where(applied > 0, step_metrics, torch.zeros_like(step_metrics))
            self.consecutive_bad_steps = (self.consecutive_bad_steps + 1.0) * (1.0 - applied)
            self.skipped_steps += 1.0 - applied
            self.batch_in_epoch += 1
            self.step += 1
            steps_done += 1
            progress.update(1)
            synchronising = self.step % SYNC_INTERVAL == 0 or self.batch_in_epoch == self.steps_per_epoch
            if synchronising and self.report_steps(step_metrics, progress):
                return 3, False
            if self.step % config.checkpoint_every == 0:
                self.save("last.pt")
            if self.stop_agreed(stop, synchronising):
                return 0, True
        self.epoch += 1
        self.batch_in_epoch = 0
        *metric_sums, applied_steps = mean_over_ranks(sums, self.ranks).tolist()
        train_record: dict[str, Any] = {}
        if applied_steps > 0:
            train_record = {key: value / applied_steps for key, value in zip(STEP_METRICS, metric_sums)}
        train_record.update(
            split="train",
            epoch=self.epoch,
            step=self.step,
            skipped_steps=int(self.skipped_steps.item()),
            molecules_per_s=steps_done
            * config.batch_size
            * self.ranks.world_size
            / (time.perf_counter() - epoch_start),
        )
        if self.ranks.is_main:
            self.end_epoch(train_record, progress)
        return 0, False

    def report_steps(self, step_metrics: torch.Tensor, progress: tqdm) -> bool:
        """Read the latest step on the host: progress bar, W&B, and the non-finite-step limit.

        Returns:
            True when the run must stop because too many consecutive steps were non-finite.
        """
        *values, applied = step_metrics.tolist()
        bad_steps = int(self.consecutive_bad_steps.item())
        if bad_steps >= self.config.max_bad_steps:
            path = self.save("last.pt")  # skipped steps never touched the weights: this state is good
            if self.ranks.is_main:
                progress.write(
                    f"error: {bad_steps} consecutive steps gave a non-finite loss or gradient; stopped. "
                    f"Last good state saved in {path} (try a lower --learning-rate)",
                    file=sys.stderr,
                )
            return True
        if applied:
            metrics = dict(zip(STEP_METRICS, values)) | {"beta": self.beta_at(self.step - 1)}
            progress.set_postfix(loss=f"{metrics['loss']:.4g}", epoch=self.epoch + 1)
            if self.wandb_run is not None:
                self.wandb_run.log(
                    {f"train/{k}": v for k, v in metrics.items()} | {"lr": self.scheduler.get_last_lr()[0]},
                    step=self.step,
                )
        return False

    def end_epoch(self, train_record: dict[str, float], progress: tqdm) -> None:
        """Validate, record metrics, save checkpoints and plots."""
        validation_record = {"split": "validation", "epoch": self.epoch, "step": self.step, **self.validate()}
        if self.epoch % self.config.evaluate_every == 0 or self.epoch == self.config.epochs:
            validation_record.update(self.structural_metrics())
        append_record(self.metrics_path, train_record)
        append_record(self.metrics_path, validation_record)
        if validation_record["loss"] < self.best_validation:
            self.best_validation = validation_record["loss"]
            self.save("best.pt")
        self.save("last.pt")
        progress.write(
            f"epoch {self.epoch}/{self.config.epochs}: train loss {train_record.get('loss', float('nan')):.4g}, "
            f"validation loss {validation_record['loss']:.4g}, bond MAE {validation_record['bond_mae']:.4f} A, "
            f"Kabsch RMSD {validation_record['kabsch_rmsd']:.2f} A, {train_record['molecules_per_s']:.0f} molecules/s"
        )
        images = {}
        if self.epoch % self.config.evaluate_every == 0 or self.epoch == self.config.epochs:
            images = self.write_plots()
        if self.wandb_run is not None:
            import wandb

            log = {f"validation/{k}": v for k, v in validation_record.items() if k != "split"}
            log.update({name: wandb.Image(str(path)) for name, path in images.items()})
            self.wandb_run.log(log, step=self.step)


def read_history(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def append_record(path: Path, record: dict) -> None:
    with path.open("a") as stream:
        stream.write(json.dumps(record) + "\n")


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


def train(config: TrainConfig, checkpoint: dict | None = None, ranks: Ranks = Ranks()) -> int:
    """Run (or continue) training as one rank of ``ranks``; returns the process exit code."""
    if ranks.distributed:
        init_process_group(ranks, device_for_rank(config.device, ranks))
    dataset = load_dataset(config.data, config.topology)
    trainer = Trainer(config, dataset, checkpoint, ranks)
    run_dir = None
    if ranks.is_main:
        run_dir = config.resume.parent if checkpoint is not None else new_run_folder(config.output_dir, config.run_name)
    run_dir = broadcast_from_main(run_dir, ranks)
    trainer.attach(run_dir)
    device_name = torch.cuda.get_device_name(trainer.device) if trainer.device.type == "cuda" else "CPU"
    if ranks.is_main:
        print(
            f"bond_vae {__version__}: {len(trainer.train_coords)} training / {len(trainer.validation_coords)} validation frames "
            f"of {dataset.topology.n_atoms} atoms from {dataset.source}; "
            f"{sum(p.numel() for p in trainer.model.parameters()):,} parameters on {ranks.world_size} x {device_name}; run folder {run_dir}",
            flush=True,
        )
    with StopRequested(patient=ranks.distributed) as stop:
        exit_code = trainer.fit(stop)
    wait_for_all(ranks)
    if exit_code == 0 and ranks.is_main:
        print(f"done: {run_dir} (best validation loss {trainer.best_validation:.4g}; checkpoints best.pt, last.pt)")
    return exit_code


def parse_config(argv: list[str] | None) -> tuple[TrainConfig, dict | None]:
    """Turn the command line into a config (and the checkpoint to resume from, if any)."""
    parser = build_parser()
    namespace = parser.parse_args(argv)
    config = dataclass_from_namespace(TrainConfig, namespace)
    checkpoint = None
    if config.resume is not None:
        checkpoint = load_checkpoint(config.resume)
        saved = from_dict(TrainConfig, checkpoint["config"])
        for name in explicit_flags(parser, argv) & set(RESUME_OVERRIDABLE):
            setattr(saved, name, getattr(config, name))
        saved.resume = config.resume
        config = saved
    config.validate()
    return config, checkpoint


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``bond-vae-train``; with ``--devices N`` it runs N copies of itself as the ranks of one run."""
    argv = sys.argv[1:] if argv is None else argv
    ranks = Ranks()
    try:
        with exit_on_user_error():
            ranks = ranks_from_environment()
            config, checkpoint = parse_config(argv)
            if ranks.distributed:
                config.devices = ranks.world_size
            if config.devices > 1 and not ranks.distributed:
                check_device_count(config.device, config.devices)
                load_dataset(config.data, config.topology)  # a bad file: one message here, not one per rank
                print(f"launching {config.devices} data-parallel processes", file=sys.stderr)
                exit_code = launch_local_ranks(config.devices, "bond_vae", argv)
            else:
                exit_code = train(config, checkpoint, ranks)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        exit_code = 130
    finally:
        leave_process_group(ranks)
    sys.exit(exit_code)
