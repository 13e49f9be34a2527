"""Test frames held out from training: whole trajectories of several files or labelled replicas, the end of
a single trajectory after a gap, and evaluate judging a run on them."""

from __future__ import annotations

import json

import numpy as np
import pytest
from bond_helpers import make_model, replica_frames, tiny_model_config, write_npz
from bond_vae.config import from_dict, to_dict
from bond_vae.data.dataset import DEFAULT_DATASET, load_dataset
from bond_vae.data.records import DataError
from bond_vae.data.split import held_out_trajectories, split_frames, training_split
from bond_vae.evaluation.evaluate import main as evaluate_main
from bond_vae.training.checkpoint import model_payload, save_checkpoint
from bond_vae.training.config import TrainConfig
from bond_vae.training.train import parse_config


def test_the_last_trajectories_are_held_out_whole():
    labels = np.repeat([4, 2, 7], [5, 3, 4])  # three trajectories, labelled in file order 4, 2, 7
    kept, test, note = held_out_trajectories(labels, 1)
    assert kept.tolist() == list(range(8)) and test.tolist() == list(range(8, 12))
    assert note.startswith("1 of the 3 trajectories of the data held out whole")
    kept, test, _ = held_out_trajectories(labels, 5)  # at most all but one
    assert kept.tolist() == list(range(5)) and test.tolist() == list(range(5, 12))
    kept, test, note = held_out_trajectories(labels, 0)
    assert kept.tolist() == list(range(12)) and len(test) == 0 and note == ""


def test_a_single_trajectory_loses_its_end_after_a_gap():
    kept, test, note = held_out_trajectories(np.zeros(200, dtype=int), 1)
    # the last 10 % (20 frames) are the test; the 2 % (4 frames) before them are used for neither
    assert kept.tolist() == list(range(176)) and test.tolist() == list(range(180, 200))
    assert "the last 20 frames" in note and "after 4 frames" in note
    kept, test, _ = held_out_trajectories(np.zeros(3, dtype=int), 1)  # too short to hold anything out
    assert len(kept) == 3 and len(test) == 0


def test_nothing_held_out_gives_the_block_split_of_every_frame(aib9):
    split = training_split(aib9.coords, aib9.trajectory_labels(), None, 0.1, 0, 0)
    train, validation = split_frames(len(aib9.coords), 0.1, 0)
    np.testing.assert_array_equal(split.train, aib9.coords[train])
    np.testing.assert_array_equal(split.validation, aib9.coords[validation])
    assert len(split.test) == 0 and split.test_note == ""


def test_the_replicas_of_an_npz_and_several_files_are_trajectories(aib9, tmp_path):
    assert np.bincount(aib9.trajectory_labels()).tolist() == [800] * 12  # the embedded data labels its replicas
    first = write_npz(tmp_path / "a.npz", aib9, aib9.coords[:30])
    second = write_npz(tmp_path / "b.npz", aib9, aib9.coords[30:50], replica=np.repeat([9, 3], 10).astype(np.int16))
    both = load_dataset([first, second])
    assert both.coords.shape == (50, 58, 3) and both.source == first
    assert both.trajectory_labels().tolist() == [0] * 30 + [1] * 10 + [2] * 10
    split = training_split(both.coords, both.trajectory_labels(), None, 0.1, 0, 1)
    np.testing.assert_array_equal(split.test, aib9.coords[40:50])  # the last trajectory, whole


def test_files_of_different_molecules_are_refused_in_one_line(aib9, tmp_path):
    first = write_npz(tmp_path / "a.npz", aib9, aib9.coords[:10])
    numbers = aib9.topology.atomic_numbers.copy()
    numbers[numbers == 8] = 7  # every carbonyl oxygen a nitrogen: another molecule, still a valid one
    other = write_npz(tmp_path / "b.npz", aib9, aib9.coords[:10], atomic_numbers=numbers)
    with pytest.raises(DataError, match=r"b\.npz: its atoms or bonds differ from those of .*a\.npz"):
        load_dataset([first, other])


def test_data_takes_several_files_and_older_records_hold_nothing_out(tmp_path):
    config, _ = parse_config(["--data", "a.xtc", "b.xtc", "--topology", "t.pdb"])
    assert [path.name for path in config.data] == ["a.xtc", "b.xtc"]
    assert config.test_trajectories == 1 and config.trajectories_held_out() == 1
    assert TrainConfig().trajectories_held_out() == 0  # the embedded data has its own test trajectories
    record = to_dict(TrainConfig(data=[tmp_path / "a.npz"]))
    assert record["data"] == [str(tmp_path / "a.npz")]
    del record["test_trajectories"]
    record["data"] = str(tmp_path / "a.npz")  # a record of an older release: one path, nothing held out
    older = from_dict(TrainConfig, record)
    assert older.data == [tmp_path / "a.npz"] and older.test_trajectories == 0


def test_evaluate_judges_a_user_run_on_the_test_frames_it_held_out(aib9, tmp_path):
    data = [write_npz(tmp_path / f"r{k}.npz", aib9, replica_frames(aib9, k)[:40]) for k in range(3)]
    config = TrainConfig(data=data, model=tiny_model_config(), validation_fraction=0.25)
    checkpoint = tmp_path / "run.pt"
    save_checkpoint(checkpoint, model_payload(config, aib9.topology, make_model(aib9)))
    evaluate_main([str(checkpoint), "--output", str(tmp_path / "report"), "--num-samples", "12", "--device", "cpu"])
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert (
        report["reference"]["description"]
        == f"{data[0]} and 2 more file(s) (the test frames the training run held out)"
    )
    assert report["reference"]["relation"].startswith("1 of the 3 trajectories of the data held out whole")
    assert report["reference"]["frames"] == 40  # the third file
    reference = load_dataset(tmp_path / "report" / "reference.npz").coords
    np.testing.assert_allclose(reference, replica_frames(aib9, 2)[:40], atol=1e-3)
    # 80 frames left: 20 validation frames (unseen) give the floors, 60 train
    assert report["matched"]["n_samples"] == 12 and report["matched"]["pool"].startswith("20 validation frames")
    assert report["novelty"]["samples"]["n_training"] == 60


def test_the_embedded_data_is_never_cut_for_a_test_set():
    assert DEFAULT_DATASET.name == "aib9.npz"
    assert TrainConfig(test_trajectories=3).trajectories_held_out() == 0


def test_a_config_file_lists_several_data_files_and_none_stands_alone(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("data: [a.xtc, b.xtc]\ntest_trajectories: 2\n")
    config, _ = parse_config(["--config", str(recipe)])
    assert [path.name for path in config.data] == ["a.xtc", "b.xtc"] and config.test_trajectories == 2
    recipe.write_text("data: a.xtc\n")
    assert [path.name for path in parse_config(["--config", str(recipe)])[0].data] == ["a.xtc"]
    assert parse_config(["--data", "none"])[0].data is None
    with pytest.raises(SystemExit):
        parse_config(["--data", "a.xtc", "none"])


def test_the_training_file_as_reference_is_named_so_and_floored_by_its_own_halves(tiny_checkpoint, tiny_npz, tmp_path):
    argv = [str(tiny_checkpoint), "--data", str(tiny_npz), "--output", str(tmp_path / "report")]
    evaluate_main([*argv, "--num-samples", "8", "--device", "cpu"])
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert report["reference"]["relation"] == "a file of the training data: frames the model trained on are among them"
    # the 48 frames in 20 blocks: the even-numbered ones (24 frames) are the reference, the odd-numbered the floor's
    assert report["reference"]["frames"] == 24 and report["matched"]["pool"].startswith("the odd-numbered blocks")
