"""Records every data module shares: the molecule (:class:`Topology`), a dataset, elements, :class:`DataError`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

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
    """Frames of one molecule: ``coords`` (frames, atoms, 3) float32 in Angstrom, read from ``source`` (the
    first file where there were several); ``trajectories`` (frames,) int labels of the trajectory each frame
    belongs to (None: all one trajectory)."""

    coords: np.ndarray
    topology: Topology
    source: Path
    trajectories: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.coords)

    def trajectory_labels(self) -> np.ndarray:
        """(frames,) int64 trajectory labels, zeros for a single trajectory."""
        if self.trajectories is None:
            return np.zeros(len(self.coords), dtype=np.int64)
        return self.trajectories.astype(np.int64)
