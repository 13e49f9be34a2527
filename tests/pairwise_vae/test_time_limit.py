"""--max-minutes: steps timed after warm-up, schedules laid out for the steps that fit, a final checkpoint."""

from __future__ import annotations

import json

from pairwise_helpers import run_main, tiny_run_flags
from pairwise_vae.training import loop as trainer
from pairwise_vae.training.checkpoint import Progress, load_checkpoint
from pairwise_vae.training.config import TrainConfig
from pairwise_vae.training.schedule import FINAL_LEARNING_RATE_FACTOR, Schedule, TimeBudget, schedule_for


def test_schedules_shrink_to_the_planned_steps():
    config = TrainConfig(epochs=10, warmup_steps=300, beta_warmup_epochs=5.0)
    assert schedule_for(config, Progress(), steps_per_epoch=100) == Schedule(1000, 300, 5.0)
    assert schedule_for(config, Progress(planned_steps=200), 100) == Schedule(200, 20, 1.0)
    assert schedule_for(config, Progress(planned_steps=5000), 100) == Schedule(1000, 300, 5.0), "--epochs bounds it"


def test_steps_that_fit_leave_out_compiling_and_count_epoch_ends(monkeypatch):
    clock = [0.0]
    monkeypatch.setattr(trainer.time, "perf_counter", lambda: clock[0])
    budget = TimeBudget(minutes=1.0)  # deadline at 60 s
    for step, seconds in ((0, 0.0), (10, 5.0), (20, 6.0)):  # 0 -> 10 compiles (5 s), then 0.1 s a step
        clock[0] = seconds
        budget.lap(step)
    assert budget.steps_that_fit(steps_per_epoch=100) is None, "10 timed steps are too few to plan"
    clock[0] = 7.0
    budget.lap(30)
    budget.epoch_ended(3.0)
    # 60 - 7 - 3 (the last epoch end) = 50 s left; each step costs 0.1 s + 3 s / 100 of an epoch's end
    assert budget.steps_that_fit(steps_per_epoch=100) == 384
    clock[0] = 61.0
    assert budget.expired and budget.steps_that_fit(steps_per_epoch=100) == 0


def test_max_minutes_ends_with_a_checkpoint_and_the_learning_rate_at_its_floor(tiny_npz, tmp_path):
    epochs = 10_000  # never reached: the time limit ends the run
    flags = tiny_run_flags(tiny_npz, tmp_path / "runs", epochs, "--run-name", "run", "--max-minutes", "0.05")
    assert run_main([*flags, "--evaluate-every", "100000"]) == 0
    run = tmp_path / "runs" / "run"
    checkpoint = load_checkpoint(run / "last.pt")
    assert 0 < checkpoint["step"] < epochs
    assert checkpoint["planned_steps"] == checkpoint["step"], "the schedule ends where the run ended"
    learning_rate = checkpoint["config"]["learning_rate"]
    assert checkpoint["scheduler"]["_last_lr"][0] == learning_rate * FINAL_LEARNING_RATE_FACTOR
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["split"] == "validation" and "kabsch_rmsd_reflection_allowed" in records[-1], (
        "the last epoch, cut short, is validated and evaluated"
    )
    assert (run / "best.pt").is_file()
