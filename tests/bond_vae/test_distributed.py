"""Data-parallel training: per-rank batches, two gloo processes in step, the launcher, --devices on the CLI.

Every test but the first starts several processes: marked slow (make test-all runs them).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from bond_helpers import TINY_MODEL_FLAGS, run_main
from bond_vae.training.checkpoint import load_checkpoint
from bond_vae.training.distributed import Ranks
from bond_vae.training.loop import rank_slice

HERE = Path(__file__).resolve().parent


def test_ranks_split_each_global_batch_into_disjoint_slices():
    order = torch.randperm(50)
    for batch in range(2):
        slices = [rank_slice(order, batch, 6, Ranks(rank=r, world_size=4)) for r in range(4)]
        assert torch.equal(torch.cat(slices), order[batch * 24 : (batch + 1) * 24])
    assert torch.equal(rank_slice(order, 3, 6, Ranks()), order[18:24]), "one process takes the plain batches"


@pytest.mark.slow  # several processes
def test_two_gloo_ranks_hold_the_same_weights_and_skip_a_non_finite_step_together(tiny_npz, tmp_path):
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        str(HERE / "ddp_step.py"),
        str(tiny_npz),
        str(tmp_path),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    rank0, rank1 = (torch.load(tmp_path / f"rank{r}.pt") for r in range(2))
    assert not set(rank0["frames"].tolist()) & set(rank1["frames"].tolist()), "each rank trains on its own frames"
    for name, value in rank0["after"].items():
        assert torch.equal(value, rank1["after"][name]), name
        assert torch.equal(rank0["before"][name], rank1["before"][name]), name
    changed = [name for name, value in rank0["after"].items() if not torch.equal(value, rank0["before"][name])]
    assert len(changed) > 10, "the step updated the weights"
    for rank in (rank0, rank1):  # a NaN on one rank: the step is skipped on both, weights untouched
        assert rank["applied"] == 1.0 and rank["skipped"] == 1.0
        for name, value in rank["after_poisoned"].items():
            assert torch.equal(value, rank["after"][name]), name


@pytest.mark.slow  # several processes
def test_devices_flag_trains_on_two_processes_and_resumes(tiny_npz, tmp_path):
    flags = [
        "--data",
        str(tiny_npz),
        "--batch-size",
        "4",
        "--warmup-steps",
        "2",
        "--wandb",
        "disabled",
        "--device",
        "cpu",
        "--no-compile",
        "--output-dir",
        str(tmp_path / "runs"),
        "--run-name",
        "ddp",
        "--test-trajectories",  # nothing held out: all 48 frames but the validation split train
        "0",
        *TINY_MODEL_FLAGS,
    ]
    # the launcher runs in this process; its two ranks are 'python -m bond_vae' processes
    assert run_main(["--devices", "2", "--epochs", "1", *flags]) == 0
    run = tmp_path / "runs" / "ddp"
    assert [p.name for p in (tmp_path / "runs").iterdir()] == ["ddp"], "one run folder, written by rank 0"
    assert json.loads((run / "config.json").read_text())["devices"] == 2
    after_one_epoch = load_checkpoint(run / "last.pt")
    assert after_one_epoch["step"] == 5, "43 training frames / (2 ranks x 4) = 5 steps"

    assert run_main(["--resume", str(run / "last.pt"), "--epochs", "2"]) == 0
    assert load_checkpoint(run / "last.pt")["step"] == 10
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records if r["split"] == "train"] == [1, 2]


FAKE_RANK = """
import json, os, signal, sys
from pathlib import Path
names = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
Path(sys.argv[1], "rank" + os.environ["RANK"] + ".json").write_text(json.dumps({n: os.environ[n] for n in names}))
if sys.argv[2] == "fail" and os.environ["RANK"] == "1":
    sys.exit(3)
signal.signal(signal.SIGINT, lambda *_: sys.exit(130))
os.write(1, b"ready\\n")  # one write: the two ranks share the pipe, and PYTHONUNBUFFERED would split a print
signal.pause()
"""


def start_launcher(tmp_path, mode: str) -> subprocess.Popen:
    """launch_local_ranks(2, ...) in its own session, running FAKE_RANK as both ranks."""
    (tmp_path / "fake_rank.py").write_text(FAKE_RANK)
    code = (
        "import sys; from bond_vae.training.distributed import launch_local_ranks; "
        f"sys.exit(launch_local_ranks(2, 'fake_rank', [{str(tmp_path)!r}, {mode!r}]))"
    )
    return subprocess.Popen(
        [sys.executable, "-c", code],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
    )


@pytest.mark.slow  # several processes
def test_launcher_gives_each_rank_the_torchrun_environment_and_stops_the_others_when_one_fails(tmp_path):
    launcher = start_launcher(tmp_path, "fail")
    assert launcher.wait(timeout=120) == 3, "the failed rank's exit status, after the waiting rank was stopped"
    environments = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert [(e["RANK"], e["LOCAL_RANK"], e["WORLD_SIZE"], e["LOCAL_WORLD_SIZE"]) for e in environments] == [
        ("0", "0", "2", "2"),
        ("1", "1", "2", "2"),
    ]
    assert environments[0]["MASTER_PORT"] == environments[1]["MASTER_PORT"]


@pytest.mark.slow  # several processes
def test_launcher_passes_a_sigint_on_to_the_ranks(tmp_path):
    launcher = start_launcher(tmp_path, "wait")
    assert [launcher.stdout.readline() for _ in range(2)] == ["ready\n", "ready\n"]
    launcher.send_signal(signal.SIGINT)
    assert launcher.wait(timeout=120) == 130
