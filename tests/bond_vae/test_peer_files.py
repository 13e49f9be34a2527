"""Real MD files of other programs (the data of MDAnalysisTests, a test-only dependency): each trains one short
epoch of a tiny model, or is refused before training with one line that says what to do.

The molecules of more than about 60 atoms are trained on a part (--select), to keep the tests short; at a fixed
available memory a whole protein is refused (its training step would not fit) and a whole 210-atom NMR ensemble
trains, its passes without autograd taking fewer molecules at once (see bond_vae.training.memory).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from bond_helpers import run_main, tiny_run_flags
from bond_vae.sampling import inference
from bond_vae.training import memory, train, validation

pytest.importorskip("mdtraj")
datafiles = pytest.importorskip("MDAnalysisTests.datafiles")

GIB = 2**30
HEAVY = "and not element H"
# name -> (trajectory, topology or None, --select or None, atoms of the model)
TRAINED = {
    "AMBER prmtop + bzip2 mdcrd (capped alanine)": (datafiles.TRJpbc_bz2, datafiles.PRMpbc, None, 10),
    "AMBER NetCDF + prmtop (Val-Glu-Val in water)": (datafiles.NCDF, datafiles.PRMncdf, None, 24),
    "AMBER NetCDF + bzip2 parm7 (trpzip2 in water, 4 residues)": (
        datafiles.NCDFtruncoct,
        datafiles.PRM7,
        f"resid 0 to 3 {HEAVY}",
        41,
    ),
    "CHARMM PSF + DCD (adenylate kinase, 5 residues)": (datafiles.DCD, datafiles.PSF, f"resid 1 to 5 {HEAVY}", 43),
    "GROMACS XTC + PDB (adenylate kinase in water, 5 residues)": (
        datafiles.XTC,
        datafiles.PDB,
        f"resid 1 to 5 {HEAVY}",
        43,
    ),
    "multi-model NMR PDB (neopetrosiamide, 6 residues)": (datafiles.PDB_multiframe, None, f"resid 1 to 6 {HEAVY}", 45),
}


def peer_flags(trajectory: str, topology: str | None, select: str | None, output_dir: Path) -> list[str]:
    """A tiny eager CPU run of one epoch on 8 frames in batches of 2 (safe for molecules of any size)."""
    flags = tiny_run_flags(Path(trajectory), output_dir, 1, "--batch-size", "2", "--max-frames", "8")
    flags += ["--run-name", "run"]
    flags += ["--topology", topology] if topology is not None else []
    return flags + (["--select", select] if select is not None else [])


def assert_trained(run: Path) -> None:
    """best.pt and a validation record with a finite loss."""
    assert (run / "best.pt").is_file()
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    validation = [record for record in records if record["split"] == "validation"]
    assert validation and math.isfinite(validation[-1]["loss"])


@pytest.mark.slow  # a minute each on a busy CPU: training, validation and the evaluation figures
@pytest.mark.parametrize("name", sorted(TRAINED))
def test_a_peer_file_trains_one_epoch(name, tmp_path, capsys):
    trajectory, topology, select, atoms = TRAINED[name]
    assert run_main(peer_flags(trajectory, topology, select, tmp_path)) == 0
    out = capsys.readouterr().out
    assert f"frames of {atoms} atoms from {trajectory}" in out
    assert_trained(tmp_path / "run")


@pytest.mark.slow
def test_a_three_atom_molecule_in_water_trains(tmp_path):
    flags = peer_flags(datafiles.TRJ_NCBOX, datafiles.PRM_NCBOX, None, tmp_path)
    assert run_main(flags) == 0
    assert_trained(tmp_path / "run")


def refusal(flags: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """The one stderr line of a refused run (exit code 2, no traceback)."""
    assert run_main(flags) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


def available(monkeypatch: pytest.MonkeyPatch, gib: float) -> None:
    """The machine has ``gib`` GiB available, whatever this one has."""
    monkeypatch.setattr(memory, "available_bytes", lambda device: int(gib * GIB))


def test_a_whole_protein_is_refused_before_training(monkeypatch, tmp_path, capsys):
    available(monkeypatch, 4)  # a step of 1656 atoms needs several GiB per molecule
    line = refusal(peer_flags(datafiles.DCD, datafiles.PSF, None, tmp_path), capsys)
    assert line.startswith(f"error: {datafiles.DCD}: 1656 atoms at --batch-size 2 need about ")
    assert "GiB per training step, more than the 4.0 GiB available" in line
    assert line.endswith("even --batch-size 1 does not fit: use fewer atoms (--select)")
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_a_whole_nmr_ensemble_trains_decoding_fewer_molecules_at_once(monkeypatch, tmp_path, capsys):
    available(monkeypatch, 2)  # enough for a step of 2 molecules, not for decoding hundreds at once
    batches = []

    def recorded(*args):
        batches.append(memory.molecules_at_once(*args))
        return batches[-1]

    monkeypatch.setattr(inference, "molecules_at_once", recorded)
    # fewer samples than a run draws (512 each validation pass, 1,000 for the report): the batches are the point
    monkeypatch.setattr(validation, "EVALUATION_SAMPLES", 64)
    monkeypatch.setattr(train, "TRAINING_REPORT_SAMPLES", 64)
    assert run_main(peer_flags(datafiles.PDB_multiframe, None, None, tmp_path)) == 0
    assert "frames of 210 atoms" in capsys.readouterr().out
    assert_trained(tmp_path / "run")
    assert (tmp_path / "run" / "evaluation" / "report.json").is_file()
    assert batches and 1 < max(batches) < 256, "the validation pass and the report decode in smaller batches"


def test_a_whole_nmr_ensemble_at_the_default_batch_is_told_a_batch_that_fits(monkeypatch, tmp_path, capsys):
    available(monkeypatch, 2)
    flags = peer_flags(datafiles.PDB_multiframe, None, None, tmp_path) + ["--batch-size", "32"]
    line = refusal(flags, capsys)
    assert line.startswith(f"error: {datafiles.PDB_multiframe}: 210 atoms at --batch-size 32 need about ")
    batch = int(line.split("use --batch-size ")[1].split()[0])
    assert 1 < batch < 32
    assert line.endswith(f"use --batch-size {batch} or fewer atoms (--select)")


def test_a_damaged_compressed_file_is_one_line(tmp_path, capsys):
    damaged = tmp_path / "capped-ala.mdcrd.bz2"
    damaged.write_bytes(Path(datafiles.TRJpbc_bz2).read_bytes()[:200])  # the end of the bzip2 stream is missing
    assert run_main(peer_flags(str(damaged), datafiles.PRMpbc, None, tmp_path)) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: {damaged}: could not decompress the file (")
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
