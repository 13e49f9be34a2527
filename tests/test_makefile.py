"""`make train-bond GPUS=...` / `make train-pairwise GPUS=...` pick the GPUs and one process per GPU."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def dry_run(*arguments: str) -> str:
    """The training command `make` would run (the last line of a dry run)."""
    result = subprocess.run(
        ["make", "--no-print-directory", "-n", "-C", str(ROOT), *arguments],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return result.stdout.strip().splitlines()[-1]


@pytest.mark.parametrize(
    ("target", "command"), [("train-bond", "bond-vae-train"), ("train-pairwise", "pairwise-vae-train")]
)
def test_gpus_sets_the_visible_gpus_and_the_process_count(target, command):
    line = dry_run(target, "GPUS=0,2,3", "ARGS=--epochs 2")
    assert line.startswith("CUDA_VISIBLE_DEVICES=0,2,3 ")
    assert f"{command} " in line and "--devices 3 --epochs 2" in line
    plain = dry_run(target)
    assert "CUDA_VISIBLE_DEVICES" not in plain and "--devices" not in plain


@pytest.mark.parametrize(("package", "command"), [("bond", "bond-vae-evaluate"), ("pairwise", "pairwise-vae-evaluate")])
def test_evaluate_takes_the_latest_run_of_the_package_unless_run_names_one(tmp_path, package, command):
    for run in ("20261201-090000", "20261203-120000"):
        (tmp_path / f"{package}_vae" / run).mkdir(parents=True)
        (tmp_path / f"{package}_vae" / run / "best.pt").touch()
    line = dry_run("evaluate", f"PACKAGE={package}", f"RUNS_DIR={tmp_path}", "ARGS=--relax")
    latest = tmp_path / f"{package}_vae" / "20261203-120000"
    assert f"{command} {latest}/best.pt --output {latest}/evaluation-" in line and line.endswith(" --relax")
    chosen = tmp_path / f"{package}_vae" / "20261201-090000" / "best.pt"
    assert f"{command} {chosen} " in dry_run("evaluate", f"PACKAGE={package}", f"RUNS_DIR={tmp_path}", f"RUN={chosen}")
    sample = dry_run("sample", f"PACKAGE={package}", f"RUNS_DIR={tmp_path}")
    assert f"{package}-vae-sample {latest}/best.pt --output {latest}/samples-" in sample


@pytest.mark.parametrize(
    ("package", "expected"),
    [
        ("pairwise", "error: no run with a best.pt under {runs}/pairwise_vae/: train one (make train-pairwise)"),
        ("chiral", "error: PACKAGE=chiral: expected bond or pairwise"),
    ],
)
def test_evaluate_without_a_run_or_with_an_unknown_package_says_so_in_one_line(tmp_path, package, expected):
    result = subprocess.run(
        ["make", "--no-print-directory", "-C", str(ROOT), "check-run", f"RUNS_DIR={tmp_path}", f"PACKAGE={package}"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    error = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and error[0].startswith(expected.format(runs=tmp_path)), error
