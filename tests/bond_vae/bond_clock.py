"""A fake clock for ``--max-minutes`` runs, so that their schedules are known in advance."""

from __future__ import annotations

import time
from collections.abc import Container
from pathlib import Path

import pytest
from bond_helpers import tiny_run_flags, write_npz
from bond_vae.data.records import ConformationDataset
from bond_vae.training import loop

# timed_run_data: 96 frames, 10 of them validation, 86 training in batches of 8: 10 steps an epoch
STEPS_PER_EPOCH = 10


class FakeClock:
    """``time.perf_counter`` for training runs in this process: a step takes 0.125 s (1 s for the
    steps in ``slow``) and an epoch's end 0.5 s, whatever the CPU does. ``rates`` records the
    learning rate of each optimiser step, by step (0-based)."""

    STEP_SECONDS = 0.125
    SLOW_STEP_SECONDS = 1.0
    EPOCH_END_SECONDS = 0.5

    def __init__(self, monkeypatch: pytest.MonkeyPatch, slow: Container[int] = ()) -> None:
        self.now = 1000.0
        self.slow = slow
        self.rates: dict[int, float] = {}
        train_step, end_epoch = loop.train_step, loop.end_epoch

        def timed_step(run, batch):
            step = run.progress.step
            self.rates[step] = run.optimizer.param_groups[0]["lr"]
            self.now += self.SLOW_STEP_SECONDS if step in self.slow else self.STEP_SECONDS
            return train_step(run, batch)

        def timed_end(*args, **kwargs):
            self.now += self.EPOCH_END_SECONDS
            return end_epoch(*args, **kwargs)

        monkeypatch.setattr(time, "perf_counter", lambda: self.now)
        monkeypatch.setattr(loop, "train_step", timed_step)
        monkeypatch.setattr(loop, "end_epoch", timed_end)


def timed_run_data(folder: Path, aib9: ConformationDataset) -> Path:
    """The first 96 AIB9 frames as an .npz file in ``folder`` (10 steps an epoch with batches of 8)."""
    return write_npz(folder / "timed.npz", aib9, aib9.coords[:96])


def timed_run_flags(data: Path, output_dir: Path, epochs: int, minutes: str) -> list[str]:
    """Flags of a tiny run in ``output_dir/run`` with ``--max-minutes minutes``, evaluated only at its end."""
    flags = tiny_run_flags(data, output_dir, epochs, "--run-name", "run", "--max-minutes", minutes)
    return [*flags, "--evaluate-every", "100000"]
