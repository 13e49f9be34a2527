"""Writing conformations: the dataset ``.npz`` format and multi-model PDB files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from pairwise_vae.data.records import ELEMENTS, Topology


def write_conformations_npz(path: Path, coords: np.ndarray, topology: Topology, metadata: dict) -> Path:
    """Save (frames, atoms, 3) Angstrom coordinates in the dataset format read by ``load_dataset``."""
    np.savez_compressed(
        path,
        coords=coords.astype(np.float32),
        atomic_numbers=topology.atomic_numbers,
        atom_names=topology.atom_names,
        residue_ids=topology.residue_ids,
        residue_names=topology.residue_names,
        bonds=topology.bonds,
        metadata=np.array(json.dumps(metadata)),
    )
    return path


def pdb_atom_name(name: str, element: str) -> str:
    """Four-column PDB atom name: one-letter elements start in column 14 ('CA' -> ' CA ')."""
    if len(name) >= 4 or len(element) == 2:
        return f"{name:<4s}"[:4]
    return f" {name:<3s}"


def write_pdb(path: Path, coords: np.ndarray, topology: Topology, title: str) -> Path:
    """Write frames as MODEL records with CONECT bonds, readable by PyMOL, VMD and nglview.

    Args:
        path: output file.
        coords: (frames, atoms, 3) coordinates in Angstrom.
        topology: atom names, residues and bonds.
        title: text of the TITLE record.
    """
    elements = [ELEMENTS[int(z)] for z in topology.atomic_numbers]
    lines = [f"TITLE     {title[:70]}"]
    for model, frame in enumerate(coords, start=1):
        lines.append(f"MODEL     {model:4d}")
        for index, (x, y, z) in enumerate(frame):
            lines.append(
                f"HETATM{index + 1:5d} {pdb_atom_name(str(topology.atom_names[index]), elements[index])} "
                f"{str(topology.residue_names[index]):>3s} A{int(topology.residue_ids[index]):4d}    "
                f"{x:8.3f}{y:8.3f}{z:8.3f}  1.00  0.00          {elements[index]:>2s}"
            )
        lines.append("ENDMDL")
    neighbours: dict[int, list[int]] = {}
    for i, j in topology.bonds.tolist():
        neighbours.setdefault(i, []).append(j)
        neighbours.setdefault(j, []).append(i)
    for atom in sorted(neighbours):
        partners = sorted(neighbours[atom])
        for start in range(0, len(partners), 4):
            lines.append(f"CONECT{atom + 1:5d}" + "".join(f"{p + 1:5d}" for p in partners[start : start + 4]))
    lines.append("END")
    path.write_text("\n".join(lines) + "\n")
    return path
