"""Molecules from files: elements from atom names, bonds from covalent radii, topology files."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pairwise_vae.data.records import ATOMIC_NUMBERS, BOND_TOLERANCE, COVALENT_RADII, ELEMENTS, DataError, Topology


def element_of(atom_name: str) -> str:
    """Element symbol guessed from a PDB-style atom name ('CA' -> 'C', 'CL1' -> 'Cl', 'BR' -> 'Br')."""
    letters = "".join(ch for ch in atom_name if ch.isalpha())
    if letters[:2].capitalize() in ("Cl", "Br"):
        return letters[:2].capitalize()
    return letters[:1].upper()


def infer_bonds(coords: np.ndarray, atomic_numbers: np.ndarray) -> np.ndarray:
    """Covalent bonds from radii: pairs closer than r_i + r_j + 0.45 Angstrom in the median frame.

    Args:
        coords: (frames, atoms, 3) Angstrom.
        atomic_numbers: (atoms,).

    Returns:
        (n_bonds, 2) int64 with i < j.
    """
    radii = np.array([COVALENT_RADII[ELEMENTS[int(z)]] for z in atomic_numbers])
    sample = coords[:: max(1, len(coords) // 50)]
    distances = np.median(np.linalg.norm(sample[:, :, None] - sample[:, None, :], axis=-1), axis=0)
    limit = radii[:, None] + radii[None, :] + BOND_TOLERANCE
    i, j = np.nonzero(np.triu(distances < limit, k=1))
    return np.stack([i, j], axis=1).astype(np.int64)


def load_topology(path: Path, coords: np.ndarray) -> Topology:
    """Read a topology from a PDB file or an atom-table ``.npy`` of [atom_name, residue_index] rows.

    Bonds come from CONECT records when a PDB has them, else from covalent radii on ``coords``.
    """
    if not path.exists():
        raise DataError(f"{path}: topology file not found")
    if path.suffix.lower() == ".pdb":
        names, residue_ids, residue_names, bonds = _read_pdb(path)
    elif path.suffix.lower() == ".npy":
        try:
            table = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError) as error:
            raise DataError(f"{path}: not a readable atom table ({error})") from None
        if table.ndim != 2 or table.shape[1] != 2:
            raise DataError(
                f"{path}: atom table must have shape (atoms, 2) of [atom_name, residue_index], got {table.shape}"
            )
        names = [str(name).strip() for name in table[:, 0]]
        try:
            residue_ids = [int(residue) for residue in table[:, 1]]
        except ValueError:
            raise DataError(f"{path}: second column of the atom table must hold residue indices") from None
        residue_names, bonds = ["UNK"] * len(names), None
    else:
        raise DataError(f"{path}: unsupported topology type {path.suffix!r}; expected .pdb or .npy")
    elements = [element_of(name) for name in names]
    unknown = sorted({e for e in elements if e not in ATOMIC_NUMBERS})
    if unknown:
        raise DataError(f"{path}: cannot tell the element of atoms named like {unknown}")
    atomic_numbers = np.array([ATOMIC_NUMBERS[e] for e in elements], dtype=np.int64)
    if bonds is None:
        if len(names) != coords.shape[1]:
            raise DataError(f"{path}: topology has {len(names)} atoms but the coordinates have {coords.shape[1]}")
        bonds = infer_bonds(coords, atomic_numbers)
    return Topology(
        atomic_numbers=atomic_numbers,
        atom_names=np.array(names),
        residue_ids=np.array(residue_ids, dtype=np.int64),
        residue_names=np.array(residue_names),
        bonds=as_bonds(np.array(bonds), path),
    )


def _read_pdb(path: Path) -> tuple[list[str], list[int], list[str], list[tuple[int, int]] | None]:
    names, residue_ids, residue_names, serial_to_index, bonds = [], [], [], {}, set()
    first_model_read = False
    for line in path.read_text(errors="replace").splitlines():
        record = line[:6].strip()
        if record in ("ATOM", "HETATM") and not first_model_read:
            try:
                serial_to_index[int(line[6:11])] = len(names)
                residue_ids.append(int(line[22:26]))
            except ValueError:
                raise DataError(f"{path}: malformed {record} line: {line.rstrip()!r}") from None
            names.append(line[12:16].strip())
            residue_names.append(line[17:20].strip() or "UNK")
        elif record == "CONECT":
            fields = [int(line[i : i + 5]) for i in range(6, len(line.rstrip()), 5) if line[i : i + 5].strip()]
            bonds.update(tuple(sorted((fields[0], other))) for other in fields[1:])
        elif record == "ENDMDL" and names:
            first_model_read = True
    if not names:
        raise DataError(f"{path}: no ATOM or HETATM records")
    known = [
        (serial_to_index[a], serial_to_index[b])
        for a, b in sorted(bonds)
        if a in serial_to_index and b in serial_to_index
    ]
    return names, residue_ids, residue_names, known or None


def connected_components(bonds: np.ndarray, n_atoms: int) -> np.ndarray:
    """(atoms,) molecule label of each atom: 0 for the molecule of atom 0, then 1, 2, ... in atom order."""
    parent = list(range(n_atoms))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in bonds:
        parent[root(int(i))] = root(int(j))
    labels: dict[int, int] = {}
    return np.array([labels.setdefault(root(i), len(labels)) for i in range(n_atoms)], dtype=np.int64)


def as_bonds(bonds: np.ndarray, path: Path) -> np.ndarray:
    if bonds.ndim != 2 or bonds.shape[1] != 2 or not np.issubdtype(bonds.dtype, np.integer):
        raise DataError(
            f"{path}: bonds must be an integer array of shape (n_bonds, 2), got {bonds.shape} {bonds.dtype}"
        )
    return bonds.astype(np.int64)
