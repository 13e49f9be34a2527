"""Train the bond-length VAE: ``bond-vae-train`` (or ``python -m bond_vae``).

Each run writes its own folder ``<output-dir>/<timestamp>/`` holding ``config.json``,
``metrics.jsonl`` (one JSON record per epoch and split), ``last.pt`` and ``best.pt``
checkpoints (written atomically) and PNG plots. W&B logs offline by default (project
``bond-vae``, files under the run folder); ``--wandb online`` streams to your account.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
import torch

from bond_vae import __version__
from bond_vae.cli import exit_on_user_error
from bond_vae.config import (
    ConfigError,
    add_dataclass_arguments,
    config_file_values,
    dataclass_from_namespace,
    explicit_flags,
)
from bond_vae.data.dataset import load_dataset
from bond_vae.data.records import ConformationDataset
from bond_vae.data.split import training_split
from bond_vae.evaluation.report import ReportSettings, write_report
from bond_vae.model.parity import decide_parity
from bond_vae.model.vae import MolecularVAE, reference_conformation
from bond_vae.runtime import seed_everything, uses_bf16
from bond_vae.training.checkpoint import (
    CheckpointError,
    Progress,
    config_from_checkpoint,
    load_checkpoint,
    model_from_checkpoint,
    progress_from_checkpoint,
    restore_optimisation,
    restore_rng_state,
    topology_from_checkpoint,
)
from bond_vae.training.config import RESUME_OVERRIDABLE, TrainConfig
from bond_vae.training.distributed import (
    Ranks,
    broadcast_from_main,
    check_device_count,
    device_for_rank,
    init_process_group,
    launch_local_ranks,
    leave_process_group,
    ranks_from_environment,
    wait_for_all,
)
from bond_vae.training.loop import Outcome, StopRequested, TrainingRun, fit, training_network
from bond_vae.training.memory import check_memory
from bond_vae.training.run_log import RunLog, new_run_folder
from bond_vae.training.sampler_fit import store_fitted_samplers
from bond_vae.training.schedule import TimeBudget, initial_schedule, learning_rate_scheduler, saved_schedule

EXIT_CODES = {"finished": 0, "diverged": 3}  # a stop: 130 after SIGINT, 143 after SIGTERM
# prior samples of the report a finished run writes (evaluation/): fewer than bond-vae-evaluate's 2000, to keep the
# end of training short; run bond-vae-evaluate on best.pt for the full count
TRAINING_REPORT_SAMPLES = 1000


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bond-vae-train",
        description="Train a ViSNet -> EGNN variational autoencoder of molecular conformations with a\n"
        "covalent-bond-length reconstruction loss.\n\n" + __doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"bond_vae {__version__}")
    parser.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="settings from a YAML (.yaml, .yml) or TOML (.toml) file of 'flag: value' lines, flags named "
        "without the leading dashes (e.g. encoder_num_layers: 3); flags on the command line override them",
    )
    add_dataclass_arguments(parser, TrainConfig)
    return parser


def parse_config(argv: list[str] | None) -> tuple[TrainConfig, dict | None]:
    """Turn the command line (and its ``--config`` file) into a config (and the checkpoint to resume from,
    if any).

    A config file's settings replace the defaults, and flags on the command line replace them.
    With ``--resume`` the run keeps its own settings; only those in ``RESUME_OVERRIDABLE``
    may be given again (on the command line or in the file).
    """
    parser = build_parser()
    namespace = parser.parse_args(argv)
    file_settings = {}
    if namespace.config is not None:
        file_settings = config_file_values(parser, TrainConfig, namespace.config)
        parser.set_defaults(**file_settings)
        namespace = parser.parse_args(argv)
    config = dataclass_from_namespace(TrainConfig, namespace)
    checkpoint = None
    if config.resume is not None:
        checkpoint = load_checkpoint(config.resume)
        saved = config_from_checkpoint(checkpoint, config.resume)
        for name in (explicit_flags(parser, argv) | set(file_settings)) & set(RESUME_OVERRIDABLE):
            setattr(saved, name, getattr(config, name))
        saved.resume = config.resume
        config = saved
        check_trains_more(config, checkpoint)
    config.validate()
    return config, checkpoint


def build_run(
    config: TrainConfig, dataset: ConformationDataset, checkpoint: dict | None, ranks: Ranks = Ranks()
) -> TrainingRun:
    """The run's data split, model, optimiser and schedule; restored from ``checkpoint`` when resuming."""
    device = device_for_rank(config.device, ranks)
    amp = uses_bf16(config.precision, device)
    split = training_split(
        dataset.coords,
        dataset.trajectory_labels(),
        config.max_frames,
        config.validation_fraction,
        config.split_seed,
        config.trajectories_held_out(),
    )
    if ranks.is_main and split.test_note:
        print(f"test frames, held out for the final report: {split.test_note}", flush=True)
    train_frames, validation_frames = (
        torch.from_numpy(frames - frames.mean(axis=1, keepdims=True)) for frames in (split.train, split.validation)
    )
    if len(train_frames) < config.batch_size * ranks.world_size:
        raise ConfigError(
            f"{dataset.source}: the training split has {len(train_frames)} frames, "
            f"fewer than --batch-size {config.batch_size}"
            + (f" x {ranks.world_size} processes" if ranks.distributed else "")
        )
    topology = dataset.topology
    if checkpoint is None:
        seed_everything(config.seed)
        model = MolecularVAE(
            config.model,
            torch.from_numpy(topology.atomic_numbers),
            torch.from_numpy(topology.bonds),
            reference_conformation(train_frames),
            decide_parity(train_frames, topology, config.parity),
        )
        model.encoder.fit_bond_length_statistics(train_frames)
    else:
        check_resumable(checkpoint, dataset, config, ranks)
        model = model_from_checkpoint(checkpoint, config.resume)
    model.to(device)
    progress = progress_from_checkpoint(checkpoint) if checkpoint is not None else Progress()
    if ranks.distributed:
        # same initial weights on all ranks, then a noise stream of its own per rank, reseeded
        # from the step on resume (a single process restores its saved random state instead)
        seed_everything(config.seed + 1_000_003 * (ranks.rank + 1) + progress.step)
    steps_per_epoch = len(train_frames) // (config.batch_size * ranks.world_size)
    # fused AdamW skips a step on the device when told of a non-finite gradient (found_inf)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay, fused=True
    )
    schedule = initial_schedule(config, progress, steps_per_epoch)
    scheduler = learning_rate_scheduler(optimizer, schedule, 0)
    if checkpoint is not None:
        restore_optimisation(checkpoint, optimizer, scheduler)
        # the saved rate is that of the saved schedule: set this schedule's for the resumed step
        scheduler = learning_rate_scheduler(optimizer, schedule, progress.step)
        if not ranks.distributed:
            restore_rng_state(checkpoint["rng"], device)
    return TrainingRun(
        config=config,
        ranks=ranks,
        device=device,
        amp=amp,
        topology=topology,
        model=model,
        network=training_network(model, ranks, device, config.compile),
        optimizer=optimizer,
        scheduler=scheduler,
        train_coords=train_frames.to(device),
        validation_coords=validation_frames.to(device),
        steps_per_epoch=steps_per_epoch,
        schedule=schedule,
        progress=progress,
    )


def check_resumable(checkpoint: dict, dataset: ConformationDataset, config: TrainConfig, ranks: Ranks) -> None:
    """Refuse to resume on another molecule or with another number of processes."""
    stored = topology_from_checkpoint(checkpoint)
    if not (
        np.array_equal(stored.atomic_numbers, dataset.topology.atomic_numbers)
        and np.array_equal(stored.bonds, dataset.topology.bonds)
    ):
        raise CheckpointError(f"{config.resume}: the checkpoint's molecule (atoms or bonds) differs from the data's")
    trained_with = config_from_checkpoint(checkpoint, config.resume).devices
    if trained_with != ranks.world_size:
        raise CheckpointError(
            f"{config.resume}: the run was trained with {trained_with} processes, "
            f"not {ranks.world_size}: resume it with as many (--devices)"
        )


def check_trains_more(config: TrainConfig, checkpoint: dict) -> None:
    """Refuse a resume that would train nothing: the run has done its ``--epochs`` already."""
    done = progress_from_checkpoint(checkpoint).epoch
    if done >= config.epochs:
        raise ConfigError(
            f"{config.resume}: nothing to train: the run has done {done} epochs and --epochs is {config.epochs}; "
            "resume with a larger --epochs to train on"
        )


def schedule_change_note(run: TrainingRun, checkpoint: dict) -> str | None:
    """A line saying what a resume does to the run's schedule, or None when it follows it as saved."""
    before = config_from_checkpoint(checkpoint)
    step, after, minutes = run.progress.step, run.config.epochs, run.config.max_minutes
    saved = saved_schedule(before, run.progress, run.steps_per_epoch)
    if run.schedule == saved and minutes is None:
        return None
    old_rate, new_rate = (run.config.learning_rate * s.learning_rate_factor(step) for s in (saved, run.schedule))
    epochs = f"--epochs {after}" + (f" (the run had {before.epochs})" if after != before.epochs else "")
    timed = (
        ""
        if minutes is None
        else f"; --max-minutes {minutes:g}: {minutes:g} more minutes, and once {TimeBudget.TIMED_STEPS} steps are "
        "timed the cosine is laid out anew to end with the steps that fit, if they end sooner"
    )
    return (
        f"note: {epochs}: training continues to epoch {after}, and the cosine learning-rate schedule is laid out "
        f"anew over the whole run to end there: at step {step} the rate goes from {old_rate:.3g} to "
        f"{new_rate:.3g}{timed}"
    )


def exit_code(outcome: Outcome) -> int:
    """0 finished, 3 diverged (non-finite steps), 130 stopped by SIGINT (or another rank), 143 by SIGTERM."""
    if outcome.kind == "stopped":
        return 143 if outcome.signal_name == "SIGTERM" else 130
    return EXIT_CODES[outcome.kind]


def finish_run(run: TrainingRun) -> None:
    """Rank 0 after a finished run: store the fitted sampler in best.pt and last.pt
    (:mod:`~bond_vae.training.sampler_fit`), then write the evaluation report of best.pt with the default
    sampler and ``TRAINING_REPORT_SAMPLES`` samples on evaluate's default reference (the AIB9 test trajectories
    for the embedded data), in the run folder's ``evaluation/``, and send its figures and quality bar to W&B."""
    config, best = run.config, run.run_dir / "best.pt"
    frames = run.train_coords.cpu().numpy()
    stored = store_fitted_samplers(run.run_dir, run.model, frames, config.seed, config.compile, run.amp)
    if stored:
        print(f"fitted the sampler (latent mixture, torsion noise, relaxation targets) into {', '.join(stored)}")
    if not best.is_file():
        return
    settings = ReportSettings(
        num_samples=TRAINING_REPORT_SAMPLES, device=str(run.device), precision=config.precision, compile=config.compile
    )
    folder = run.run_dir / "evaluation"
    report = write_report(best, settings, folder, exist_ok=True)
    bar = report["quality_bar"]
    figures = {f"evaluation/{name.removesuffix('.png')}": folder / name for name in report["figures"]}
    scores = {"evaluation/quality_bar_met": bar["met"], "evaluation/quality_bar_applicable": bar["applicable"]}
    run.log.log(scores, run.progress.step, figures)
    run.log.summarize({"quality_bar": bar["summary"]})
    print(f"evaluation of best.pt: {folder / 'report.md'}; {report['quality_bar']['summary']}", flush=True)


def train(config: TrainConfig, checkpoint: dict | None = None, ranks: Ranks = Ranks()) -> int:
    """Run (or continue) training as one rank of ``ranks``; returns the process exit code."""
    if ranks.distributed:
        init_process_group(ranks, device_for_rank(config.device, ranks))
    dataset = load_dataset(config.data, config.topology, config.select, config.stride)
    if not ranks.distributed:  # the command that launched a data-parallel run checked it for all its processes
        check_memory(config, dataset, device_for_rank(config.device, ranks))
    run = build_run(config, dataset, checkpoint, ranks)
    run_dir = None
    if ranks.is_main:
        run_dir = config.resume.parent if checkpoint is not None else new_run_folder(config.output_dir, config.run_name)
    run.run_dir = broadcast_from_main(run_dir, ranks)
    if ranks.is_main:
        run.log = RunLog.start(run.run_dir, config)
        device_name = torch.cuda.get_device_name(run.device) if run.device.type == "cuda" else "CPU"
        parameters = sum(p.numel() for p in run.model.parameters())
        print(
            f"bond_vae {__version__}: {len(run.train_coords)} training / {len(run.validation_coords)} validation "
            f"frames of {dataset.topology.n_atoms} atoms from {dataset.source}; {parameters:,} parameters on "
            f"{ranks.world_size} x {device_name} in {'bf16' if run.amp else 'fp32'}; run folder {run.run_dir}",
            flush=True,
        )
        print(run.model.parity.summary(), flush=True)
        note = schedule_change_note(run, checkpoint) if checkpoint is not None else None
        if note:
            print(note, file=sys.stderr)
    with StopRequested(patient=ranks.distributed) as stop:
        code = exit_code(fit(run, stop))
    if code == 0 and ranks.is_main:
        finish_run(run)
    if run.log is not None:
        progress = {"epoch": run.progress.epoch, "step": run.progress.step, "exit_code": code}
        best = run.progress.best_validation
        run.log.summarize({**progress, **({"best_validation_loss": best} if math.isfinite(best) else {})})
        if config.log_checkpoints:
            run.log.log_checkpoints([run.run_dir / "best.pt", run.run_dir / "last.pt"], progress)
        run.log.finish(code)
    wait_for_all(ranks)
    if code == 0 and ranks.is_main:
        print(
            f"done: {run.run_dir} (best validation loss {run.progress.best_validation:.4g}; "
            "checkpoints best.pt, last.pt)"
        )
    return code


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``bond-vae-train``; with ``--devices N`` it runs N copies of itself as one run's ranks."""
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
                # a bad file or too little memory: one message here, not one per rank
                dataset = load_dataset(config.data, config.topology, config.select, config.stride)
                check_memory(config, dataset, device_for_rank(config.device, Ranks()), config.devices)
                print(f"launching {config.devices} data-parallel processes", file=sys.stderr)
                code = launch_local_ranks(config.devices, "bond_vae", argv)
            else:
                code = train(config, checkpoint, ranks)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        code = 130
    finally:
        leave_process_group(ranks)
    sys.exit(code)
