"""The scaling benchmark: its tiled molecules, and one run end to end (its timings are not checked)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import scaling  # noqa: E402


def test_a_tiled_molecule_holds_separate_copies_of_aib9_frames():
    from pairwise_vae.data.dataset import load_dataset

    dataset = load_dataset(None)
    frames, atomic_numbers, bonds = scaling.tiled_molecule(dataset, 3)
    assert frames.shape == (len(dataset.coords) // 3, 174, 3)
    assert np.array_equal(atomic_numbers.numpy(), np.tile(dataset.topology.atomic_numbers, 3))
    assert len(bonds) == 3 * len(dataset.topology.bonds)
    assert ((bonds // 58)[:, 0] == (bonds // 58)[:, 1]).all(), "no bond joins two copies"
    expected = dataset.coords[4] - dataset.coords[4].mean(axis=0) + np.array([scaling.SPACING, 0, 0])
    np.testing.assert_allclose(frames[1, 58:116].numpy(), expected, atol=1e-4)
    gap = (frames[:, 58:116, 0].min(dim=1).values - frames[:, :58, 0].max(dim=1).values).min().item()
    assert gap > 2.0, "copies overlap"


@pytest.mark.slow  # two fresh processes importing a package: about 20 CPU-s
def test_the_scaling_benchmark_runs_and_its_memory_follows_the_estimate(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "scaling.py"),
            "--atoms",
            "116",
            "--packages",
            "pairwise_vae",
            "--batch",
            "2",
            "--decode",
            "2",
            "--device",
            "cpu",
            "--json",
            str(tmp_path / "scaling.json"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    found = json.loads((tmp_path / "scaling.json").read_text())
    (row,) = found["rows"]
    assert row["atoms"] == 116 and row["step_s"] > 0
    assert 0.3 < row["step_peak_mib"] / row["step_estimate_mib"] < 1.5
    limits = found["limits"]["pairwise_vae"]
    assert 1000 < limits["24"] < limits["80"], "a step of one molecule of a thousand atoms fits in 24 GiB"
