"""Data loading: the accepted formats, inferred bonds, the block split, neighbour search."""

from __future__ import annotations

import numpy as np
import torch
from bond_vae.data.dataset import load_dataset
from bond_vae.data.split import split_frames
from bond_vae.data.structure_files import write_pdb
from bond_vae.data.topology import infer_bonds, load_topology
from bond_vae.model.graph import bond_edges, merge_edges, radius_edges


def test_embedded_dataset_is_aib9(aib9):
    assert aib9.coords.shape[1:] == (58, 3) and aib9.coords.dtype == np.float32
    assert len(aib9.topology.bonds) == 57
    assert sorted(set(aib9.topology.residue_names)) == ["ACE", "AIB", "NH2"]
    lengths = np.linalg.norm(
        aib9.coords[:, aib9.topology.bonds[:, 0]] - aib9.coords[:, aib9.topology.bonds[:, 1]], axis=-1
    )
    assert 1.1 < lengths.min() and lengths.max() < 1.8


def test_inferred_bonds_match_the_recorded_ones(aib9):
    inferred = {tuple(b) for b in infer_bonds(aib9.coords[:20], aib9.topology.atomic_numbers)}
    assert inferred == {tuple(sorted(b)) for b in aib9.topology.bonds.tolist()}


def test_npy_with_pdb_topology(aib9, tmp_path):
    coords = tmp_path / "coords.npy"
    np.save(coords, aib9.coords[:5].reshape(1, 5, 58, 3))
    pdb = tmp_path / "top.pdb"
    lines = [
        f"HETATM{i + 1:5d} {name:<4s} {res:>3s} A{rid:4d}    {x:8.3f}{y:8.3f}{z:8.3f}  1.00  0.00"
        for i, (name, res, rid, (x, y, z)) in enumerate(
            zip(
                aib9.topology.atom_names,
                aib9.topology.residue_names,
                aib9.topology.residue_ids,
                aib9.coords[0],
                strict=True,
            )
        )
    ]
    pdb.write_text("\n".join(lines + ["END"]) + "\n")
    dataset = load_dataset(coords, pdb)
    assert dataset.coords.shape == (5, 58, 3)
    assert (dataset.topology.atomic_numbers == aib9.topology.atomic_numbers).all()
    assert {tuple(b) for b in dataset.topology.bonds.tolist()} == {
        tuple(sorted(b)) for b in aib9.topology.bonds.tolist()
    }


def test_npy_with_atom_table(aib9, tmp_path):
    coords = tmp_path / "coords.npy"
    np.save(coords, aib9.coords[:5])
    table = tmp_path / "atoms.npy"
    np.save(table, np.stack([aib9.topology.atom_names, aib9.topology.residue_ids.astype(str)], axis=1))
    dataset = load_dataset(coords, table)
    assert (dataset.topology.atomic_numbers == aib9.topology.atomic_numbers).all()
    assert len(dataset.topology.bonds) == 57


def test_split_holds_out_contiguous_blocks():
    train, validation = split_frames(1000, 0.1, seed=0)
    assert len(validation) == 100 and len(set(train) | set(validation)) == 1000
    assert not set(train) & set(validation)
    assert (np.diff(validation) == 1).sum() >= 60, "validation frames should come in 30 runs of 3 or 4"
    assert (split_frames(1000, 0.1, seed=0)[1] == validation).all()


def test_split_spreads_validation_over_every_part_of_the_file():
    """Bug: ten blocks chosen at random held 0 to 3 blocks of each of AIB9's six replicas."""
    for seed in range(5):
        _, validation = split_frames(9000, 0.1, seed)
        per_replica = np.bincount(validation // 1500, minlength=6)
        assert per_replica.min() >= 140 and per_replica.max() <= 160, (seed, per_replica)


def test_radius_edges_are_exact_and_match_the_dense_search(aib9, monkeypatch):
    positions = torch.from_numpy(aib9.coords[:3])
    edges = radius_edges(positions, cutoff=5.0)
    distances = torch.cdist(positions, positions)
    expected = int(((distances < 5.0) & ~torch.eye(58, dtype=torch.bool)).sum())
    assert edges.shape[1] == expected, "no neighbour may be dropped"
    monkeypatch.setattr("bond_vae.model.graph.torch_cluster", None)
    dense = radius_edges(positions, cutoff=5.0)
    assert torch.equal(dense, edges)


def test_bond_edges_and_merge():
    bonds = torch.tensor([[0, 1], [1, 2]])
    edges = bond_edges(bonds, n_molecules=2, n_atoms=3)
    assert sorted(map(tuple, edges.T.tolist())) == [(0, 1), (1, 0), (1, 2), (2, 1), (3, 4), (4, 3), (4, 5), (5, 4)]
    merged = merge_edges(edges, edges, n_nodes=6)
    assert merged.shape[1] == 8


def test_pdb_bonds_are_read_from_conect_after_all_models(aib9, tmp_path):
    """Bug (pairwise_vae): the reader stopped at the first ENDMDL, so the CONECT records that
    write_pdb puts after all models were ignored and the bonds guessed from radii instead."""
    topology = aib9.topology
    kept = topology.bonds[1:]  # one bond fewer than the radii would give: only CONECT can say so
    written = type(topology)(
        topology.atomic_numbers, topology.atom_names, topology.residue_ids, topology.residue_names, kept
    )
    pdb = write_pdb(tmp_path / "models.pdb", aib9.coords[:3], written, "three models")
    assert pdb.read_text().index("CONECT") > pdb.read_text().rindex("ENDMDL")
    read = load_topology(pdb, aib9.coords[:3])
    assert {tuple(b) for b in read.bonds.tolist()} == {tuple(sorted(b)) for b in kept.tolist()}
    assert read.atom_names.tolist() == topology.atom_names.tolist()
