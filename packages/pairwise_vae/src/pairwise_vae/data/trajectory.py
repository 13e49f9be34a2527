"""MD trajectories read through MDTraj (the optional extra ``md``: ``pip install 'pairwise-vae[md]'``).

One call of MDTraj reads DCD, XTC, TRR, AMBER NetCDF, multi-model PDB, GRO, mdcrd, XYZ and more,
with a topology from PDB, PSF, PRMTOP, GRO, ... files. MDTraj always returns nanometres,
whatever the file stores; this module converts to Angstrom (``NM_TO_ANGSTROM``) and never guesses.

The atoms kept are ``--select`` (any MDTraj selection, e.g. ``"resname AIB and not element H"``)
or by default the heavy atoms of the first molecule that is not solvent or ions. Bonds come
from the topology when its bonds join the selected atoms into one molecule (CONECT records,
PSF/PRMTOP bonds, residue templates); otherwise they are inferred from covalent radii.

Files are read as they are kept: compressed with gzip, bzip2 or xz (``traj.mdcrd.bz2``,
``top.parm7.bz2``), a copy is decompressed into a temporary folder first (MDTraj opens
``.pdb.gz`` and ``.xyz.gz`` itself).
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import shutil
import tempfile
import warnings
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from pairwise_vae.data.records import BOND_TOLERANCE, COVALENT_RADII, ELEMENTS, ConformationDataset, DataError, Topology
from pairwise_vae.data.topology import connected_components, infer_bonds

NM_TO_ANGSTROM = 10.0
# suffixes read through MDTraj (its loaders); files of the first group carry their own topology
SELF_DESCRIBING_SUFFIXES = (".pdb", ".pdb.gz", ".gro", ".h5", ".lh5", ".hdf5")
TRAJECTORY_SUFFIXES = SELF_DESCRIBING_SUFFIXES + (
    ".dcd",
    ".xtc",
    ".trr",
    ".nc",
    ".ncdf",
    ".netcdf",
    ".mdcrd",
    ".crd",
    ".binpos",
    ".xyz",
    ".xyz.gz",
    ".lammpstrj",
    ".dtr",
    ".tng",
)
WATER_NAMES = {"HOH", "WAT", "SOL", "H2O", "DOD", "TIP", "TIP3", "TIP4", "TIP5", "T3P", "T4P", "T5P", "SPC", "OPC"}
ION_NAMES = {"NA", "NA+", "SOD", "CL", "CL-", "CLA", "K", "K+", "POT", "MG", "CA", "CAL", "ZN", "LI", "RB", "CS", "BR"}
DEFAULT_SELECTION = "heavy atoms of the first molecule that is not solvent or ions"
# compressed files that MDTraj does not open itself are decompressed into a temporary folder
DECOMPRESSORS = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}
MDTRAJ_OPENS_COMPRESSED = (".pdb.gz", ".xyz.gz", ".pdbx.gz", ".cif.gz")


def file_suffix(path: Path) -> str:
    """The suffix that names the format, two parts for compressed files ('.pdb.gz', '.mdcrd.bz2')."""
    suffixes = [suffix.lower() for suffix in path.suffixes]
    if len(suffixes) >= 2 and suffixes[-1] in DECOMPRESSORS:
        return "".join(suffixes[-2:])
    return suffixes[-1] if suffixes else ""


def format_suffix(path: Path) -> str:
    """The suffix of the file MDTraj reads: without the compression suffix of a file we decompress."""
    suffix = file_suffix(path)
    return suffix.rsplit(".", 1)[0] if _decompressed_by_us(path) else suffix


def _decompressed_by_us(path: Path) -> bool:
    suffix = file_suffix(path)
    return suffix.count(".") == 2 and path.suffix.lower() in DECOMPRESSORS and suffix not in MDTRAJ_OPENS_COMPRESSED


def is_trajectory(path: Path) -> bool:
    """Whether ``path`` is a format read through MDTraj (compressed or not)."""
    return format_suffix(path) in TRAJECTORY_SUFFIXES


@contextmanager
def readable_copies(paths: set[Path]) -> Iterator[dict[Path, Path]]:
    """Each of ``paths`` mapped to the file MDTraj reads: itself, or for a compressed file
    (:func:`_decompressed_by_us`) a decompressed copy that lives as long as the context."""
    with tempfile.TemporaryDirectory(prefix="mdtraj-input-") as folder:
        readable = {}
        for path in paths:
            if not _decompressed_by_us(path):
                readable[path] = path
                continue
            readable[path] = Path(folder) / path.with_suffix("").name
            try:
                with DECOMPRESSORS[path.suffix.lower()](path, "rb") as source, open(readable[path], "wb") as copy:
                    shutil.copyfileobj(source, copy)
            except (OSError, EOFError, lzma.LZMAError, zlib.error) as error:
                raise DataError(f"{path}: could not decompress the file ({error})") from None
        yield readable


def import_mdtraj(path: Path) -> Any:
    """The ``mdtraj`` module, or a :class:`DataError` that names the extra to install."""
    try:
        import mdtraj
    except ImportError:
        raise DataError(
            f"{path}: reading MD trajectories needs MDTraj; install the extra: pip install 'pairwise-vae[md]'"
        ) from None
    return mdtraj


def load_trajectory(
    path: Path, topology_path: Path | None, select: str | None = None, stride: int = 1
) -> ConformationDataset:
    """Read the ``select``-ed atoms of every ``stride``-th frame of an MD trajectory, in Angstrom.

    Args:
        path: the trajectory (a :data:`TRAJECTORY_SUFFIXES` format).
        topology_path: its topology; optional for formats that carry one (PDB, GRO, HDF5).
        select: an MDTraj selection; None: :data:`DEFAULT_SELECTION`.
        stride: keep every ``stride``-th frame.
    """
    md = import_mdtraj(path)
    suffix = format_suffix(path)
    if topology_path is None and suffix not in SELF_DESCRIBING_SUFFIXES:
        raise DataError(f"{path}: {suffix} files hold no topology; pass --topology FILE (PDB, PSF, PRMTOP, GRO, ...)")
    source = topology_path if topology_path is not None else path
    if not source.exists():
        raise DataError(f"{source}: topology file not found")
    with readable_copies({path, source}) as readable:
        return _read_trajectory(md, path, source, topology_path is not None, readable, select, stride)


def _read_trajectory(
    md: Any,
    path: Path,
    source: Path,
    separate_topology: bool,
    readable: dict[Path, Path],
    select: str | None,
    stride: int,
) -> ConformationDataset:
    """:func:`load_trajectory` once the files are readable: ``readable`` maps ``path`` (the trajectory) and
    ``source`` (its topology file, ``path`` itself without ``separate_topology``) to the files MDTraj opens;
    messages name ``path`` and ``source``."""
    system = _mdtraj_call(source, "topology", lambda: md.load_topology(str(readable[source])))
    if select is not None:
        indices = _mdtraj_call(source, f"selection {select!r}", lambda: system.select(select))
        if len(indices) < 2:
            raise DataError(f"{source}: --select {select!r} matches {len(indices)} atom(s); at least 2 are needed")
    else:
        indices = _solute_heavy_atoms(system, source)

    def read(**selection: Any) -> Any:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*netCDF4.*")  # MDTraj falls back to scipy's reader
            if selection:
                return md.load(str(readable[path]), top=system, **selection)
            try:  # one whole frame: MDTraj checks its atom count against the topology's
                return md.load_frame(str(readable[path]), 0, top=system)
            except NotImplementedError:  # a format without random access (GRO, ...): read as a whole below
                return None

    if separate_topology:  # reading a subset of atoms alone would not notice a topology of another system
        _mdtraj_call(path, "trajectory", read)
    trajectory = _mdtraj_call(path, "trajectory", lambda: read(stride=stride, atom_indices=indices))
    if trajectory.n_frames == 0:
        raise DataError(f"{path}: the trajectory holds no frames")
    coords = trajectory.xyz.astype(np.float64) * NM_TO_ANGSTROM
    if select is None:
        keep = _first_molecule(system, indices, coords)
        indices, coords = indices[keep], coords[:, keep]
    topology = _topology_of(system, indices, coords, source)
    return ConformationDataset(coords=coords.astype(np.float32), topology=topology, source=path)


def _mdtraj_call(path: Path, what: str, call: Any) -> Any:
    """Run an MDTraj call; any failure becomes one :class:`DataError` line naming the file."""
    try:
        return call()
    except DataError:
        raise
    except Exception as error:  # MDTraj raises IOError, ValueError, KeyError, ... for unreadable files
        message = " ".join(str(error).split()) or type(error).__name__
        raise DataError(f"{path}: MDTraj could not read the {what} ({message[:300]})") from None


def _solute_heavy_atoms(system: Any, path: Path) -> np.ndarray:
    """Indices of the heavy atoms of residues that are neither water nor ions."""
    indices = [
        atom.index
        for atom in system.atoms
        if not _is_solvent_or_ion(atom.residue) and atom.element is not None and atom.element.atomic_number > 1
    ]
    if len(indices) < 2:
        raise DataError(f"{path}: found no molecule besides solvent and ions; choose atoms with --select")
    return np.array(indices, dtype=np.int64)


def _is_solvent_or_ion(residue: Any) -> bool:
    name = residue.name.upper()
    return (
        residue.is_water or name in WATER_NAMES or (residue.n_atoms == 1 and name.rstrip("+-0123456789") in ION_NAMES)
    )


def _first_molecule(system: Any, indices: np.ndarray, coords: np.ndarray) -> np.ndarray:
    """Positions in ``indices`` of the molecule that holds the first of them.

    Molecules are joined by the topology's bonds and by bonds inferred from covalent radii
    (so that a topology with incomplete bonds, such as a GRO file, still gives whole molecules), in frame 0.
    """
    numbers = np.array([_atomic_number(system.atom(int(i))) for i in indices])
    position = {int(atom): k for k, atom in enumerate(indices)}
    bonds = [
        (position[a.index], position[b.index]) for a, b in system.bonds if a.index in position and b.index in position
    ]
    labels = connected_components(np.array(bonds + _close_pairs(coords[0], numbers), dtype=np.int64), len(indices))
    return np.flatnonzero(labels == labels[0])


def _close_pairs(frame: np.ndarray, numbers: np.ndarray) -> list[tuple[int, int]]:
    """Atom pairs of one frame (Angstrom) within covalent reach (radii + tolerance), found with a k-d tree,
    so that a large solute costs no all-pairs matrix."""
    from scipy.spatial import cKDTree  # a dependency of MDTraj

    radii = np.array([COVALENT_RADII.get(ELEMENTS.get(int(z), ""), 1.5) for z in numbers])
    pairs = cKDTree(frame).query_pairs(2 * radii.max() + BOND_TOLERANCE, output_type="ndarray")
    reach = radii[pairs[:, 0]] + radii[pairs[:, 1]] + BOND_TOLERANCE
    close = np.linalg.norm(frame[pairs[:, 0]] - frame[pairs[:, 1]], axis=-1) < reach
    return [tuple(pair) for pair in pairs[close].tolist()]


def _atomic_number(atom: Any) -> int:
    return int(atom.element.atomic_number) if atom.element is not None else 0


def _topology_of(system: Any, indices: np.ndarray, coords: np.ndarray, path: Path) -> Topology:
    """Our :class:`Topology` of the selected atoms (bonds renumbered into the selection)."""
    atoms = [system.atom(int(i)) for i in indices]
    numbers = np.array([_atomic_number(atom) for atom in atoms], dtype=np.int64)
    unknown = sorted({(atom.name, int(z)) for atom, z in zip(atoms, numbers, strict=True) if int(z) not in ELEMENTS})
    if unknown:
        raise DataError(
            f"{path}: selected atoms of unsupported elements {unknown[:5]} (atomic numbers); "
            f"supported: {', '.join(ELEMENTS.values())}; narrow --select"
        )
    position = {int(atom): k for k, atom in enumerate(indices)}
    bonds = sorted(
        {
            tuple(sorted((position[a.index], position[b.index])))
            for a, b in system.bonds
            if a.index in position and b.index in position and a.index != b.index
        }
    )
    bonds_array = np.array(bonds, dtype=np.int64).reshape(-1, 2)
    if len(bonds_array) == 0 or connected_components(bonds_array, len(indices)).max() > 0:
        bonds_array = infer_bonds(coords, numbers)  # the topology's bonds do not join the selection
    return Topology(
        atomic_numbers=numbers,
        atom_names=np.array([atom.name for atom in atoms]),
        residue_ids=np.array([atom.residue.resSeq for atom in atoms], dtype=np.int64),
        residue_names=np.array([atom.residue.name for atom in atoms]),
        bonds=bonds_array,
    )
