"""Loading and validating conformation datasets.

Accepted inputs:

* ``.npz`` in the dataset format: ``coords`` (frames, atoms, 3) float Angstrom,
  ``atomic_numbers`` (atoms,), ``atom_names``, ``residue_ids``, ``residue_names``,
  ``bonds`` (n_bonds, 2) int; bonds are optional. An optional ``replica`` (frames,) int array
  labels the trajectory each frame comes from. A ``metadata`` entry (JSON text, written by
  ``sample`` and the dataset script) describes the file for people and is not read.
* ``.npy`` of shape (..., atoms, 3) in Angstrom, with a topology given separately: a PDB
  file, or an atom table ``.npy`` of ``[atom_name, residue_index]`` rows.
* MD trajectories (DCD, XTC, TRR, NetCDF, multi-model PDB, GRO, ...) with a topology, read
  through MDTraj (the optional extra ``md``; see :mod:`pairwise_vae.data.trajectory`).

Several files of one molecule load as one dataset whose frames carry the file they came from
as their trajectory label. Where a file gives no bonds they are inferred from covalent radii.
Every problem is reported as a :class:`DataError` whose message names the file and the problem.
"""

from __future__ import annotations

import zipfile
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

import numpy as np

from pairwise_vae.data.records import (
    ELEMENTS,
    MIN_ATOM_SEPARATION,
    PLAUSIBLE_BOND_LENGTH,
    ConformationDataset,
    DataError,
    Topology,
)
from pairwise_vae.data.topology import as_bonds, connected_components, infer_bonds, load_topology

# The embedded AIB9 ensemble is package data: found in a source checkout and in an installed wheel alike.
DEFAULT_DATASET = Path(str(resources.files(__package__) / "resources" / "aib9.npz"))
# Independent AIB9 trajectories (the same conditions, other seeds, no frame shared with DEFAULT_DATASET): the
# reference that ``evaluate`` judges a model trained on the embedded data against.
TEST_DATASET = Path(str(resources.files(__package__) / "resources" / "aib9_test.npz"))


def load_dataset(
    path: Path | str | Sequence[Path | str] | None = None,
    topology_path: Path | str | None = None,
    select: str | None = None,
    stride: int = 1,
) -> ConformationDataset:
    """Load and validate a dataset file, or several files of one molecule (each one trajectory, or more
    where an ``.npz`` labels its replicas); ``path=None`` loads the embedded AIB9 ensemble.

    Args:
        path: ``.npz``, ``.npy`` (with ``topology_path``) or an MD trajectory read through MDTraj, or a
            list of them.
        topology_path: topology of ``.npy`` coordinates or of a trajectory.
        select: atoms of a trajectory to keep (an MDTraj selection); None: the default of
            :func:`trajectory.load_trajectory`.
        stride: keep every ``stride``-th frame.
    """
    if isinstance(path, (list, tuple)):
        if len(path) > 1:
            return _concatenate([load_dataset(one, topology_path, select, stride) for one in path])
        path = path[0] if path else None
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
        from pairwise_vae.data import trajectory  # MDTraj is an optional extra: imported only for trajectories

        if not trajectory.is_trajectory(path):
            raise DataError(
                f"{path}: unsupported file type {trajectory.file_suffix(path)!r}; expected .npz, .npy or an MD "
                f"trajectory ({' '.join(trajectory.TRAJECTORY_SUFFIXES)})"
            )
        dataset = trajectory.load_trajectory(path, topology_path, select, stride)
        stride = 1  # MDTraj applied it while reading
    dataset.coords = dataset.coords[::stride]
    if dataset.trajectories is not None:
        dataset.trajectories = dataset.trajectories[::stride]
    validate(dataset)
    return dataset


def _concatenate(datasets: list[ConformationDataset]) -> ConformationDataset:
    """One dataset of several files of the same molecule: the frames in file order, each file's trajectory
    labels offset past the previous files'."""
    first = datasets[0]
    labels, offset = [], 0
    for dataset in datasets:
        topology = dataset.topology
        if not (
            np.array_equal(topology.atomic_numbers, first.topology.atomic_numbers)
            and np.array_equal(topology.bonds, first.topology.bonds)
        ):
            raise DataError(
                f"{dataset.source}: its atoms or bonds differ from those of {first.source}; "
                "several data files must hold the same molecule"
            )
        own = dataset.trajectory_labels().tolist()
        numbers = {label: k for k, label in enumerate(dict.fromkeys(own))}  # in order of first appearance
        labels.append(np.array([numbers[label] for label in own], dtype=np.int64) + offset)
        offset += len(numbers)
    return ConformationDataset(
        coords=np.concatenate([dataset.coords for dataset in datasets]),
        topology=first.topology,
        source=first.source,
        trajectories=np.concatenate(labels),
    )


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
        bonds=as_bonds(bonds, path),
    )
    replica = arrays.get("replica")
    if replica is not None and (replica.shape != (len(coords),) or not np.issubdtype(replica.dtype, np.integer)):
        raise DataError(f"{path}: replica must be a ({len(coords)},) integer array, got shape {replica.shape}")
    return ConformationDataset(coords=coords, topology=topology, source=path, trajectories=replica)


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
