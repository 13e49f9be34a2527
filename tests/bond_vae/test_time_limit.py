"""--max-minutes: steps timed after compiling, the schedules laid out once for the steps that fit, the deadline."""

from __future__ import annotations

import json
import time

import pytest
from bond_clock import STEPS_PER_EPOCH, FakeClock, timed_run_data, timed_run_flags
from bond_helpers import run_main
from bond_vae.training.checkpoint import Progress, load_checkpoint
from bond_vae.training.config import TrainConfig
from bond_vae.training.schedule import (
    FINAL_LEARNING_RATE_FACTOR,
    Schedule,
    TimeBudget,
    initial_schedule,
    lay_out,
    learning_rate_factor,
    steps_to_epoch,
    timed_schedule,
)


def test_lay_out_shrinks_the_warm_ups_with_the_run_and_never_lengthens_them():
    config = TrainConfig(epochs=10, warmup_steps=300, beta_warmup_epochs=5.0)
    assert lay_out(config, 1000, 1000, None) == Schedule(1000, 300, 5.0)
    assert lay_out(config, 200, 1000, None) == Schedule(200, 20, 1.0), "a fifth of the run: a fifth of the beta rise"
    assert lay_out(config, 600, 1000, Schedule(200, 20, 1.0)) == Schedule(600, 20, 1.0), "the warm-ups stay"
    assert initial_schedule(config, Progress(), 100) == Schedule(1000, 300, 5.0)


def test_the_timed_plan_counts_from_the_current_step_and_stops_at_epochs():
    config = TrainConfig(epochs=10, warmup_steps=300, beta_warmup_epochs=5.0)
    # a run cut short by --max-minutes closed epoch 3 after 37 steps; 2 steps into epoch 4
    progress = Progress(epoch=3, step=39, batch_in_epoch=2)
    assert steps_to_epoch(progress, 10, 10) == 39 - 2 + 7 * 10
    previous = Schedule(1000, 300, 5.0)
    assert timed_schedule(config, progress, 10, 61, previous) == Schedule(100, 10, 5.0 * (100 / 107))
    assert timed_schedule(config, progress, 10, 500, previous).total_steps == 107, "--epochs bounds it"


def test_steps_that_fit_leave_out_compiling_and_count_epoch_ends(monkeypatch):
    clock = [0.0]
    monkeypatch.setattr(time, "perf_counter", lambda: clock[0])
    budget = TimeBudget(minutes=1.0)  # deadline at 60 s
    for step, seconds in ((10, 5.0), (20, 6.0)):  # 0 -> 10 compiles (5 s, not timed), then 0.1 s a step
        clock[0] = seconds
        budget.lap(step)
    assert not budget.ready, "10 timed steps are too few to plan"
    assert budget.epoch_end_cost(estimate_steps=4.0) == pytest.approx(0.4), "no epoch end yet: 4 step times"
    clock[0] = 9.0
    budget.epoch_ended(20, 3.0)  # 6 -> 9 s: an epoch's end, not timed as steps
    clock[0] = 10.0
    budget.lap(30)
    assert budget.ready and budget.step_seconds == pytest.approx(0.1)
    # 60 - 10 - 3 (the run's last epoch end) = 47 s left; each step costs 0.1 s + 3 s / 100 of an epoch's end
    assert budget.steps_that_fit(steps_per_epoch=100, estimate_steps=4.0) == 361
    clock[0] = 61.0
    assert budget.expired and budget.steps_that_fit(steps_per_epoch=100, estimate_steps=4.0) == 0


def test_epoch_ends_count_at_their_mean_and_the_run_s_last_at_the_longest(monkeypatch):
    clock = [0.0]
    monkeypatch.setattr(time, "perf_counter", lambda: clock[0])
    budget = TimeBudget(minutes=1.0)  # deadline at 60 s
    budget.lap(0)
    clock[0] = 2.0
    budget.lap(20)  # 0.1 s a step
    budget.epoch_ended(20, 3.0)  # a plain epoch end
    budget.epoch_ended(20, 9.0)  # one that also sampled (--evaluate-every)
    clock[0] = 14.0
    assert budget.mean_epoch_end_cost(estimate_steps=4.0) == pytest.approx(6.0)
    # 60 - 14 - 9 (the run's last epoch end evaluates) = 37 s; each step 0.1 s + 6 s / 100 of an epoch's end
    assert budget.steps_that_fit(steps_per_epoch=100, estimate_steps=4.0) == 231


def test_max_minutes_lays_the_schedule_out_once_and_ends_it_at_the_floor(aib9, tmp_path, monkeypatch, capsys):
    clock = FakeClock(monkeypatch)
    assert run_main(timed_run_flags(timed_run_data(tmp_path, aib9), tmp_path / "runs", 1000, "0.1")) == 0
    # steps 10..30 are timed (0.125 s each) between epoch ends of 0.5 s; after step 30 (4.75 s) 6 - 4.75 - 0.5 s
    # are left, 0.75 / (0.125 + 0.5 / 10) = 4.3 steps: the cosine ends at step 34, not with epoch 1000
    assert "so training ends at step 34 (4 more steps, 0.4 epochs)" in capsys.readouterr().out
    run = tmp_path / "runs" / "run"
    checkpoint = load_checkpoint(run / "last.pt")
    assert (checkpoint["step"], checkpoint["epoch"]) == (34, 4), "the last epoch, 4 steps long, was closed"
    epoch_steps = 1000 * STEPS_PER_EPOCH
    schedule = {"total_steps": 34, "warmup_steps": 2, "beta_warmup_epochs": 5.0 * 34 / epoch_steps}  # beta: its share
    assert checkpoint["schedule"] == pytest.approx(schedule)
    peak = checkpoint["config"]["learning_rate"]
    assert clock.rates[3] == pytest.approx(peak * learning_rate_factor(3, 2, epoch_steps)), "--epochs' until timed"
    assert clock.rates[30] == pytest.approx(peak * learning_rate_factor(30, 2, 34)), "then the planned cosine"
    assert clock.rates[33] == pytest.approx(peak * learning_rate_factor(33, 2, 34))
    assert checkpoint["scheduler"]["_last_lr"][0] == pytest.approx(peak * FINAL_LEARNING_RATE_FACTOR)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["split"] == "validation" and "kabsch_rmsd_reflection_allowed" in records[-1], (
        "the last epoch, cut short, is validated and evaluated"
    )
    assert (run / "best.pt").is_file()


def test_the_plan_follows_the_measured_speed_and_the_deadline_ends_the_run(aib9, tmp_path, monkeypatch, capsys):
    """Steps 0..19 take 1 s (another job on the machine), steps 20..44 0.125 s, then 1 s again. The plan after step
    30 ends the run at step 41; laid out again after the next epoch's end, from all steps timed so far, it ends at
    step 51; then steps slow down and the synchronisation after step 50 finds the deadline passed."""
    FakeClock(monkeypatch, slow={*range(20), *range(45, 1000)})
    assert run_main(timed_run_flags(timed_run_data(tmp_path, aib9), tmp_path / "runs", 1000, "0.5")) == 0
    out = capsys.readouterr().out
    # after step 30 (22.25 s; steps 10..30 timed, 0.5625 s a step): (30 - 22.25 - 0.5) / (0.5625 + 0.05) = 11.8 fit
    assert "so training ends at step 41 (11 more steps" in out
    # after step 40 (24 s; steps 10..40 timed, 0.4167 s a step): (30 - 24 - 0.5) / (0.4167 + 0.05) = 11.8 fit
    assert "so training ends at step 51 (11 more steps" in out
    checkpoint = load_checkpoint(tmp_path / "runs" / "run" / "last.pt")
    assert checkpoint["schedule"]["total_steps"] == 51
    # the epoch end after step 40 (24.5 s), steps 41..45 (0.625 s) and 46..50 (5 s): 30.1 s after step 50
    assert (checkpoint["step"], checkpoint["epoch"]) == (50, 5)
