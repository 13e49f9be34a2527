"""Training, validation and test frames of a run, and subsampled frame sets."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

# a single trajectory's test frames: its last TEST_TAIL_FRACTION, after TEST_GAP_FRACTION of it left unused, so
# that no test frame neighbours a training frame in time
TEST_TAIL_FRACTION = 0.1
TEST_GAP_FRACTION = 0.02


class RunSplit(NamedTuple):
    """A run's frames: ``train``, ``validation`` (chooses best.pt) and ``test`` (held out for the final report;
    possibly empty), each (F, N, 3) Angstrom, and ``test_note``: how the test frames were held out, in words."""

    train: np.ndarray
    validation: np.ndarray
    test: np.ndarray
    test_note: str


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


def held_out_trajectories(labels: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray, str]:
    """Frame indices kept for training and validation, and those held out as the test set.

    With two or more trajectories (``labels`` in order of first appearance), the last ``count`` of them are
    held out whole (at most all but one). With a single trajectory and ``count`` >= 1, its last
    ``TEST_TAIL_FRACTION`` is held out and the ``TEST_GAP_FRACTION`` before it is used for neither.

    Args:
        labels: (F,) trajectory label of each frame.
        count: trajectories to hold out; 0 holds out nothing.

    Returns:
        (kept, test) sorted frame indices and a sentence saying what was held out ("" for nothing).
    """
    n_frames = len(labels)
    order = list(dict.fromkeys(labels.tolist()))
    if count == 0:
        return np.arange(n_frames), np.empty(0, dtype=np.int64), ""
    if len(order) >= 2:
        held = order[-min(count, len(order) - 1) :]
        test = np.isin(labels, held)
        return (
            np.flatnonzero(~test),
            np.flatnonzero(test),
            f"{len(held)} of the {len(order)} trajectories of the data held out whole (the last in file order); "
            "no frame of them is in training",
        )
    n_test = max(1, round(TEST_TAIL_FRACTION * n_frames))
    gap = max(1, round(TEST_GAP_FRACTION * n_frames))
    if n_frames - n_test - gap < 2:
        return np.arange(n_frames), np.empty(0, dtype=np.int64), ""
    return (
        np.arange(n_frames - n_test - gap),
        np.arange(n_frames - n_test, n_frames),
        f"the last {n_test} frames of the data's single trajectory, after {gap} frames used for neither training "
        "nor test: every test frame lies more than that many frames after the last training frame",
    )


def subsample(coords: np.ndarray, max_frames: int | None) -> np.ndarray:
    """At most ``max_frames`` frames, evenly spaced over the file (all of them for None)."""
    if max_frames is None or max_frames >= len(coords):
        return coords
    return coords[np.linspace(0, len(coords) - 1, max_frames).round().astype(int)]


def training_split(
    coords: np.ndarray,
    labels: np.ndarray,
    max_frames: int | None,
    validation_fraction: float,
    seed: int,
    test_trajectories: int,
) -> RunSplit:
    """The training, validation and test frames of a run: :func:`subsample`, then
    :func:`held_out_trajectories`, then :func:`split_frames` of the rest.

    The trainer and ``evaluate`` (whose reference is a run's test frames) both call this, so they agree
    on the frames.

    Args:
        coords: (F, N, 3) Angstrom.
        labels: (F,) trajectory label of each frame.
        max_frames, validation_fraction, seed: as for :func:`subsample` and :func:`split_frames`.
        test_trajectories: as ``count`` of :func:`held_out_trajectories`.
    """
    chosen = subsample(np.arange(len(coords)), max_frames)
    coords, labels = coords[chosen], labels[chosen]
    kept, test, note = held_out_trajectories(labels, test_trajectories)
    train, validation = split_frames(len(kept), validation_fraction, seed)
    return RunSplit(coords[kept[train]], coords[kept[validation]], coords[test], note)
