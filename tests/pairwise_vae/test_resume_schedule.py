"""Resuming a run: --max-minutes N trains N more minutes, a larger --epochs trains on to it, and a
resume with nothing to train says so and fails (bugs: the first two trained nothing and exited 0)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from pairwise_clock import STEPS_PER_EPOCH, FakeClock, timed_run_data, timed_run_flags
from pairwise_helpers import SHARED_RUN_EPOCHS, run_main
from pairwise_vae.training.checkpoint import load_checkpoint
from pairwise_vae.training.schedule import FINAL_LEARNING_RATE_FACTOR, learning_rate_factor
from pairwise_vae.training.train import parse_config

EPOCHS = 1000  # far away: the first run ends on --max-minutes 0.1, at step 34 in epoch 4 (see test_time_limit)


@pytest.fixture(scope="module")
def timed_run(tmp_path_factory: pytest.TempPathFactory, aib9) -> Path:
    """The folder of a tiny run that ended on --max-minutes 0.1 (fake clock), shared: tests resume a copy."""
    folder = tmp_path_factory.mktemp("timed_run")
    with pytest.MonkeyPatch.context() as monkeypatch:
        FakeClock(monkeypatch)
        assert run_main(timed_run_flags(timed_run_data(folder, aib9), folder / "runs", EPOCHS, "0.1")) == 0
    checkpoint = load_checkpoint(folder / "runs" / "run" / "last.pt")
    assert (checkpoint["step"], checkpoint["epoch"], checkpoint["schedule"]["total_steps"]) == (34, 4, 34)
    return folder / "runs" / "run"


@pytest.fixture()
def last(timed_run: Path, tmp_path: Path) -> Path:
    """last.pt of a copy of the timed run."""
    return shutil.copytree(timed_run, tmp_path / "run") / "last.pt"


def train_epochs(run_folder: Path) -> list[int]:
    records = [json.loads(line) for line in (run_folder / "metrics.jsonl").read_text().splitlines()]
    return [r["epoch"] for r in records if r["split"] == "train"]


def test_max_minutes_on_resume_trains_that_many_more_minutes(timed_run, last, monkeypatch, capsys):
    clock = FakeClock(monkeypatch)
    assert run_main(["--resume", str(last), "--max-minutes", "0.1"]) == 0
    resumed = load_checkpoint(last)
    # from step 34: synchronisations after steps 40 (the first, not timed), 44 (the end of epoch 5), 50, 54
    # and 60: 20 steps timed at 4.25 s, then (6 - 4.25 - 0.5) / (0.125 + 0.5 / 10) = 7.1 more steps fit
    assert resumed["step"] == 67, "the resumed run trained for 0.1 more minutes"
    assert train_epochs(last.parent) == list(range(1, 9)), "epochs 5..8, the last one cut short"
    assert "so training ends at step 67 (7 more steps, 0.7 epochs)" in capsys.readouterr().out
    peak = resumed["config"]["learning_rate"]
    until_epochs = 34 + (EPOCHS - 4) * STEPS_PER_EPOCH
    assert clock.rates[34] == pytest.approx(peak * learning_rate_factor(34, 2, until_epochs)), (
        "until the new steps are timed, the cosine is laid out anew to end with --epochs"
    )
    assert clock.rates[60] == pytest.approx(peak * learning_rate_factor(60, 2, 67)), "then with the steps that fit"
    assert resumed["scheduler"]["_last_lr"][0] == pytest.approx(peak * FINAL_LEARNING_RATE_FACTOR)
    first = load_checkpoint(timed_run / "last.pt")["schedule"]
    assert resumed["schedule"] == {**first, "total_steps": 67}, "the warm-ups of the first plan stay"


def test_a_plain_resume_of_a_timed_run_keeps_its_max_minutes(last):
    config, _ = parse_config(["--resume", str(last)])
    assert config.max_minutes == 0.1, "--resume alone trains 0.1 more minutes, as with --max-minutes 0.1"


def test_a_larger_epochs_on_resume_of_a_timed_run_trains_to_that_epoch(last, monkeypatch, capsys):
    clock = FakeClock(monkeypatch)
    assert run_main(["--resume", str(last), "--epochs", "6"]) == 0
    resumed = load_checkpoint(last)
    # epochs 5 and 6 take 20 steps, 14 of them timed: --epochs ends the run before --max-minutes plans it
    assert (resumed["step"], resumed["epoch"]) == (54, 6)
    assert train_epochs(last.parent) == list(range(1, 7))
    assert f"--epochs 6 (the run had {EPOCHS}): training continues to epoch 6" in capsys.readouterr().err
    peak = resumed["config"]["learning_rate"]
    assert clock.rates[34] == pytest.approx(peak * learning_rate_factor(34, 2, 54)), "the cosine ends at epoch 6"
    assert resumed["scheduler"]["_last_lr"][0] == pytest.approx(peak * FINAL_LEARNING_RATE_FACTOR)


def test_a_resume_with_nothing_to_train_says_so_and_fails(tiny_run, tmp_path, capsys):
    run = shutil.copytree(tiny_run, tmp_path / "run")
    assert run_main(["--resume", str(run / "last.pt")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert err.startswith(f"error: {run / 'last.pt'}: nothing to train: the run has done {SHARED_RUN_EPOCHS} epochs")
    assert load_checkpoint(run / "last.pt")["step"] == load_checkpoint(tiny_run / "last.pt")["step"]
