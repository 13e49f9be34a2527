"""The frames a model is judged on: the reference, the unseen MD frames its floors come from, and its
training frames (:func:`evaluation_frames`).

* A model trained on the embedded AIB9 data is judged on the independent AIB9 test trajectories
  (``TEST_DATASET``: other seeds of the same conditions, no frame or trajectory shared with
  training); its floors come from the run's validation split, MD the model did not train on.
* A model trained on a user's data is judged on the test frames its run held out
  (``--test-trajectories``: whole trajectories, or the end of a single one after a gap), with the
  validation split for the floors. A run that held out none is judged on its validation split cut
  in two (:func:`split_halves`): one half is the reference, the other the floors' unseen MD; those
  frames are blocks of the training trajectories, so the report gives their distance in frames to
  the nearest training frame.
* ``--data FILE`` is judged on that file, with the validation split (or, where the training data
  cannot be read, half of the file) for the floors.

The validation split chooses best.pt; it never stands for the reference of a final report when
independent trajectories exist.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from bond_vae.data.dataset import DEFAULT_DATASET, TEST_DATASET, load_dataset
from bond_vae.data.records import DataError
from bond_vae.data.split import split_frames, subsample
from bond_vae.sampling.inference import run_split
from bond_vae.training.checkpoint import config_from_checkpoint

FLOOR_BLOCKS = 20  # contiguous blocks a frame set is cut into when half of it stands for the unseen MD


class Reference(NamedTuple):
    """Reference conformations given by the user: ``frames`` (F, N, 3) Angstrom, ``source`` (the file, for
    messages), ``description`` (for the report) and ``atomic_numbers`` (N,) of their molecule."""

    frames: np.ndarray
    source: str
    description: str
    atomic_numbers: np.ndarray


@dataclass
class EvaluationFrames:
    """What a model is judged on.

    ``reference``: (R, N, 3) Angstrom, at most ``max_frames`` evenly spaced; ``pool``: (P, N, 3) MD
    frames the model did not train on, disjoint from the reference, for the matched floors (None when
    there are fewer than two reference frames); ``training``: (F, N, 3) the run's training frames, for
    novelty (None when the training data cannot be read). The texts say where each comes from and how
    far the reference lies from training.
    """

    reference: np.ndarray
    description: str
    relation: str
    pool: np.ndarray | None
    pool_description: str
    training: np.ndarray | None


def split_halves(n_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """Frame indices of two halves of ``n_frames`` >= 2 frames: cut in their order into ``FLOOR_BLOCKS``
    contiguous blocks (fewer for fewer frames), the even-numbered blocks and the odd-numbered ones.
    Interleaved blocks, unlike first against second half, cover the same parts of a trajectory; unlike
    single frames, neighbours in time do not fall on both sides at every step."""
    blocks = np.array_split(np.arange(n_frames), min(FLOOR_BLOCKS, n_frames))
    return np.concatenate(blocks[0::2]), np.concatenate(blocks[1::2])


def frames_to_training(train: np.ndarray, held_out: np.ndarray) -> np.ndarray:
    """(H,) distance in frames, in the file's order, from each held-out frame index to the nearest
    training frame index (``train`` sorted and non-empty)."""
    after = np.clip(np.searchsorted(train, held_out), 0, len(train) - 1)
    before = np.clip(after - 1, 0, len(train) - 1)
    return np.minimum(np.abs(train[after] - held_out), np.abs(train[before] - held_out))


def test_set_relation(path: Path) -> str:
    """How the embedded test trajectories relate to the training data, from their metadata."""
    with np.load(path, allow_pickle=False) as archive:
        metadata: dict[str, Any] = json.loads(str(archive["metadata"]))
    replicas = metadata["config"]["replicas"]
    seeds = ", ".join(str(replica["seed"]) for replica in replicas)
    spacing_ps = metadata["time_between_frames_ns"] * 1000.0
    return (
        f"independent MD: {len(replicas)} trajectories of their own ({metadata['simulated_ns_per_replica']:g} ns "
        f"each, a frame every {spacing_ps:g} ps, seeds {seeds}) under the training data's conditions; "
        "they share no frame and no trajectory with the training data"
    )


def halves(frames: np.ndarray, description: str) -> tuple[np.ndarray, str, np.ndarray | None, str]:
    """Reference and pool as the two halves (:func:`split_halves`) of ``frames``, and their descriptions."""
    if len(frames) < 2:
        return frames, description, None, "none (a single reference frame)"
    first, second = split_halves(len(frames))
    return (
        frames[first],
        f"{description}, even-numbered of {min(FLOOR_BLOCKS, len(frames))} contiguous blocks",
        frames[second],
        f"the odd-numbered blocks of the same frames ({len(second)} frames)",
    )


def evaluation_frames(
    checkpoint: dict[str, Any], checkpoint_path: Path, given: Reference | None, max_frames: int
) -> EvaluationFrames:
    """The reference, pool and training frames of a checkpoint's evaluation (see the module docstring).

    Args:
        checkpoint: the loaded checkpoint.
        checkpoint_path: its file, for messages.
        given: the user's reference (``--data``), or None for the default.
        max_frames: the most reference frames used, evenly spaced.

    Raises:
        DataError: without ``given``, the run's training data cannot be read.
    """
    run = config_from_checkpoint(checkpoint, checkpoint_path)
    try:
        dataset, split = run_split(checkpoint, checkpoint_path)
    except DataError:
        if given is None:
            raise
        dataset = split = None
    training = None if split is None else split.train
    validation = None if split is None else split.validation
    held_out = 0 if validation is None else len(validation)
    validation_text = f"{held_out} validation frames of the training trajectories, unseen in training"
    if given is not None:
        frames = subsample(given.frames, max_frames)
        if validation is None:
            reference, description, pool, pool_text = halves(frames, given.description)
            return EvaluationFrames(
                reference, description, "not known (the training data cannot be read)", pool, pool_text, None
            )
        training_files = [DEFAULT_DATASET] if run.data is None else run.data
        same = Path(given.source).resolve() in {Path(path).resolve() for path in training_files}
        if same:  # the validation frames are among the reference: its own halves give the floor
            reference, description, pool, pool_text = halves(frames, given.description)
            relation = "a file of the training data: frames the model trained on are among them"
            return EvaluationFrames(reference, description, relation, pool, pool_text, training)
        relation = "a file given with --data; how it relates to the training data is not known"
        return EvaluationFrames(frames, given.description, relation, validation, validation_text, training)
    if run.data is None:
        test = load_dataset(TEST_DATASET)
        return EvaluationFrames(
            subsample(test.coords, max_frames),
            f"{TEST_DATASET.name} (the AIB9 test trajectories)",
            test_set_relation(TEST_DATASET),
            validation,
            validation_text,
            training,
        )
    if len(split.test) > 0:
        files = f" and {len(run.data) - 1} more file(s)" if len(run.data) > 1 else ""
        return EvaluationFrames(
            subsample(split.test, max_frames),
            f"{dataset.source}{files} (the test frames the training run held out)",
            split.test_note,
            validation,
            validation_text,
            training,
        )
    n_frames = len(subsample(dataset.coords, run.max_frames))
    train_index, validation_index = split_frames(n_frames, run.validation_fraction, run.split_seed)  # nothing held out
    gaps = frames_to_training(train_index, validation_index)
    reference, description, pool, pool_text = halves(
        subsample(validation, max_frames), f"{dataset.source} (validation split of the training run)"
    )
    relation = (
        "blocks cut from the training trajectories, not independent of them: each frame lies "
        f"{gaps.min()} to {gaps.max()} frames (mean {gaps.mean():.1f}) from the nearest training frame in the "
        "file's order; train with --test-trajectories 1 (or pass other trajectories with --data) for an "
        "independent judgement"
    )
    return EvaluationFrames(reference, description, relation, pool, pool_text, training)
