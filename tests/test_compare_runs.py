"""`make compare` (scripts/compare_runs.py): two tiny runs, one of each package, evaluated and compared."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from bond_vae.training.train import main as train_bond
from pairwise_vae.training.train import main as train_pairwise

ROOT = Path(__file__).resolve().parents[1]
TINY = (
    "--epochs 1 --batch-size 8 --warmup-steps 2 --wandb disabled --device cpu --latent-dim 4 "
    "--encoder-hidden-channels 16 --encoder-num-layers 2 --encoder-num-heads 2 --encoder-num-rbf 8 "
    "--decoder-hidden-channels 16 --decoder-num-layers 2 --decoder-pair-channels 16 --no-compile"
).split()


def load_script():
    spec = importlib.util.spec_from_file_location("compare_runs", ROOT / "scripts" / "compare_runs.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """runs/bond_vae/<run> and runs/pairwise_vae/<run>, one tiny epoch each on 24 AIB9 frames."""
    folder = tmp_path_factory.mktemp("compare")
    with np.load(ROOT / "packages/bond_vae/src/bond_vae/data/resources/aib9.npz") as archive:
        arrays = {key: archive[key] for key in archive.files if key not in ("replica", "temperature_k")}
    arrays["coords"] = arrays["coords"][::400]  # 2 frames of every replica: both handednesses
    np.savez(folder / "tiny.npz", **arrays)
    for train, package in ((train_bond, "bond_vae"), (train_pairwise, "pairwise_vae")):
        with pytest.raises(SystemExit) as exit_info:
            train(["--data", str(folder / "tiny.npz"), "--output-dir", str(folder / "runs" / package), *TINY])
        assert exit_info.value.code == 0
    return folder / "runs"


@pytest.mark.slow  # two trainings, then the script evaluates both in processes of their own: about 35 CPU-s
def test_compare_writes_the_table_and_figures(runs, capsys):
    script = load_script()
    output = runs / "comparison"
    code = script.main(
        ["--runs", str(runs), "--output", str(output), "--num-samples", "64", "--no-compile", "--device", "cpu"]
    )
    assert code == 0, capsys.readouterr().err
    text = (output / "comparison.md").read_text()
    for label in (
        "reconstruction Kabsch RMSD, proper rotation (A)",
        "reconstruction bond-length MAE (A)",
        "reconstruction all-pairs distance MAE (A)",
        "phi/psi Jensen-Shannon distance",
        "right-handed helices",
        "frames with a clash",
        "radius of gyration",
        "training: time of the training steps (s)",
        "training: molecules/s",
    ):
        row = next(line for line in text.splitlines() if label in line)
        assert "n/a" not in row, row
    assert "![free_energy](free_energy.png)" in text and "![ramachandran](ramachandran.png)" in text
    for figure in ("free_energy.png", "ramachandran.png"):
        data = (output / figure).read_bytes()
        assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 10_000, (figure, len(data))
    bond = json.loads((output / "bond_vae" / "report.json").read_text())
    pairwise = json.loads((output / "pairwise_vae" / "report.json").read_text())
    assert bond["package"].startswith("bond_vae") and pairwise["package"].startswith("pairwise_vae")
    assert bond["reference"]["frames"] == pairwise["reference"]["frames"]  # one reference for both
    assert "reference.npz" in pairwise["reference"]["description"]


def test_compare_refuses_missing_runs_in_one_line(tmp_path, capsys):
    script = load_script()
    assert script.main(["--runs", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: {tmp_path / 'bond_vae'}: no bond_vae run")


def test_make_compare_passes_its_arguments():
    result = subprocess.run(
        ["make", "--no-print-directory", "-n", "-C", str(ROOT), "compare", "ARGS=--num-samples 10"],
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    assert "scripts/compare_runs.py --runs runs --num-samples 10" in result.stdout
