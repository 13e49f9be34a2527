"""MD trajectories through MDTraj: each format MDTraj writes here is read back to the same frames, atoms and bonds.

The trajectories are the embedded AIB9 frames with hydrogens, three waters and a sodium ion
added (all to be selected away), written with MDTraj itself.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from bond_helpers import run_main, tiny_run_flags
from bond_vae.data.dataset import load_dataset
from bond_vae.data.records import ConformationDataset, DataError
from bond_vae.training.checkpoint import load_checkpoint

md = pytest.importorskip("mdtraj")

N_FRAMES = 24
# format -> (suffix, needs --topology, coordinate precision in Angstrom)
FORMATS = {
    "dcd": (".dcd", True, 1e-4),
    "xtc": (".xtc", True, 6e-3),  # XTC stores 0.001 nm
    "trr": (".trr", True, 1e-4),
    "netcdf": (".nc", True, 1e-4),  # AMBER NetCDF (MDTraj writes it with scipy when netCDF4 is absent)
    "multi-model pdb": (".pdb", False, 6e-4),  # 0.001 Angstrom
    "gro": (".gro", False, 6e-3),  # 0.001 nm, no bonds in the file: inferred from covalent radii
    "mdcrd": (".mdcrd", True, 6e-4),
    "xyz": (".xyz", True, 6e-4),
}


def solvated_system(aib9: ConformationDataset) -> md.Trajectory:
    """AIB9 frames (nm) with a hydrogen after each CH3/CB/N atom, then three waters and a Na+ ion."""
    topology, frames = md.Topology(), [[] for _ in range(N_FRAMES)]
    chain, residues, heavy = topology.add_chain(), {}, []
    coords = aib9.coords[:N_FRAMES].astype(np.float64)
    peptide = aib9.topology
    for index, (name, residue_id, residue_name, number) in enumerate(
        zip(peptide.atom_names, peptide.residue_ids, peptide.residue_names, peptide.atomic_numbers, strict=True)
    ):
        if residue_id not in residues:
            residues[residue_id] = topology.add_residue(str(residue_name), chain, resSeq=int(residue_id))
        atom = topology.add_atom(str(name), md.element.Element.getByAtomicNumber(int(number)), residues[residue_id])
        heavy.append(atom)
        for frame, xyz in zip(frames, coords, strict=True):
            frame.append(xyz[index])
        if name in ("CH3", "CB1", "CB2", "N"):
            # names no residue template of MDTraj's PDB reader knows, so that the bonds are the CONECT records
            hydrogen = topology.add_atom(f"HX{residues[residue_id].n_atoms}", md.element.hydrogen, residues[residue_id])
            topology.add_bond(atom, hydrogen)
            for frame, xyz in zip(frames, coords, strict=True):
                frame.append(xyz[index] + 0.6)
    for i, j in peptide.bonds:
        topology.add_bond(heavy[i], heavy[j])
    solvent = topology.add_chain()
    for number in range(3):
        water = topology.add_residue("HOH", solvent, resSeq=number + 1)
        oxygen = topology.add_atom("O", md.element.oxygen, water)
        for name in ("H1", "H2"):
            topology.add_bond(oxygen, topology.add_atom(name, md.element.hydrogen, water))
        for frame, xyz in zip(frames, coords, strict=True):
            center = xyz.mean(axis=0) + [20.0 + 4 * number, 0.0, 0.0]
            frame.extend([center, center + [0.96, 0.0, 0.0], center + [-0.24, 0.93, 0.0]])
    topology.add_atom("NA", md.element.sodium, topology.add_residue("NA", solvent, resSeq=4))
    for frame, xyz in zip(frames, coords, strict=True):
        frame.append(xyz.mean(axis=0) + [0.0, 25.0, 0.0])
    return md.Trajectory(np.array(frames) / 10.0, topology)  # MDTraj works in nanometres


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory, aib9: ConformationDataset) -> Path:
    """A folder with the system's topology (top.pdb, frame 0) and one trajectory per format."""
    folder = tmp_path_factory.mktemp("trajectories")
    system = solvated_system(aib9)
    system[0].save_pdb(str(folder / "top.pdb"))
    for suffix, _, _ in FORMATS.values():
        system.save(str(folder / f"traj{suffix}"))
    return folder


def bond_set(bonds: np.ndarray) -> set[tuple[int, int]]:
    return {tuple(sorted(bond)) for bond in bonds.tolist()}


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_each_format_reads_back_the_same_frames_atoms_and_bonds(written, aib9, name):
    suffix, needs_topology, precision = FORMATS[name]
    dataset = load_dataset(written / f"traj{suffix}", written / "top.pdb" if needs_topology else None)
    expected = aib9.topology
    assert dataset.coords.shape == (N_FRAMES, expected.n_atoms, 3)
    np.testing.assert_allclose(dataset.coords, aib9.coords[:N_FRAMES], atol=precision)  # Angstrom, not nm
    np.testing.assert_array_equal(dataset.topology.atomic_numbers, expected.atomic_numbers)
    np.testing.assert_array_equal(dataset.topology.atom_names, expected.atom_names)
    np.testing.assert_array_equal(dataset.topology.residue_ids, expected.residue_ids)
    np.testing.assert_array_equal(dataset.topology.residue_names, expected.residue_names)
    assert bond_set(dataset.topology.bonds) == bond_set(expected.bonds)


def test_stride_and_select(written, aib9):
    strided = load_dataset(written / "traj.xtc", written / "top.pdb", stride=5)
    np.testing.assert_allclose(strided.coords, aib9.coords[:N_FRAMES:5], atol=6e-3)
    aib = load_dataset(written / "traj.dcd", written / "top.pdb", select="resname AIB and not element H")
    keep = aib9.topology.residue_names == "AIB"
    np.testing.assert_allclose(aib.coords, aib9.coords[:N_FRAMES][:, keep], atol=1e-4)
    with_hydrogens = load_dataset(written / "traj.dcd", written / "top.pdb", select="resname AIB")
    assert with_hydrogens.topology.n_atoms == keep.sum() + 3 * 9  # an H on N, CB1 and CB2 of each Aib
    assert len(with_hydrogens.topology.bonds) == len(aib.topology.bonds) + 3 * 9  # the topology's bonds


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"topology_path": None}, "hold no topology; pass --topology"),
        ({"select": "resname XYZ"}, "matches 0 atom(s)"),
        ({"select": "resname ("}, "MDTraj could not read the selection"),
        ({"select": "water"}, "the bonds do not connect"),
    ],
)
def test_bad_trajectory_requests_name_the_file(written, arguments, message):
    arguments = {"topology_path": written / "top.pdb", **arguments}
    with pytest.raises(DataError, match="traj.xtc|top.pdb") as error:
        load_dataset(written / "traj.xtc", **arguments)
    assert message in str(error.value)


def test_a_topology_that_does_not_fit_is_one_line(written, tmp_path, aib9):
    other = tmp_path / "other.pdb"
    md.Trajectory(aib9.coords[:1, :10] / 10.0, solvated_system(aib9).topology.subset(range(10))).save_pdb(str(other))
    with pytest.raises(DataError, match=r"traj\.xtc: MDTraj could not read the trajectory"):
        load_dataset(written / "traj.xtc", other)


def test_without_mdtraj_the_error_names_the_extra(written, monkeypatch):
    monkeypatch.setitem(sys.modules, "mdtraj", None)  # import mdtraj raises ImportError
    with pytest.raises(DataError, match=r"traj\.xtc: .*pip install 'bond-vae\[md\]'"):
        load_dataset(written / "traj.xtc", written / "top.pdb")


@pytest.mark.slow  # a training run: about 12 CPU-s
def test_training_on_a_trajectory(written, tmp_path, capsys, aib9):
    flags = tiny_run_flags(written / "traj.xtc", tmp_path / "runs", 1, "--topology", str(written / "top.pdb"))
    assert run_main(flags + ["--stride", "2", "--validation-fraction", "0.3", "--run-name", "run"]) == 0
    assert "8 training / 4 validation frames of 58 atoms from" in capsys.readouterr().out
    run = tmp_path / "runs" / "run"
    config = json.loads((run / "config.json").read_text())
    assert (config["data"], config["topology"], config["stride"]) == (
        [str(written / "traj.xtc")],
        str(written / "top.pdb"),
        2,
    )
    # the model is of the peptide alone: hydrogens, waters and the ion were selected away
    topology = load_checkpoint(run / "best.pt")["topology"]
    assert topology["atom_names"] == aib9.topology.atom_names.tolist()
    assert {tuple(sorted(bond)) for bond in topology["bonds"].tolist()} == bond_set(aib9.topology.bonds)
    assert run_main(tiny_run_flags(written / "traj.xtc", tmp_path / "runs", 1)) == 1
    assert "pass --topology" in capsys.readouterr().err
