"""Check everything CUDA on this machine in one go (``make gpu-check``), in about 10 minutes.

    uv run python scripts/gpu_check.py                      # (make gpu-check)
    uv run python scripts/gpu_check.py --output gpu-check   # logs and bench.json go there

Five checks, each in its own process with a time limit, then one summary table:

1. ``tests``: the test suite's CUDA-marked tests (``pytest -m cuda``): bf16 autocast and
   torch.compile on CUDA, device placement, a checkpoint written on the GPU and read on the CPU.
2. ``bench``: ``scripts/bench.py`` at the default and the reference settings on the first GPU:
   training molecules/s, sampling conformations/s, peak memory, FLOPs and MFU.
3. ``scaling``: ``scripts/scaling.py`` on the first GPU at 58, 522, 1,044 and 2,088 atoms: step
   time and peak memory of one molecule, the decode's memory, beside the memory check's estimates.
4. ``train-both``: ``scripts/train_both.sh`` for one epoch of the embedded AIB9 data, both
   trainings at once (on two GPUs, or sharing one), with their end-of-run evaluation.
5. ``ddp``: bond_vae data-parallel on two GPUs (``--devices 2``, NCCL) and a resume of it;
   skipped with fewer than two GPUs.

Seen on one H200: five of the six CUDA tests passed in the first 125 s, bench measured three
of its four rows in 250 s (most of it compiling each model in a fresh process), train-both
took 117 s; so the whole check takes about 10 minutes. Each check stops at ``--timeout``.
W&B is disabled in the training checks (they check CUDA, not logging). The exit status is 1
when any check failed, 0 otherwise (skipped checks do not fail). Nothing here needs uv: run
with any Python that has the two packages importable (``PYTHONPATH=packages/bond_vae/src:...``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class CheckResult:
    name: str
    status: str  # passed, failed, skipped
    seconds: float
    details: str


def run_logged(command: list[str], log: Path, timeout: float, env: dict[str, str] | None = None) -> tuple[int, str]:
    """Run ``command`` from the repository root with its output in ``log``; (exit status, output)."""
    with log.open("w") as handle:
        handle.write("$ " + " ".join(command) + "\n")
        handle.flush()
        try:
            completed = subprocess.run(
                command, cwd=ROOT, stdout=handle, stderr=subprocess.STDOUT, timeout=timeout, env=env, check=False
            )
            status = completed.returncode
        except subprocess.TimeoutExpired:
            handle.write(f"\ngpu-check: stopped after its {timeout:.0f} s limit\n")
            status = 124
    return status, log.read_text(errors="replace")


def last_line(text: str, prefix: str = "") -> str:
    lines = [line for line in text.replace("\r", "\n").splitlines() if line.strip() and line.startswith(prefix)]
    return lines[-1].strip() if lines else ""


def check_tests(output: Path, timeout: float) -> CheckResult:
    start = time.perf_counter()
    command = [sys.executable, "-m", "pytest", "-m", "cuda", "-q", "-p", "no:cacheprovider", "tests"]
    status, text = run_logged(command, output / "tests.log", timeout)
    summary = last_line(text)
    return CheckResult("tests", "passed" if status == 0 else "failed", time.perf_counter() - start, summary)


def check_bench(output: Path, timeout: float) -> CheckResult:
    start = time.perf_counter()
    json_path = output / "bench.json"
    command = [sys.executable, "scripts/bench.py", "--device", "cuda", "--settings", "default", "reference"]
    status, text = run_logged(command + ["--json", str(json_path)], output / "bench.log", timeout)
    rows = json.loads(json_path.read_text()) if json_path.is_file() else []
    details = "; ".join(
        f"{row['package']} {row['setting']}: train {row['train_molecules_per_s']:,.0f} mol/s, "
        f"sample {row['sample_conformations_per_s']:,.0f} conf/s, {row['peak_memory_mib']:,.0f} MiB, "
        f"MFU {100 * row['mfu']:.1f}%"
        if row.get("mfu") is not None
        else f"{row['package']} {row['setting']}: train {row['train_molecules_per_s']:,.0f} mol/s"
        for row in rows
    )
    ok = status == 0 and len(rows) == 4
    return CheckResult("bench", "passed" if ok else "failed", time.perf_counter() - start, details or last_line(text))


def final_records(run_folder: Path) -> str:
    """The last train and validation records of a run folder's metrics.jsonl, in a few numbers."""
    records = [json.loads(line) for line in (run_folder / "metrics.jsonl").read_text().splitlines() if line]
    train = [record for record in records if record.get("split") == "train"]
    validation = [record for record in records if record.get("split") == "validation"]
    if not train or not validation:
        return f"{run_folder.parent.name}: no records"
    speed, record = train[-1].get("molecules_per_s", float("nan")), validation[-1]
    return (
        f"{run_folder.parent.name}: {speed:,.0f} mol/s, validation loss {record['loss']:.4g}, "
        f"bond MAE {record['bond_mae']:.3f} A, Kabsch RMSD {record['kabsch_rmsd']:.2f} A"
    )


def check_scaling(output: Path, timeout: float) -> CheckResult:
    start = time.perf_counter()
    json_path = output / "scaling.json"
    command = [sys.executable, "scripts/scaling.py", "--device", "cuda", "--atoms", "58", "522", "1044", "2088"]
    status, text = run_logged(command + ["--json", str(json_path)], output / "scaling.log", timeout)
    rows = json.loads(json_path.read_text())["rows"] if json_path.is_file() else []
    details = "; ".join(
        f"{row['package']} {row['atoms']} atoms: {row['step_s']:.3f} s, {row['step_peak_mib']:,.0f} MiB" for row in rows
    )
    ok = status == 0 and len(rows) == 8
    return CheckResult("scaling", "passed" if ok else "failed", time.perf_counter() - start, details or last_line(text))


def check_train_both(output: Path, timeout: float) -> CheckResult:
    start = time.perf_counter()
    runs = output / "runs"
    env = os.environ | {
        "RUNS_DIR": str(runs),
        "ARGS": "--epochs 1 --wandb disabled --device cuda",
        "PYTHON": sys.executable,
    }
    status, text = run_logged(["bash", "scripts/train_both.sh"], output / "train_both.log", timeout, env)
    folders = [path for path in sorted(runs.glob("*_vae/*")) if (path / "last.pt").is_file()]
    details = "; ".join(final_records(folder) for folder in folders) or last_line(text)
    ok = status == 0 and len(folders) == 2
    return CheckResult("train-both", "passed" if ok else "failed", time.perf_counter() - start, details)


def check_ddp(output: Path, timeout: float) -> CheckResult:
    start = time.perf_counter()
    if torch.cuda.device_count() < 2:
        return CheckResult("ddp", "skipped", 0.0, f"{torch.cuda.device_count()} GPU visible, DDP needs 2")
    runs = output / "ddp_runs"
    flags = ["--epochs", "1", "--max-frames", "2048", "--wandb", "disabled", "--output-dir", str(runs)]
    status, text = run_logged([sys.executable, "-m", "bond_vae", "--devices", "2", *flags], output / "ddp.log", timeout)
    checkpoints = sorted(runs.glob("*/last.pt"))
    if status != 0 or not checkpoints:
        return CheckResult("ddp", "failed", time.perf_counter() - start, last_line(text))
    resume = [sys.executable, "-m", "bond_vae", "--devices", "2", "--resume", str(checkpoints[0]), "--epochs", "2"]
    status, text = run_logged(resume, output / "ddp_resume.log", timeout)
    details = f"2 ranks, 1 epoch then resumed to 2: {final_records(checkpoints[0].parent)}"
    return CheckResult("ddp", "passed" if status == 0 else "failed", time.perf_counter() - start, details)


def environment_line() -> str:
    names = [torch.cuda.get_device_name(index) for index in range(torch.cuda.device_count())]
    return (
        f"torch {torch.__version__}, CUDA {torch.version.cuda}, Python {sys.version.split()[0]}, "
        f"{len(names)} GPU(s): {', '.join(names)}"
    )


def summary_table(results: list[CheckResult]) -> str:
    lines = ["| check | result | time | details |", "|---|---|---|---|"]
    lines += [f"| {r.name} | {r.status} | {r.seconds:.0f} s | {r.details} |" for r in results]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--output", type=Path, help="folder for the logs (default: runs/gpu-check-<time>; must not exist)"
    )
    parser.add_argument(
        "--checks",
        nargs="+",
        default=["tests", "bench", "scaling", "train-both", "ddp"],
        choices=["tests", "bench", "scaling", "train-both", "ddp"],
        help="which checks to run (default: all five)",
    )
    parser.add_argument("--timeout", type=float, default=300.0, help="time limit of each check, seconds")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        sys.exit("error: gpu-check needs a CUDA GPU, and torch sees none here (torch.cuda.is_available() is False)")
    output = args.output or ROOT / "runs" / f"gpu-check-{datetime.now():%Y%m%d-%H%M%S}"
    if output.exists() and any(output.iterdir()):
        sys.exit(f"error: {output}: already exists and is not empty; choose another --output")
    output.mkdir(parents=True, exist_ok=True)
    print(f"gpu-check: {environment_line()}; logs in {output}", flush=True)
    checks = {
        "tests": check_tests,
        "bench": check_bench,
        "scaling": check_scaling,
        "train-both": check_train_both,
        "ddp": check_ddp,
    }
    results = []
    for name in args.checks:
        print(f"gpu-check: {name}...", flush=True)
        results.append(checks[name](output, args.timeout))
        print(f"gpu-check: {name} {results[-1].status} in {results[-1].seconds:.0f} s", flush=True)
    table = summary_table(results)
    (output / "summary.md").write_text(f"{environment_line()}\n\n{table}\n")
    print(table)
    sys.exit(1 if any(result.status == "failed" for result in results) else 0)


if __name__ == "__main__":
    main()
