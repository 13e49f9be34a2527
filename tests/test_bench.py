"""The benchmark runs end to end on a tiny setting (its numbers are not checked)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_bench_runs_on_a_tiny_setting(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "bench.py"),
            "--settings",
            "tiny",
            "--device",
            "cpu",
            "--no-compile",
            "--warmup",
            "0",
            "--repeats",
            "1",
            "--steps",
            "1",
            "--sample-batch",
            "8",
            "--json",
            str(tmp_path / "bench.json"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "train mol/s" in result.stdout
    rows = json.loads((tmp_path / "bench.json").read_text())
    assert {row["package"] for row in rows} == {"bond_vae", "pairwise_vae"}
    assert all(row["train_molecules_per_s"] > 0 and row["sample_conformations_per_s"] > 0 for row in rows)
