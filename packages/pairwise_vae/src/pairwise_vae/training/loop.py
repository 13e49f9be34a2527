"""The training loop: optimiser steps, epochs, schedules, validation at each epoch's end, and stops.

The loop's state is explicit: a :class:`TrainingRun` (built by ``train.py``) holds the model,
optimiser, data and :class:`~pairwise_vae.training.checkpoint.Progress`, and :func:`fit` runs it to an
:class:`Outcome` that the command line turns into an exit code.
"""

from __future__ import annotations

import math
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from pairwise_vae.data.records import Topology
from pairwise_vae.model.vae import MolecularVAEMSE
from pairwise_vae.training.checkpoint import Progress, save_checkpoint, training_payload
from pairwise_vae.training.config import SYNC_INTERVAL, TrainConfig
from pairwise_vae.training.distributed import Ranks, any_rank, mean_over_ranks
from pairwise_vae.training.run_log import RunLog
from pairwise_vae.training.schedule import Schedule, TimeBudget, learning_rate_scheduler, steps_to_epoch, timed_schedule
from pairwise_vae.training.stop import Outcome, StopRequested
from pairwise_vae.training.validation import (
    draw_validation_samples,
    sample_metrics,
    set_latent_statistics,
    validate,
    write_plots,
    write_sample_molecules,
)

# a re-plan of a --max-minutes run is printed when it moves the end by more than this share
REPLAN_NOTE_FRACTION = 0.02

STEP_METRICS = (
    "loss",
    "reconstruction",
    "kl",
    "relative_chirality",
    "stereocentres",
    "steric",
    "aligned",
    "grad_norm",
)


def rank_slice(order: torch.Tensor, batch_in_epoch: int, batch_size: int, ranks: Ranks) -> torch.Tensor:
    """This rank's part of a global batch: (batch_size,) entries of the epoch order.

    Global batch b takes ``world_size * batch_size`` consecutive entries of the order and rank r
    the r-th slice of them, so no two ranks see the same frame in an epoch.
    """
    start = (batch_in_epoch * ranks.world_size + ranks.rank) * batch_size
    return order[start : start + batch_size]


def epoch_order(seed: int, epoch: int, n_frames: int, device: torch.device) -> torch.Tensor:
    """(n_frames,) order of the training frames in an epoch, a function of (seed, epoch) so resume can replay it."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n_frames, generator=generator).to(device)


def training_network(
    model: MolecularVAEMSE, ranks: Ranks, device: torch.device, compile_model: bool
) -> torch.nn.Module:
    """The model as the training step runs it: data-parallel across ranks, compiled if asked and possible."""
    network: torch.nn.Module = model
    if ranks.distributed:
        device_ids = [device] if device.type == "cuda" else None
        network = torch.nn.parallel.DistributedDataParallel(network, device_ids=device_ids)
    if compile_model:
        if shutil.which("cc") or shutil.which("gcc") or shutil.which("clang"):
            return torch.compile(network)
        if ranks.is_main:
            print("warning: no C compiler on PATH, so torch.compile is off (--no-compile hides this)", file=sys.stderr)
    return network


@dataclass
class TrainingRun:
    """Everything the loop reads and changes.

    ``train_coords`` and ``validation_coords`` are (F, N, 3) centred frames on ``device``
    (Angstrom); ``network`` is ``model`` as the step runs it (data-parallel, compiled);
    ``schedule`` is the learning-rate and beta layout that ``scheduler`` follows (replaced once,
    when ``--max-minutes`` lays it out); ``budget`` is the ``--max-minutes`` limit (None without
    one, set when training starts);
    ``run_dir`` holds the checkpoints; ``log`` is rank 0's record (None on the other ranks).
    ``consecutive_bad_steps`` and ``skipped_steps`` are () counters kept on the device, so that
    the host reads them only when it synchronises.
    """

    config: TrainConfig
    ranks: Ranks
    device: torch.device
    amp: bool
    topology: Topology
    model: MolecularVAEMSE
    network: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    train_coords: torch.Tensor
    validation_coords: torch.Tensor
    steps_per_epoch: int
    schedule: Schedule
    progress: Progress = field(default_factory=Progress)
    budget: TimeBudget | None = None
    run_dir: Path | None = None
    log: RunLog | None = None
    consecutive_bad_steps: torch.Tensor = field(init=False)
    skipped_steps: torch.Tensor = field(init=False)

    def __post_init__(self) -> None:
        self.consecutive_bad_steps = torch.zeros((), device=self.device)
        self.skipped_steps = torch.full((), float(self.progress.skipped_steps), device=self.device)

    @property
    def final_step(self) -> int:
        """The optimiser step at which training ends: the schedule's end, or the end of ``--epochs``
        while a ``--max-minutes`` plan is being timed."""
        if self.budget is not None and not self.budget.planned:
            return steps_to_epoch(self.progress, self.config.epochs, self.steps_per_epoch)
        return self.schedule.total_steps

    @property
    def done(self) -> bool:
        time_up = self.budget is not None and self.budget.time_up
        return time_up or self.progress.epoch >= self.config.epochs or self.progress.step >= self.final_step


def train_step(run: TrainingRun, batch: torch.Tensor) -> torch.Tensor:
    """One optimiser step on a (B, N, 3) batch, queued without waiting for the device.

    A non-finite loss or gradient (on any rank) leaves the weights and optimiser state as
    they were: the fused optimiser skips its update on the device.

    Returns:
        (len(STEP_METRICS) + 1,) tensor: the metrics, then 1.0 if the step was applied, 0.0 if skipped.
    """
    config = run.config
    run.network.train()
    beta = run.schedule.beta(run.progress.step, config.beta, run.steps_per_epoch)
    noise = torch.tensor(run.schedule.posterior_noise(run.progress.step, run.steps_per_epoch), device=batch.device)
    with torch.autocast(run.device.type, dtype=torch.bfloat16, enabled=run.amp):
        outputs = run.network(batch, noise)
    terms = run.model.criterion(batch, *outputs, beta=beta)
    run.optimizer.zero_grad(set_to_none=True)
    terms.total.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(run.model.parameters(), config.grad_clip)
    non_finite = any_rank((~(torch.isfinite(terms.total) & torch.isfinite(grad_norm))).float(), run.ranks)
    run.optimizer.found_inf = non_finite  # read by the fused AdamW step (as torch.amp.GradScaler does)
    run.optimizer.step()
    del run.optimizer.found_inf
    run.scheduler.step()
    metrics = (
        torch.stack(
            [
                terms.total,
                terms.reconstruction,
                terms.kl,
                terms.relative_chirality,
                terms.stereocentres,
                terms.steric,
                terms.aligned,
                grad_norm,
            ]
        )
        .detach()
        .float()
    )
    return torch.cat([metrics, 1.0 - non_finite.view(1)])


def save(run: TrainingRun, name: str, statistics_set: bool = False) -> Path:
    """Write ``name`` (e.g. last.pt) in the run folder with everything needed to resume (rank 0 only), the
    standardisation of the posterior means set for the current weights first (unless ``statistics_set``: an
    epoch's end has just set it)."""
    path = run.run_dir / name
    if run.ranks.is_main:
        if not statistics_set:
            set_latent_statistics(run.model, run.train_coords, run.amp)
        run.progress.skipped_steps = int(run.skipped_steps.item())
        run.progress.schedule = asdict(run.schedule)
        payload = training_payload(
            run.config, run.topology, run.model, run.optimizer, run.scheduler, run.progress, run.device
        )
        save_checkpoint(path, payload)
    return path


def fit(run: TrainingRun, stop: StopRequested) -> Outcome:
    """Train until the last epoch, the schedule's end, the ``--max-minutes`` deadline or a stop; a
    stopped run saves ``last.pt`` and says how to resume."""
    if run.config.max_minutes is not None:
        run.budget = TimeBudget(run.config.max_minutes)
    set_latent_statistics(run.model, run.train_coords, run.amp)  # for batches of one molecule, until an epoch ends
    bar = tqdm(
        total=run.final_step,
        initial=run.progress.step,
        unit="step",
        dynamic_ncols=True,
        desc="training",
        disable=not run.ranks.is_main,
    )
    outcome = None
    while outcome is None and not run.done:
        outcome = run_epoch(run, bar, stop)
    bar.close()
    if outcome is None:
        return Outcome("finished")
    if outcome.kind == "stopped":
        path = save(run, "last.pt")
        if run.ranks.is_main:
            print(
                f"stopped by {outcome.signal_name or 'a signal to another rank'} at epoch "
                f"{run.progress.epoch + 1}, step {run.progress.step}; saved {path}. "
                f"Resume with: pairwise-vae-train --resume {path}",
                file=sys.stderr,
            )
    return outcome


def stop_agreed(run: TrainingRun, stop: StopRequested, synchronising: bool) -> bool:
    """Whether to stop after this step: at once alone, at the next synchronisation when data-parallel."""
    if not run.ranks.distributed:
        return bool(stop)
    if not synchronising:
        return False
    return bool(any_rank(torch.tensor(float(bool(stop)), device=run.device), run.ranks).item())


def run_epoch(run: TrainingRun, bar: tqdm, stop: StopRequested) -> Outcome | None:
    """Train through the rest of the current epoch; at its end, validate and record it.

    A stop agreed on the epoch's last step still closes the epoch first, so a checkpoint never
    holds a finished epoch that was not recorded.

    Returns:
        None when the epoch ran to its end, else the outcome that ends the run.
    """
    config, progress = run.config, run.progress
    order = epoch_order(config.seed, progress.epoch, len(run.train_coords), run.device)
    sums = torch.zeros(len(STEP_METRICS) + 1, device=run.device)  # metric sums over applied steps, then their count
    epoch_start = time.perf_counter()
    steps_done = 0
    stopping = False
    while progress.batch_in_epoch < run.steps_per_epoch and not run.done and not stopping:
        frames = rank_slice(order, progress.batch_in_epoch, config.batch_size, run.ranks)
        step_metrics = train_step(run, run.train_coords[frames])
        applied = step_metrics[-1]
        sums += torch.where(applied > 0, step_metrics, torch.zeros_like(step_metrics))
        run.consecutive_bad_steps = (run.consecutive_bad_steps + 1.0) * (1.0 - applied)
        run.skipped_steps += 1.0 - applied
        progress.batch_in_epoch += 1
        progress.step += 1
        steps_done += 1
        bar.update(1)
        synchronising = progress.step % SYNC_INTERVAL == 0 or progress.batch_in_epoch == run.steps_per_epoch
        if synchronising and report_steps(run, step_metrics, bar):
            return Outcome("diverged")
        if synchronising and run.budget is not None:
            keep_to_budget(run, bar)
        if progress.step % config.checkpoint_every == 0:
            save(run, "last.pt")
        stopping = stop_agreed(run, stop, synchronising)
    if progress.batch_in_epoch == run.steps_per_epoch or (run.done and steps_done > 0):
        close_epoch(run, sums, steps_done, time.perf_counter() - epoch_start, bar)
    return Outcome("stopped", stop.signal_name) if stopping else None


def keep_to_budget(run: TrainingRun, bar: tqdm) -> None:
    """At a synchronisation point of a ``--max-minutes`` run: time the steps, end training at the
    deadline, and lay the schedule out once enough steps are timed and again after each epoch's end
    (all ranks agree on all three)."""
    budget = run.budget
    budget.lap(run.progress.step)
    if any_rank(torch.tensor(float(budget.expired), device=run.device), run.ranks).item() > 0:
        budget.time_up = True
    elif budget.ready and (budget.replan_due or not budget.planned):
        plan_schedule(run, bar)


def plan_schedule(run: TrainingRun, bar: tqdm) -> None:
    """Fix the schedule for the steps that fit in the rest of ``--max-minutes`` (the slowest rank's
    view, never beyond ``--epochs``) and drive the learning rate along it from this step on; printed
    the first time, and again when a re-plan moves the end by more than ``REPLAN_NOTE_FRACTION``."""
    budget, progress = run.budget, run.progress
    estimate_steps = len(run.validation_coords) / run.config.batch_size  # an epoch's end, until one is timed
    fit_steps = budget.steps_that_fit(run.steps_per_epoch, estimate_steps)
    fit_steps = -int(any_rank(torch.tensor(-float(fit_steps), device=run.device), run.ranks).item())  # min
    previous_end = run.schedule.total_steps if budget.planned else None
    run.schedule = timed_schedule(run.config, progress, run.steps_per_epoch, fit_steps, run.schedule)
    run.scheduler = learning_rate_scheduler(run.optimizer, run.schedule, progress.step)
    budget.planned, budget.replan_due = True, False
    moved = previous_end is None or abs(run.schedule.total_steps - previous_end) > REPLAN_NOTE_FRACTION * previous_end
    if run.ranks.is_main and moved:
        more = run.schedule.total_steps - progress.step
        measured = "" if budget.epoch_end_seconds is not None else " (estimated)"
        bar.write(
            f"--max-minutes {run.config.max_minutes:g}: a step takes {budget.step_seconds:.3g} s and an epoch's end "
            f"{budget.mean_epoch_end_cost(estimate_steps):.3g} s{measured}, so training ends at step "
            f"{run.schedule.total_steps} ({more} more steps, {more / run.steps_per_epoch:.1f} epochs), where the "
            "learning-rate cosine reaches its floor"
        )
    bar.total = run.final_step
    bar.refresh()


def close_epoch(run: TrainingRun, sums: torch.Tensor, steps_done: int, seconds: float, bar: tqdm) -> None:
    """Count the epoch as done, then (rank 0) validate, record, save and plot.

    Args:
        sums: (len(STEP_METRICS) + 1,) metric sums over this process's applied steps, then their count.
        steps_done: steps of this epoch taken since the process started (0 when it resumed at
            the epoch's end: then there is no train record to write).
        seconds: time those steps took.
    """
    end_start = time.perf_counter()
    progress = run.progress
    progress.epoch += 1
    progress.batch_in_epoch = 0
    train_record = None
    if steps_done > 0:
        *metric_sums, applied_steps = mean_over_ranks(sums, run.ranks).tolist()
        train_record = {"split": "train", "epoch": progress.epoch, "step": progress.step}
        if applied_steps > 0:
            train_record.update(
                {key: value / applied_steps for key, value in zip(STEP_METRICS, metric_sums, strict=True)}
            )
        train_record.update(
            skipped_steps=int(run.skipped_steps.item()),
            molecules_per_s=steps_done * run.config.batch_size * run.ranks.world_size / seconds,
            train_seconds=seconds,
        )
    if run.ranks.is_main:
        end_epoch(run, train_record, bar)
    if run.budget is not None:
        run.budget.epoch_ended(progress.step, time.perf_counter() - end_start)


def report_steps(run: TrainingRun, step_metrics: torch.Tensor, bar: tqdm) -> bool:
    """Read the latest step on the host: progress bar, W&B, and the non-finite-step limit.

    Returns:
        True when the run must stop because too many consecutive steps were non-finite.
    """
    *values, applied = step_metrics.tolist()
    bad_steps = int(run.consecutive_bad_steps.item())
    if bad_steps >= run.config.max_bad_steps:
        path = save(run, "last.pt")  # skipped steps never touched the weights: this state is good
        if run.ranks.is_main:
            bar.write(
                f"error: {bad_steps} consecutive steps gave a non-finite loss or gradient; stopped. "
                f"Last good state saved in {path} (try a lower --learning-rate)",
                file=sys.stderr,
            )
        return True
    if applied:
        config, step = run.config, run.progress.step
        metrics = dict(zip(STEP_METRICS, values, strict=True))
        metrics["beta"] = run.schedule.beta(step - 1, config.beta, run.steps_per_epoch)
        bar.set_postfix(loss=f"{metrics['loss']:.4g}", epoch=run.progress.epoch + 1)
        if run.log is not None:
            run.log.log({f"train/{k}": v for k, v in metrics.items()} | {"lr": run.scheduler.get_last_lr()[0]}, step)
    return False


def end_epoch(run: TrainingRun, train_record: dict[str, Any] | None, bar: tqdm) -> None:
    """Rank 0 at an epoch's end: validate, record the metrics, save checkpoints and plots."""
    config, progress = run.config, run.progress
    set_latent_statistics(run.model, run.train_coords, run.amp)
    result = validate(run.model, run.validation_coords, config.beta, run.amp)
    validation_record = {"split": "validation", "epoch": progress.epoch, "step": progress.step, **result.metrics}
    evaluating = progress.epoch % config.evaluate_every == 0 or run.done
    samples = draw_validation_samples(run.model, run.train_coords, config.seed, run.amp) if evaluating else None
    if samples is not None:
        validation_record.update(sample_metrics(result, samples, run.topology))
    if train_record is not None:
        run.log.append(train_record)
    run.log.append(validation_record)
    if validation_record["loss"] < progress.best_validation:
        progress.best_validation = validation_record["loss"]
        save(run, "best.pt", statistics_set=True)
        run.log.summarize({f"best/{k}": v for k, v in validation_record.items() if k != "split"})
    save(run, "last.pt", statistics_set=True)
    train_loss = (train_record or {}).get("loss", math.nan)
    speed = f", {train_record['molecules_per_s']:.0f} molecules/s" if train_record is not None else ""
    bar.write(
        f"epoch {progress.epoch}{'' if run.budget is not None else f'/{config.epochs}'}: train loss {train_loss:.4g}, "
        f"validation loss {validation_record['loss']:.4g}, distance MAE {validation_record['distance_mae']:.3f} A, "
        f"bond MAE {validation_record['bond_mae']:.4f} A, "
        f"Kabsch RMSD {validation_record['kabsch_rmsd']:.2f} A{speed}"
    )
    images, molecules = {}, {}
    if samples is not None:
        images = write_plots(result, samples, run.topology, run.log.history(), run.run_dir)
        molecules = {"samples/prior": write_sample_molecules(samples, run.topology, run.run_dir)}
    run.log.log(
        {f"validation/{k}": v for k, v in validation_record.items() if k != "split"}, progress.step, images, molecules
    )
