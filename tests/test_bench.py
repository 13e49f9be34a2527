"""The benchmark runs end to end on a tiny setting (its numbers are not checked)."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # a process that imports and runs both packages: about 12 CPU-s
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
            "--batch-size",
            "3",
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
    assert all(row["batch_size"] == 3 for row in rows), "--batch-size overrides the setting's batch"


def test_the_comparison_with_the_original_takes_its_best_batch_and_gives_the_ratio():
    sys.path.insert(0, str(ROOT / "scripts"))
    import bench

    ours = bench.Measurement(
        package="bond_vae",
        setting="reference",
        code="this checkout",
        compiled=True,
        bf16=False,
        pair_channels=256,
        vector_channels=256,
        device="CPU",
        batch_size=256,
        parameters=1,
        train_molecules_per_s=60.0,
        sample_batch=1024,
        sample_conformations_per_s=300.0,
        peak_memory_mib=5000.0,
        flops_per_molecule=None,
        mfu=None,
    )
    original = [
        {"package": "bond_vae", "batch": 32, "mol_per_s": 20.0, "peak_rss_mib": 2700.0},
        {"package": "bond_vae", "batch": 128, "mol_per_s": 10.0, "peak_rss_mib": 6100.0},
    ]
    slower = bench.Measurement(**{**asdict(ours), "batch_size": 32, "train_molecules_per_s": 40.0})
    row = bench.format_comparison([slower, ours], original).splitlines()[-1].split()
    assert row[:4] == ["bond_vae", "20.00", "32", "2700"]
    assert "3.0x" in row and "5.0x" in row  # training ratio to the original; sampling / training
