"""Learning-rate and KL-weight schedules, and the ``--max-minutes`` time budget that lays them out.

A run's schedule is a :class:`Schedule`: a linear learning-rate warm-up, then a cosine to
``FINAL_LEARNING_RATE_FACTOR`` of the peak at ``total_steps``, and a linear KL-weight warm-up.
:func:`lay_out` is the one rule that computes it; a process lays it out:

* at its start, for the cosine to end with epoch ``--epochs``;
* with ``--max-minutes N``, again once :attr:`TimeBudget.TIMED_STEPS` steps are timed (the
  interval that compiles is left out): the cosine ends at the last step that fits in the N
  minutes, the epoch ends included (never beyond ``--epochs``);
* and after every epoch's end from all the steps timed so far, so that a slow start (another
  job on the machine, a recompilation) does not cut the run short, nor a slowdown overrun it.
  The deadline ends training even if the steps ran slower than timed.

A resumed run lays the cosine out anew over its whole length, the steps done plus those to
come (to the new ``--epochs``, or for N more minutes), so the rate rises at the resumed step
to where that longer cosine stands; the warm-ups are laid out by the first plan and never
lengthen afterwards (the KL weight never falls back).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from functools import partial

import torch

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


def warmup_fraction(step: int, warmup_epochs: float, steps_per_epoch: int) -> float:
    """How far an optimiser step is into the first ``warmup_epochs``: rises linearly from 0 to 1, then stays 1."""
    warmup = warmup_epochs * steps_per_epoch
    return 1.0 if warmup <= 0 else min(1.0, step / warmup)


def beta_at(step: int, beta: float, warmup_epochs: float, steps_per_epoch: int) -> float:
    """KL weight at an optimiser step: rises linearly from 0 to ``beta`` over ``warmup_epochs``."""
    return beta * warmup_fraction(step, warmup_epochs, steps_per_epoch)


@dataclass(frozen=True)
class Schedule:
    """How the learning-rate and beta schedules are laid out.

    ``total_steps``: the optimiser step at which the cosine reaches its floor (where training
    ends, unless a deadline comes first); ``warmup_steps``: linear learning-rate warm-up;
    ``beta_warmup_epochs``: epochs of the linear rise of the KL weight and of the posterior noise.
    """

    total_steps: int
    warmup_steps: int
    beta_warmup_epochs: float

    def learning_rate_factor(self, step: int) -> float:
        """Multiplier of the peak learning rate at optimiser ``step``."""
        return learning_rate_factor(step, self.warmup_steps, self.total_steps)

    def beta(self, step: int, beta: float, steps_per_epoch: int) -> float:
        """KL weight at optimiser ``step`` for a full weight of ``beta``."""
        return beta_at(step, beta, self.beta_warmup_epochs, steps_per_epoch)

    def posterior_noise(self, step: int, steps_per_epoch: int) -> float:
        """Scale of the posterior noise in the training pass at optimiser ``step``: it rises from 0 to 1 with the KL
        weight. Without standardised posterior means the encoder's means differ between frames by about 1e-4 at
        initialisation while the posterior standard deviation is 0.6, so z at full noise is noise alone and a
        decoder learns to ignore it (the latent collapses onto the mean structure: the defaults did so in one of two
        seeds without this ramp; the ramp was measured before the means were standardised)."""
        return warmup_fraction(step, self.beta_warmup_epochs, steps_per_epoch)


def steps_to_epoch(progress: Progress, epochs: int, steps_per_epoch: int) -> int:
    """The optimiser step at which epoch ``epochs`` ends, counted from where ``progress`` stands
    (a run cut short by ``--max-minutes`` closes its last epoch early, so steps and epochs drift)."""
    return progress.step + (epochs - progress.epoch) * steps_per_epoch - progress.batch_in_epoch


def lay_out(config: TrainConfig, total_steps: int, epoch_steps: int, previous: Schedule | None) -> Schedule:
    """The schedule whose cosine ends at ``total_steps``; the one rule of every layout.

    A run shorter than ``epoch_steps`` (the end of ``--epochs``) shrinks the warm-ups with it:
    the beta warm-up keeps its share of the run and the learning-rate warm-up takes at most a
    tenth of it. Neither warm-up ever gets longer than in ``previous``, the schedule the run
    followed so far (None for a new run).
    """
    share = min(1.0, total_steps / max(1, epoch_steps))
    warmup_steps = config.warmup_steps if share >= 1.0 else min(config.warmup_steps, max(1, total_steps // 10))
    beta_warmup_epochs = config.beta_warmup_epochs * share
    if previous is not None:
        warmup_steps = min(warmup_steps, previous.warmup_steps)
        beta_warmup_epochs = min(beta_warmup_epochs, previous.beta_warmup_epochs)
    return Schedule(total_steps, warmup_steps, beta_warmup_epochs)


def saved_schedule(config: TrainConfig, progress: Progress, steps_per_epoch: int) -> Schedule:
    """The schedule a run followed up to ``progress``: as recorded there, or for a new run (and
    checkpoints written before schedules were recorded) the ``--epochs`` one of ``config``."""
    if progress.schedule is not None:
        return Schedule(**progress.schedule)
    epoch_steps = steps_to_epoch(progress, config.epochs, steps_per_epoch)
    return lay_out(config, epoch_steps, epoch_steps, None)


def initial_schedule(config: TrainConfig, progress: Progress, steps_per_epoch: int) -> Schedule:
    """The schedule a process starts with: its cosine ends with epoch ``--epochs`` (until a
    ``--max-minutes`` plan replaces it)."""
    epoch_steps = steps_to_epoch(progress, config.epochs, steps_per_epoch)
    return lay_out(config, epoch_steps, epoch_steps, saved_schedule(config, progress, steps_per_epoch))


def timed_schedule(
    config: TrainConfig, progress: Progress, steps_per_epoch: int, steps_that_fit: int, previous: Schedule
) -> Schedule:
    """The ``--max-minutes`` plan: the cosine ends ``steps_that_fit`` steps from now, or with
    epoch ``--epochs`` if that comes first."""
    epoch_steps = steps_to_epoch(progress, config.epochs, steps_per_epoch)
    return lay_out(config, min(progress.step + steps_that_fit, epoch_steps), epoch_steps, previous)


def learning_rate_scheduler(
    optimizer: torch.optim.Optimizer, schedule: Schedule, step: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """A LambdaLR over ``schedule`` that stands at optimiser ``step``: the optimiser's rate is
    the peak rate (each group's ``initial_lr``) times the schedule's factor for that step."""
    for group in optimizer.param_groups:
        group.setdefault("initial_lr", group["lr"])
    factor = partial(learning_rate_factor, warmup_steps=schedule.warmup_steps, total_steps=schedule.total_steps)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor, last_epoch=step - 1)


class TimeBudget:
    """The ``--max-minutes`` limit of one process (on ``--resume``: N more minutes), and the step
    and epoch-end times measured to lay out its schedule, and again after each epoch's end.

    Steps are timed between synchronisation points, from the first one on (the interval before
    it compiles) and never across an epoch's end, whose time is measured on its own.
    ``planned`` says the schedule was laid out from the timed steps; ``replan_due`` that an epoch
    ended since, so the next synchronisation lays it out again; ``time_up`` that all ranks reached
    the deadline, which ends training.
    """

    TIMED_STEPS = 20

    def __init__(self, minutes: float) -> None:
        self.deadline = time.perf_counter() + 60.0 * minutes
        self.timed_steps = 0
        self.timed_seconds = 0.0
        self.epoch_end_seconds: float | None = None
        self.epoch_end_total = 0.0
        self.epoch_ends = 0
        self.planned = False
        self.replan_due = False
        self.time_up = False
        self._mark: tuple[int, float] | None = None

    def lap(self, step: int) -> None:
        """Record a synchronisation point reached after ``step`` optimiser steps."""
        now = time.perf_counter()
        if self._mark is not None:
            self.timed_steps += step - self._mark[0]
            self.timed_seconds += now - self._mark[1]
        self._mark = (step, now)

    def epoch_ended(self, step: int, seconds: float) -> None:
        """An epoch's end (validation, checkpoints, plots) after ``step`` steps took ``seconds``; keep the longest
        and the mean."""
        self.epoch_end_seconds = max(self.epoch_end_seconds or 0.0, seconds)
        self.epoch_end_total += seconds
        self.epoch_ends += 1
        self._mark = (step, time.perf_counter())
        self.replan_due = self.planned

    @property
    def ready(self) -> bool:
        """Whether enough steps are timed to lay the schedule out."""
        return self.timed_steps >= self.TIMED_STEPS

    @property
    def expired(self) -> bool:
        return time.perf_counter() >= self.deadline

    @property
    def step_seconds(self) -> float:
        return self.timed_seconds / self.timed_steps

    def epoch_end_cost(self, estimate_steps: float) -> float:
        """Seconds of the longest epoch's end so far, or before one ended ``estimate_steps`` step times."""
        return self.epoch_end_seconds if self.epoch_end_seconds is not None else estimate_steps * self.step_seconds

    def mean_epoch_end_cost(self, estimate_steps: float) -> float:
        """Mean seconds of an epoch's end so far (every ``--evaluate-every``-th one also samples), or before one
        ended ``estimate_steps`` step times."""
        return self.epoch_end_total / self.epoch_ends if self.epoch_ends else estimate_steps * self.step_seconds

    def steps_that_fit(self, steps_per_epoch: int, estimate_steps: float) -> int:
        """Optimiser steps that still fit before the deadline, counting each epoch's end at the mean cost and the
        run's own last one (which evaluates) at the longest; needs :attr:`ready`."""
        seconds_left = self.deadline - time.perf_counter() - self.epoch_end_cost(estimate_steps)
        per_step = self.step_seconds + self.mean_epoch_end_cost(estimate_steps) / steps_per_epoch
        return max(0, math.floor(seconds_left / per_step))
