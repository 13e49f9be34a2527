"""The command line: help, and one clear error line with a non-zero exit for bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pairwise_helpers import TINY_MODEL_FLAGS, write_npz
from pairwise_vae.training.train import main


def test_help_explains_the_options(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--data", "--epochs", "--resume", "--device", "--wandb", "--encoder-cutoff", "--beta", "--parity"):
        assert flag in out
    assert "runs/pairwise_vae" in out


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
    torch.save({"format": "bond_vae.checkpoint", "format_version": 2}, foreign)
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"\x80\x04garbage")
    truncated = tmp_path / "truncated.npz"
    full = write_npz(tmp_path / "full.npz", aib9, coords)
    truncated.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    duplicate = coords.copy()
    duplicate[:, 10] = duplicate[:, 11]
    infinite = coords.copy()
    infinite[12, 0, 0] = np.inf
    newer = tmp_path / "newer.pt"
    torch.save({"format": "pairwise_vae.checkpoint", "format_version": 99, "package_version": "9.0"}, newer)
    table_wrong_shape = tmp_path / "table3.npy"
    np.save(table_wrong_shape, np.zeros((58, 3), dtype=str))
    xyz = tmp_path / "traj.xyz"
    xyz.write_text("58\n")
    text = tmp_path / "traj.txt"
    text.write_text("58\n")
    not_a_dir = tmp_path / "file_not_dir"
    not_a_dir.write_text("")
    no_atoms_pdb = tmp_path / "empty.pdb"
    no_atoms_pdb.write_text("REMARK nothing here\nEND\n")
    return [
        ("truncated archive", ["--data", str(truncated)], "not a readable .npz"),
        ("unsupported type", ["--data", str(text)], "unsupported file type"),
        ("trajectory without topology", ["--data", str(xyz)], ".xyz files hold no topology; pass --topology"),
        ("unreadable trajectory topology", ["--data", str(xyz), "--topology", str(no_atoms_pdb)], "MDTraj could not"),
        ("stride below 1", ["--stride", "0"], "--stride must be at least 1"),
        (
            "integer coordinates",
            ["--data", str(write_npz(tmp_path / "i.npz", aib9, coords.astype(np.int32)))],
            "floating point",
        ),
        ("infinite coordinates", ["--data", str(write_npz(tmp_path / "inf.npz", aib9, infinite))], "frame 12"),
        ("duplicate atoms", ["--data", str(write_npz(tmp_path / "dup.npz", aib9, duplicate))], "duplicate atoms"),
        (
            "disconnected molecule",
            ["--data", str(write_npz(tmp_path / "cut.npz", aib9, coords, bonds=aib9.topology.bonds[1:]))],
            "one molecule",
        ),
        (
            "float bonds",
            ["--data", str(write_npz(tmp_path / "fb.npz", aib9, coords, bonds=aib9.topology.bonds.astype(float)))],
            "integer array",
        ),
        (
            "missing atomic numbers",
            ["--data", str(write_npz(tmp_path / "noz.npz", aib9, coords, atomic_numbers=np.zeros(3, dtype=np.int64)))],
            "atomic_numbers lists 3",
        ),
        ("npy without topology", ["--data", str(other_atoms)], "need a topology"),
        (
            "missing topology",
            ["--data", str(other_atoms), "--topology", str(tmp_path / "none.pdb")],
            "topology file not found",
        ),
        (
            "atom table shape",
            ["--data", str(other_atoms), "--topology", str(table_wrong_shape)],
            "atom table must have shape",
        ),
        ("pdb without atoms", ["--data", str(other_atoms), "--topology", str(no_atoms_pdb)], "no ATOM or HETATM"),
        ("newer checkpoint format", ["--resume", str(newer)], "upgrade"),
        (
            "output folder is a file",
            ["--data", str(full), "--batch-size", "8", "--output-dir", str(not_a_dir / "runs")],
            "cannot create the run folder",
        ),
        ("validation fraction", ["--validation-fraction", "1.5"], "--validation-fraction"),
        ("latent dimension", ["--latent-dim", "0"], "--latent-dim"),
        ("pair channels", ["--decoder-pair-channels", "0"], "--decoder-pair-channels must be at least 1"),
        ("vector channels", ["--encoder-vector-channels", "0"], "--encoder-vector-channels must be at least 1"),
        ("negative loss weight", ["--steric-weight", "-1"], "--steric-weight must be non-negative"),
        ("negative aligned weight", ["--aligned-weight", "-0.1"], "--aligned-weight must be non-negative"),
        (
            "negative stereocentre weight",
            ["--stereocentre-weight", "-1"],
            "--stereocentre-weight must be non-negative",
        ),
        ("steric distance", ["--steric-distance", "0"], "--steric-distance must be positive"),
        ("heads do not divide channels", ["--encoder-hidden-channels", "30", "--encoder-num-heads", "4"], "divisible"),
        ("missing file", ["--data", str(tmp_path / "nope.npz")], "nope.npz: file not found"),
        ("empty file", ["--data", str(empty)], "file is empty"),
        ("not an archive", ["--data", str(text_file)], "not a readable .npz"),
        ("wrong shape", ["--data", str(wrong_shape), "--topology", str(atom_table)], "shape (..., atoms, 3)"),
        ("nan coordinates", ["--data", str(write_npz(tmp_path / "nan.npz", aib9, nan_coords))], "frame 7"),
        ("atom count vs topology", ["--data", str(other_atoms), "--topology", str(atom_table)], "coordinates have 50"),
        (
            "atom count vs atomic numbers",
            ["--data", str(write_npz(tmp_path / "n.npz", aib9, coords[:, :57]))],
            "57 atoms",
        ),
        (
            "bond out of range",
            ["--data", str(write_npz(tmp_path / "b.npz", aib9, coords, bonds=aib9.topology.bonds + 5))],
            "bond atom indices",
        ),
        ("nanometres", ["--data", str(write_npz(tmp_path / "nm.npz", aib9, coords / 10))], "nanometres"),
        (
            "fewer frames than a batch",
            ["--data", str(write_npz(tmp_path / "few.npz", aib9, coords[:10]))],
            "fewer than --batch-size",
        ),
        ("unknown device", ["--device", "tpu"], "tpu"),
        ("validation fraction zero", ["--validation-fraction", "0"], "--validation-fraction"),
        (
            "chiral parity on achiral data",
            ["--data", str(full), "--batch-size", "8", "--parity", "chiral"],
            "stereocentres",
        ),
        ("foreign checkpoint", ["--resume", str(foreign)], "bond_vae checkpoint"),
        ("corrupt checkpoint", ["--resume", str(corrupt)], "not a readable checkpoint"),
        ("missing checkpoint", ["--resume", str(tmp_path / "gone.pt")], "checkpoint not found"),
        ("negative epochs", ["--epochs", "0"], "--epochs must be at least 1"),
    ] + ([] if torch.cuda.is_available() else [("cuda absent", ["--device", "cuda:0"], "cuda:0")])


def test_bad_inputs_give_one_clear_line(aib9, tmp_path, capsys):
    """Every case runs on the CPU (a case's own --device comes later and wins), also where CUDA exists."""
    cases = bad_inputs(tmp_path, aib9)
    assert len(cases) >= 30
    for name, argv, expected in cases:
        with pytest.raises(SystemExit) as exit_info:
            main(
                [
                    "--wandb",
                    "disabled",
                    "--no-compile",
                    "--device",
                    "cpu",
                    "--output-dir",
                    str(tmp_path / "runs"),
                    *TINY_MODEL_FLAGS,
                    *argv,
                ]
            )
        err = capsys.readouterr().err.strip()
        assert exit_info.value.code != 0, name
        assert len(err.splitlines()) == 1 and err.startswith("error: "), f"{name}: {err!r}"
        assert expected in err, f"{name}: {err!r}"
        assert "Traceback" not in err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir()), (
        "no run folder for a failed start"
    )


@pytest.mark.parametrize(
    "argv", [["--epochs", "many"], ["--wandb", "sometimes"], ["--parity", "sideways"], ["--no-such-flag"]]
)
def test_bad_flags_exit_with_usage_error(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert "error:" in capsys.readouterr().err


def run_with_one_line_error(argv, capsys) -> str:
    """Run the training command on the CPU; return its single error line (asserting there is one)."""
    with pytest.raises(SystemExit) as exit_info:
        main(["--wandb", "disabled", "--no-compile", "--device", "cpu", *TINY_MODEL_FLAGS, *argv])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 1, err
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    return err


def test_validation_fraction_zero_is_refused_with_one_line(tiny_npz, tmp_path, capsys):
    """Bug: --validation-fraction 0 was accepted, then the first validation raised (traceback, epoch lost)."""
    argv = ["--data", str(tiny_npz), "--batch-size", "8", "--epochs", "1", "--output-dir", str(tmp_path / "runs")]
    err = run_with_one_line_error([*argv, "--validation-fraction", "0"], capsys)
    assert "--validation-fraction" in err
    assert not (tmp_path / "runs").exists()
