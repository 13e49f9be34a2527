"""The command line: help, and one clear error line with a non-zero exit for bad input."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from pairwise_vae.train import main

from pairwise_helpers import TINY_MODEL_FLAGS, write_npz


def test_help_explains_the_options():
    result = subprocess.run([sys.executable, "-m", "pairwise_vae", "--help"], capture_output=True, text=True, check=False)
    assert result.returncode == 0
    for flag in ("--data", "--epochs", "--resume", "--device", "--wandb", "--encoder-cutoff", "--beta"):
        assert flag in result.stdout
    assert "runs/pairwise_vae" in result.stdout


def bad_inputs(tmp_path, aib9):
    """(name, argv, text the error line must contain) for each kind of bad input."""
    coords = aib9.coords[:40]
    nan_coords = coords.copy()
    nan_coords[7, 3, 1] = np.nan
    wrong_shape = tmp_path / "wrong_shape.npy"
    np.save(wrong_shape, coords[:, :, :2])
    other_atoms = tmp_path / "other_atoms.npy"
    np.save(other_atoms, coords[:, :50])
    atom_table = tmp_path / "atoms.npy"
    np.save(atom_table, np.stack([aib9.topology.atom_names, aib9.topology.residue_ids.astype(str)], axis=1))
    text_file = tmp_path / "notes.npz"
    text_file.write_text("not an archive")
    empty = tmp_path / "empty.npz"
    empty.touch()
    foreign = tmp_path / "bond.pt"
    torch.save({"format": "bond_vae.checkpoint", "format_version": 1}, foreign)
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"\x80\x04garbage")
    return [
        ("missing file", ["--data", str(tmp_path / "nope.npz")], "nope.npz: file not found"),
        ("empty file", ["--data", str(empty)], "file is empty"),
        ("not an archive", ["--data", str(text_file)], "not a readable .npz"),
        ("wrong shape", ["--data", str(wrong_shape), "--topology", str(atom_table)], "shape (..., atoms, 3)"),
        ("nan coordinates", ["--data", str(write_npz(tmp_path / "nan.npz", aib9, nan_coords))], "frame 7"),
        ("atom count vs topology", ["--data", str(other_atoms), "--topology", str(atom_table)], "coordinates have 50"),
        ("atom count vs atomic numbers", ["--data", str(write_npz(tmp_path / "n.npz", aib9, coords[:, :57]))], "57 atoms"),
        ("bond out of range", ["--data", str(write_npz(tmp_path / "b.npz", aib9, coords, bonds=aib9.topology.bonds + 5))], "bond atom indices"),
        ("nanometres", ["--data", str(write_npz(tmp_path / "nm.npz", aib9, coords / 10))], "nanometres"),
        ("fewer frames than a batch", ["--data", str(write_npz(tmp_path / "few.npz", aib9, coords[:10]))], "fewer than --batch-size"),
        ("unknown device", ["--device", "tpu"], "tpu"),
        ("cuda absent", ["--device", "cuda:0"], "cuda:0"),
        ("foreign checkpoint", ["--resume", str(foreign)], "bond_vae checkpoint"),
        ("corrupt checkpoint", ["--resume", str(corrupt)], "not a readable checkpoint"),
        ("missing checkpoint", ["--resume", str(tmp_path / "gone.pt")], "checkpoint not found"),
        ("negative epochs", ["--epochs", "0"], "--epochs must be at least 1"),
    ]


def test_bad_inputs_give_one_clear_line(aib9, tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("the 'cuda absent' case needs a machine without CUDA")
    for name, argv, expected in bad_inputs(tmp_path, aib9):
        with pytest.raises(SystemExit) as exit_info:
            main([*argv, "--wandb", "disabled", "--output-dir", str(tmp_path / "runs"), *TINY_MODEL_FLAGS])
        err = capsys.readouterr().err.strip()
        assert exit_info.value.code != 0, name
        assert len(err.splitlines()) == 1 and err.startswith("error: "), f"{name}: {err!r}"
        assert expected in err, f"{name}: {err!r}"
        assert "Traceback" not in err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir()), "no run folder for a failed start"


@pytest.mark.parametrize("argv", [["--epochs", "many"], ["--wandb", "sometimes"], ["--no-such-flag"]])
def test_bad_flags_exit_with_usage_error(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert "error:" in capsys.readouterr().err
