"""Learning-rate and KL-weight schedules, and the ``--max-minutes`` time budget."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from pairwise_vae.training.checkpoint import Progress
from pairwise_vae.training.config import TrainConfig

FINAL_LEARNING_RATE_FACTOR = 0.05


def learning_rate_factor(step: int, warmup_steps: int, total_steps: int) -> float:
    """Multiplier of the peak learning rate at an optimiser step.

    Linear warm-up over ``warmup_steps`` (from 1 / warmup_steps to 1), then a cosine decay
    that reaches 0.05 at ``total_steps`` and stays there.
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    cosine = 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    return FINAL_LEARNING_RATE_FACTOR + (1.0 - FINAL_LEARNING_RATE_FACTOR) * cosine


def beta_at(step: int, beta: float, warmup_epochs: float, steps_per_epoch: int) -> float:
    """KL weight at an optimiser step: rises linearly from 0 to ``beta`` over ``warmup_epochs``."""
    warmup = warmup_epochs * steps_per_epoch
    return beta * (1.0 if warmup <= 0 else min(1.0, step / warmup))


@dataclass(frozen=True)
class Schedule:
    """How the learning-rate and beta schedules are laid out.

    ``total_steps``: optimiser steps of the whole run (the cosine ends there);
    ``warmup_steps``: linear learning-rate warm-up; ``beta_warmup_epochs``: epochs of the KL
    weight's linear rise.
    """

    total_steps: int
    warmup_steps: int
    beta_warmup_epochs: float


def schedule_for(config: TrainConfig, progress: Progress, steps_per_epoch: int) -> Schedule:
    """The run's schedules: ``--epochs`` long, or, when ``--max-minutes`` planned fewer steps
    (``progress.planned_steps``), shrunk to those: the beta warm-up keeps its share of the run
    and the learning-rate warm-up takes at most a tenth of it."""
    epoch_plan = steps_per_epoch * config.epochs
    planned = progress.planned_steps
    if planned is None or planned >= epoch_plan:
        return Schedule(epoch_plan, config.warmup_steps, config.beta_warmup_epochs)
    return Schedule(
        planned, min(config.warmup_steps, max(1, planned // 10)), config.beta_warmup_epochs * planned / epoch_plan
    )


class TimeBudget:
    """A ``--max-minutes`` limit: when training must end, and the step and epoch-end times measured
    so far, from which :meth:`steps_that_fit` lays out the rest of the run.

    Steps are timed between synchronisation points; the first interval of a process (compiling)
    and intervals that span an epoch's end are not counted.
    """

    MIN_TIMED_STEPS = 20

    def __init__(self, minutes: float) -> None:
        self.deadline = time.perf_counter() + 60.0 * minutes
        self.timed_steps = 0
        self.timed_seconds = 0.0
        self.epoch_end_seconds = 0.0
        self.planned = False  # whether the schedules were laid out from measured times yet
        self._mark: tuple[int, float] | None = None
        self._warmed_up = False

    def lap(self, step: int) -> None:
        """Record a synchronisation point reached after ``step`` optimiser steps."""
        now = time.perf_counter()
        if self._mark is not None and self._warmed_up:
            self.timed_steps += step - self._mark[0]
            self.timed_seconds += now - self._mark[1]
        self._warmed_up = self._warmed_up or self._mark is not None
        self._mark = (step, now)

    def epoch_ended(self, seconds: float) -> None:
        """An epoch's end (validation, checkpoints, plots) took ``seconds``; keep the longest."""
        self.epoch_end_seconds = max(self.epoch_end_seconds, seconds)
        self._mark = None

    @property
    def expired(self) -> bool:
        return time.perf_counter() >= self.deadline

    def steps_that_fit(self, steps_per_epoch: int) -> int | None:
        """Optimiser steps that still fit before the deadline, each epoch's end (and the run's)
        included; None until enough steps are timed."""
        if self.timed_steps < self.MIN_TIMED_STEPS:
            return None
        step_seconds = self.timed_seconds / self.timed_steps
        seconds_left = self.deadline - time.perf_counter() - self.epoch_end_seconds
        per_step = step_seconds + self.epoch_end_seconds / steps_per_epoch
        return max(0, math.floor(seconds_left / per_step))
