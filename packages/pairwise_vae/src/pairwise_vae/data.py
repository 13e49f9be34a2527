"""Loading and validating conformation datasets.

Accepted inputs:

* ``.npz`` in the dataset format: ``coords`` (frames, atoms, 3) float Angstrom,
  ``atomic_numbers`` (atoms,), ``atom_names``, ``residue_ids``, ``residue_names``,
  ``bonds`` (n_bonds, 2) int; bonds are optional. A ``metadata`` entry (JSON text, written
  by ``sample``) describes the file for people and is not read.
* ``.npy`` of shape (..., atoms, 3) in Angstrom, with a topology given separately: a PDB
  file, or an atom table ``.npy`` of ``[atom_name, residue_index]`` rows.
* MD trajectories (DCD, XTC, TRR, NetCDF, multi-model PDB, GRO, ...) with a topology, read
  through MDTraj (the optional extra ``md``; see :mod:`pairwise_vae.trajectory`).

Where a file gives no bonds they are inferred from covalent radii. Every problem is
reported as a :class:`DataError` whose message names the file and the problem.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch

# The embedded AIB9 ensemble is package data: found in a source checkout and in an installed wheel alike.
DEFAULT_DATASET = Path(str(resources.files(__package__) / "resources" / "aib9.npz"))

COVALENT_RADII = {"H": 0.31, "C": 0.76, "N": 0.71, "O": 0.66, "F": 0.57, "P": 1.07, "S": 1.05, "Cl": 1.02, "Br": 1.20}
ATOMIC_NUMBERS = {"H": 1, "C": 6, "N": 7, "O": 8, "F": 9, "P": 15, "S": 16, "Cl": 17, "Br": 35}
ELEMENTS = {number: symbol for symbol, number in ATOMIC_NUMBERS.items()}
BOND_TOLERANCE = 0.45
PLAUSIBLE_BOND_LENGTH = (0.9, 2.2)
MIN_ATOM_SEPARATION = 0.5


class DataError(ValueError):
    """A dataset or topology file that cannot be used; the message names the file."""


@dataclass
class Topology:
    """What is fixed across frames: one entry per atom, plus the covalent bonds."""

    atomic_numbers: np.ndarray
    atom_names: np.ndarray
    residue_ids: np.ndarray
    residue_names: np.ndarray
    bonds: np.ndarray

    @property
    def n_atoms(self) -> int:
        return len(self.atomic_numbers)

    def to_record(self) -> dict[str, Any]:
        """The topology as tensors and lists, as a checkpoint stores it (``torch.load(weights_only=True)`` reads it)."""
        return {
            "atomic_numbers": torch.from_numpy(self.atomic_numbers),
            "bonds": torch.from_numpy(self.bonds),
            "atom_names": self.atom_names.tolist(),
            "residue_ids": self.residue_ids.tolist(),
            "residue_names": self.residue_names.tolist(),
        }

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Topology:
        """Inverse of :meth:`to_record`."""
        return cls(
            atomic_numbers=record["atomic_numbers"].numpy(),
            atom_names=np.array(record["atom_names"]),
            residue_ids=np.array(record["residue_ids"]),
            residue_names=np.array(record["residue_names"]),
            bonds=record["bonds"].numpy(),
        )


@dataclass
class ConformationDataset:
    """Frames of one molecule: ``coords`` (frames, atoms, 3) float32 in Angstrom."""

    coords: np.ndarray
    topology: Topology
    source: Path

    def __len__(self) -> int:
        return len(self.coords)


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


def load_dataset(
    path: Path | str | None = None,
    topology_path: Path | str | None = None,
    select: str | None = None,
    stride: int = 1,
) -> ConformationDataset:
    """Load and validate a dataset file; ``path=None`` loads the embedded AIB9 ensemble.

    Args:
        path: ``.npz``, ``.npy`` (with ``topology_path``) or an MD trajectory read through MDTraj.
        topology_path: topology of ``.npy`` coordinates or of a trajectory.
        select: atoms of a trajectory to keep (an MDTraj selection); None: the default of
            :func:`trajectory.load_trajectory`.
        stride: keep every ``stride``-th frame.
    """
    path = Path(path) if path is not None else DEFAULT_DATASET
    topology_path = Path(topology_path) if topology_path is not None else None
    if stride < 1:
        raise DataError(f"{path}: --stride must be at least 1, got {stride}")
    if not path.exists():
        hint = " (the embedded AIB9 dataset; reinstall the package or pass --data)" if path == DEFAULT_DATASET else ""
        raise DataError(f"{path}: file not found{hint}")
    if path.is_dir():
        raise DataError(f"{path}: is a directory, expected a .npz or .npy file or an MD trajectory")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: file is empty")
    suffix = path.suffix.lower()
    if select is not None and suffix in (".npz", ".npy"):
        raise DataError(f"{path}: --select applies to MD trajectories read through MDTraj, not to {suffix} files")
    if suffix == ".npz":
        if topology_path is not None:
            raise DataError(f"{topology_path}: a topology is only used with .npy coordinates; {path} carries its own")
        dataset = _load_npz(path)
    elif suffix == ".npy":
        if topology_path is None:
            raise DataError(f"{path}: .npy coordinates need a topology (--topology FILE.pdb or an atom-table .npy)")
        dataset = _load_npy(path, topology_path)
    else:
        from pairwise_vae import trajectory  # MDTraj is an optional extra: imported only for trajectories

        if not trajectory.is_trajectory(path):
            raise DataError(
                f"{path}: unsupported file type {trajectory.file_suffix(path)!r}; expected .npz, .npy or an MD "
                f"trajectory ({' '.join(trajectory.TRAJECTORY_SUFFIXES)})"
            )
        dataset = trajectory.load_trajectory(path, topology_path, select, stride)
        stride = 1  # MDTraj applied it while reading
    dataset.coords = dataset.coords[::stride]
    validate(dataset)
    return dataset


def _load_npz(path: Path) -> ConformationDataset:
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as error:
        raise DataError(f"{path}: not a readable .npz archive ({error})") from None
    missing = [key for key in ("coords", "atomic_numbers") if key not in arrays]
    if missing:
        raise DataError(f"{path}: missing array(s) {', '.join(missing)}")
    coords = _as_coordinates(arrays["coords"], path)
    n_atoms = coords.shape[1]
    atomic_numbers = arrays["atomic_numbers"]
    if atomic_numbers.ndim != 1 or not np.issubdtype(atomic_numbers.dtype, np.integer):
        raise DataError(
            f"{path}: atomic_numbers must be a 1-D integer array, "
            f"got shape {atomic_numbers.shape} {atomic_numbers.dtype}"
        )
    if len(atomic_numbers) != n_atoms:
        raise DataError(f"{path}: coords have {n_atoms} atoms but atomic_numbers lists {len(atomic_numbers)}")
    unknown = sorted(set(int(z) for z in atomic_numbers) - set(ELEMENTS))
    if unknown:
        raise DataError(f"{path}: unsupported atomic number(s) {unknown}")
    per_atom = {}
    for key, default in (
        ("atom_names", np.array([ELEMENTS[int(z)] + str(i + 1) for i, z in enumerate(atomic_numbers)])),
        ("residue_ids", np.ones(n_atoms, dtype=np.int64)),
        ("residue_names", np.full(n_atoms, "UNK")),
    ):
        value = arrays.get(key, default)
        if value.shape != (n_atoms,):
            raise DataError(f"{path}: {key} has shape {value.shape}, expected ({n_atoms},)")
        per_atom[key] = value
    bonds = arrays["bonds"] if "bonds" in arrays else infer_bonds(coords, atomic_numbers)
    topology = Topology(
        atomic_numbers=atomic_numbers.astype(np.int64),
        atom_names=per_atom["atom_names"].astype(str),
        residue_ids=per_atom["residue_ids"].astype(np.int64),
        residue_names=per_atom["residue_names"].astype(str),
        bonds=_as_bonds(bonds, path),
    )
    return ConformationDataset(coords=coords, topology=topology, source=path)


def _load_npy(path: Path, topology_path: Path) -> ConformationDataset:
    try:
        raw = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as error:
        raise DataError(f"{path}: not a readable .npy array ({error})") from None
    if raw.ndim < 2 or raw.shape[-1] != 3:
        raise DataError(f"{path}: coordinates must have shape (..., atoms, 3), got {raw.shape}")
    coords = _as_coordinates(raw.reshape(-1, *raw.shape[-2:]), path)
    topology = load_topology(topology_path, coords)
    if topology.n_atoms != coords.shape[1]:
        raise DataError(
            f"{path}: coordinates have {coords.shape[1]} atoms but topology {topology_path} has {topology.n_atoms}"
        )
    return ConformationDataset(coords=coords, topology=topology, source=path)


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
        bonds=_as_bonds(np.array(bonds), path),
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


def _as_coordinates(array: np.ndarray, path: Path) -> np.ndarray:
    if array.ndim != 3 or array.shape[-1] != 3:
        raise DataError(f"{path}: coords must have shape (frames, atoms, 3), got {array.shape}")
    if not np.issubdtype(array.dtype, np.floating):
        raise DataError(f"{path}: coords must be floating point, got {array.dtype}")
    if len(array) == 0 or array.shape[1] < 2:
        raise DataError(f"{path}: coords hold no frames or fewer than 2 atoms (shape {array.shape})")
    finite = np.isfinite(array).all(axis=(1, 2))
    if not finite.all():
        bad = np.flatnonzero(~finite)
        raise DataError(f"{path}: non-finite coordinates (NaN or Inf) in {len(bad)} frame(s), first at frame {bad[0]}")
    return array.astype(np.float32)


def _as_bonds(bonds: np.ndarray, path: Path) -> np.ndarray:
    if bonds.ndim != 2 or bonds.shape[1] != 2 or not np.issubdtype(bonds.dtype, np.integer):
        raise DataError(
            f"{path}: bonds must be an integer array of shape (n_bonds, 2), got {bonds.shape} {bonds.dtype}"
        )
    return bonds.astype(np.int64)


def validate(dataset: ConformationDataset) -> None:
    """Check topology and geometry; raise :class:`DataError` naming the file and the problem."""
    path, topology, coords = dataset.source, dataset.topology, dataset.coords
    n_atoms, bonds = topology.n_atoms, topology.bonds
    if len(bonds) == 0:
        raise DataError(f"{path}: the molecule has no bonds")
    if bonds.min() < 0 or bonds.max() >= n_atoms:
        raise DataError(f"{path}: bond atom indices must lie in [0, {n_atoms - 1}], found {bonds.min()}..{bonds.max()}")
    if (bonds[:, 0] == bonds[:, 1]).any():
        raise DataError(f"{path}: a bond joins an atom to itself")
    if connected_components(bonds, n_atoms).max() > 0:
        raise DataError(f"{path}: the bonds do not connect all {n_atoms} atoms into one molecule")
    first = coords[0]
    median_bond = float(np.median(np.linalg.norm(first[bonds[:, 0]] - first[bonds[:, 1]], axis=-1)))
    low, high = PLAUSIBLE_BOND_LENGTH
    if not low <= median_bond <= high:
        hint = " (looks like nanometres; multiply by 10 for Angstrom)" if 0.09 <= median_bond <= 0.22 else ""
        raise DataError(f"{path}: median bond length {median_bond:.3f} is not in Angstrom range [{low}, {high}]{hint}")
    separation = np.linalg.norm(first[:, None] - first[None, :], axis=-1) + np.eye(n_atoms) * 1e9
    if separation.min() < MIN_ATOM_SEPARATION:
        i, j = np.unravel_index(separation.argmin(), separation.shape)
        raise DataError(
            f"{path}: atoms {i} and {j} of frame 0 are {separation.min():.3f} Angstrom apart (duplicate atoms?)"
        )


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


def split_frames(
    n_frames: int, validation_fraction: float, seed: int, n_blocks: int = 300
) -> tuple[np.ndarray, np.ndarray]:
    """Split frame indices into training and validation sets by contiguous blocks.

    MD frames close in time are nearly identical, so a random split would leak them into
    validation; whole blocks of the trajectory (1/300 of the frames each) are held out instead.
    The held-out blocks are spread evenly over the file (every k-th block from a seeded offset),
    so each part of a multi-replica file is represented in proportion: blocks chosen at random
    gave the embedded AIB9 data validation sets from 27 % to 67 % right-handed helices,
    depending on the seed, where the file holds 33 %.

    Returns:
        (train_indices, validation_indices), each sorted.
    """
    blocks = np.array_split(np.arange(n_frames), min(n_blocks, n_frames))
    n_validation_blocks = max(1, round(validation_fraction * len(blocks))) if validation_fraction > 0 else 0
    if n_validation_blocks == 0:
        return np.arange(n_frames), np.empty(0, int)
    spacing = len(blocks) / n_validation_blocks
    offset = np.random.default_rng(seed).uniform(0.0, spacing)
    chosen = np.unique(np.floor(offset + spacing * np.arange(n_validation_blocks)).astype(int))
    validation = np.concatenate([blocks[i] for i in chosen])
    train = np.setdiff1d(np.arange(n_frames), validation)
    return train, validation


def subsample(coords: np.ndarray, max_frames: int | None) -> np.ndarray:
    """At most ``max_frames`` frames, evenly spaced over the file (all of them for None)."""
    if max_frames is None or max_frames >= len(coords):
        return coords
    return coords[np.linspace(0, len(coords) - 1, max_frames).round().astype(int)]


def training_split(
    coords: np.ndarray, max_frames: int | None, validation_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """The training and validation frames of a run: :func:`subsample`, then :func:`split_frames`.

    The trainer and ``evaluate`` (whose default reference is a run's validation split) both
    call this, so they agree on the frames.

    Args:
        coords: (frames, N, 3) Angstrom.

    Returns:
        (train, validation) coordinate arrays, (F_train, N, 3) and (F_validation, N, 3).
    """
    coords = subsample(coords, max_frames)
    train, validation = split_frames(len(coords), validation_fraction, seed)
    return coords[train], coords[validation]
