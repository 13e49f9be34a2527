"""The flags of bond-vae-train: `none` for optional settings, the recipe as defaults, retired
options, and --split-seed."""

from __future__ import annotations

import argparse
import dataclasses
import typing

import numpy as np
import pytest
import torch
from bond_helpers import make_model, tiny_model_config
from bond_vae.config import ConfigError, _unwrap_optional, from_dict, to_dict
from bond_vae.data.dataset import load_dataset
from bond_vae.data.split import training_split
from bond_vae.sampling.inference import run_split
from bond_vae.training.checkpoint import (
    CheckpointError,
    Progress,
    load_checkpoint,
    model_from_checkpoint,
    model_payload,
    save_checkpoint,
    training_payload,
)
from bond_vae.training.config import TrainConfig
from bond_vae.training.train import build_parser, build_run, main, parse_config

RETIRED_FLAGS = (
    "--free-bits",
    "--chirality-weight",
    "--encoder-chiral-features",
    "--encoder-readout",
    "--decoder-latent-input",
    "--encoder-max-atomic-number",
    "--decoder-max-atomic-number",
    "--decoder-distance-features",
    "--decoder-distance-range",
    "--decoder-coordinate-range",
    "--decoder-coarse-channels",
    "--decoder-max-topological-distance",
)


def optional_flags() -> list[str]:
    """Every flag whose setting may be None (``X | None`` fields, nested ones included)."""
    parser = build_parser()
    defaults = TrainConfig()
    flags = []

    def visit(cls: type, prefix: str) -> None:
        hints = typing.get_type_hints(cls)
        for field in dataclasses.fields(cls):
            annotation, optional = _unwrap_optional(hints[field.name])
            if dataclasses.is_dataclass(annotation):
                visit(annotation, prefix + field.metadata.get("prefix", ""))
            elif optional and field.metadata.get("flag", True):
                flags.append("--" + (prefix + field.name).replace("_", "-"))

    visit(type(defaults), "")
    assert all(any(flag in action.option_strings for action in parser._actions) for flag in flags)
    return flags


def test_the_optional_flags_are_the_expected_ones():
    assert set(optional_flags()) == {
        "--data",
        "--topology",
        "--select",
        "--run-name",
        "--max-minutes",
        "--max-frames",
        "--resume",
        "--encoder-vector-channels",
        "--decoder-pair-channels",
    }


@pytest.mark.parametrize("flag", optional_flags())
@pytest.mark.parametrize("word", ["none", "None", "NONE"])
def test_every_optional_flag_takes_none(flag, word):
    """Bug: '--decoder-pair-channels none' failed with "invalid int value: 'none'" (and so did every
    optional number, path and name), though the help offers none."""
    namespace = build_parser().parse_args([flag, word])
    assert getattr(namespace, flag[2:].replace("-", "_")) is None


def test_none_reaches_the_config_and_a_number_still_parses():
    config, _ = parse_config(["--decoder-pair-channels", "none", "--max-minutes", "none"])
    assert config.model.decoder.pair_channels is None and config.max_minutes is None
    config, _ = parse_config(["--decoder-pair-channels", "8", "--max-minutes", "0.5"])
    assert config.model.decoder.pair_channels == 8 and config.max_minutes == 0.5


def test_a_bad_optional_number_is_still_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["--max-minutes", "nothing"])
    assert exit_info.value.code == 2
    assert "--max-minutes: invalid float value: 'nothing'" in capsys.readouterr().err


def test_no_flags_give_the_measured_configuration():
    """The best measured bond-loss run (bond MAE 0.0084 A, 60 of 64 active units in 30 CPU minutes; at 16 pair
    channels 0.0104 A, 64 of 64) is the default."""
    config, _ = parse_config([])
    assert (config.batch_size, config.learning_rate, config.beta) == (32, 1e-3, 1e-5)
    model = config.model
    assert model.latent_dim == 64 and model.encoder.bond_length_features is True
    assert model.decoder.pair_channels == 16  # as fast as 10x the original at its settings (docs/performance.md)
    # everything else as before
    assert (model.relative_chirality_weight, model.angle_weight, model.torsion_weight) == (0.0, 0.0, 0.0)
    assert (model.steric_weight, model.aligned_weight, model.steric_distance) == (0.0, 0.0, 2.6)
    encoder = model.encoder
    assert (encoder.graph, encoder.num_layers, encoder.cutoff, encoder.vector_channels) == ("bonds", 4, 5.0, 64)
    assert (encoder.hidden_channels, model.decoder.hidden_channels, model.decoder.num_layers) == (64, 64, 4)
    assert (config.epochs, config.weight_decay, config.warmup_steps, config.beta_warmup_epochs) == (50, 1e-4, 300, 5.0)


@pytest.mark.parametrize("flag", RETIRED_FLAGS)
def test_retired_flags_are_gone(flag, capsys):
    assert flag not in build_parser().format_help()
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args([flag, "1"])
    assert exit_info.value.code == 2
    assert f"unrecognized arguments: {flag}" in capsys.readouterr().err


def test_flag_count():
    """61 flags before 0.3: 12 retired, --config, --split-seed, --stereocentre-weight and
    --decoder-place-stereocentres added."""
    flags = [a for a in build_parser()._actions if a.option_strings and not isinstance(a, argparse._HelpAction)]
    assert len(flags) == 54


def current_record(**model_changes) -> dict:
    """The settings a checkpoint of today records (``to_dict`` of a config), with some model settings changed."""
    record = to_dict(TrainConfig(model=tiny_model_config()))
    record["model"].update(model_changes)
    return record


def test_records_with_the_retired_options_at_their_inert_values_load():
    record = current_record(chirality_weight=0.0, free_bits=0.0)
    record["model"]["encoder"]["chiral_features"] = False
    assert from_dict(TrainConfig, record) == TrainConfig(model=tiny_model_config())


@pytest.mark.parametrize(
    ("section", "name", "value", "flag"),
    [
        (None, "chirality_weight", 0.3, "--chirality-weight 0.3"),
        (None, "free_bits", 1.0, "--free-bits 1.0"),
        ("encoder", "chiral_features", True, "--encoder-chiral-features"),
    ],
)
def test_a_checkpoint_trained_with_a_retired_option_is_refused_with_one_line(
    aib9, tmp_path, capsys, section, name, value, flag
):
    config = TrainConfig(model=tiny_model_config())
    payload = model_payload(config, aib9.topology, make_model(aib9))
    (payload["config"]["model"] if section is None else payload["config"]["model"][section])[name] = value
    path = tmp_path / "retired.pt"
    save_checkpoint(path, payload)
    expected = f"{path}: written with {flag}, retired in 0.3; use bond_vae 0.2"
    with pytest.raises(ConfigError, match="written with"):
        from_dict(TrainConfig, payload["config"])
    with pytest.raises(CheckpointError) as error:
        model_from_checkpoint(load_checkpoint(path), path)
    assert str(error.value) == expected
    with pytest.raises(SystemExit) as exit_info:
        main(["--resume", str(path), "--device", "cpu", "--no-compile", "--wandb", "disabled"])
    assert exit_info.value.code == 1
    assert capsys.readouterr().err.strip() == f"error: {expected}"


def test_records_from_before_a_setting_existed_keep_the_behaviour_they_were_trained_with():
    """A checkpoint without --split-seed split with --seed; one without --encoder-bond-length-features
    was trained without them, whatever today's default."""
    record = current_record()
    record["seed"] = 7
    del record["split_seed"]
    del record["model"]["encoder"]["bond_length_features"]
    config = from_dict(TrainConfig, record)
    assert (config.seed, config.split_seed) == (7, 7)
    assert config.model.encoder.bond_length_features is False
    assert from_dict(TrainConfig, current_record()).model.encoder.bond_length_features is True


def validation_frames(data, **settings) -> np.ndarray:
    """The validation frames of a run as the train command builds it (no training)."""
    config = TrainConfig(data=data, batch_size=4, device="cpu", compile=False, model=tiny_model_config(), **settings)
    run = build_run(config, load_dataset(data), None)
    return run.validation_coords.numpy()


def test_the_split_seed_alone_chooses_the_validation_frames(tiny_npz):
    """Bug: one --seed set both the split and the initialisation, so a second seed validated on other frames."""
    first = validation_frames(tiny_npz, seed=0)
    assert np.array_equal(validation_frames(tiny_npz, seed=1), first), "another --seed, the same validation frames"
    assert not np.array_equal(validation_frames(tiny_npz, seed=0, split_seed=3), first)
    dataset = load_dataset(tiny_npz)
    expected = training_split(dataset.coords, dataset.trajectory_labels(), None, 0.1, 3, 1).validation
    expected = expected - expected.mean(axis=1, keepdims=True)
    np.testing.assert_allclose(validation_frames(tiny_npz, seed=0, split_seed=3), expected, atol=1e-6)


def test_flags_and_checkpoints_carry_both_seeds(aib9, tiny_npz, tmp_path):
    config, _ = parse_config(["--seed", "4", "--split-seed", "2"])
    assert (config.seed, config.split_seed) == (4, 2)
    config = TrainConfig(data=tiny_npz, seed=4, split_seed=2, model=tiny_model_config())
    path = tmp_path / "run.pt"
    save_checkpoint(path, model_payload(config, aib9.topology, make_model(aib9)))
    checkpoint = load_checkpoint(path)
    assert (checkpoint["config"]["seed"], checkpoint["config"]["split_seed"]) == (4, 2)
    dataset = load_dataset(tiny_npz)
    split = run_split(checkpoint, path)[1]
    train, validation = split.train, split.validation
    expected = training_split(dataset.coords, dataset.trajectory_labels(), None, 0.1, 2, 1)
    expected_train, expected_validation = expected.train, expected.validation
    assert np.array_equal(validation, expected_validation) and np.array_equal(train, expected_train)


def test_an_older_checkpoint_without_a_split_seed_keeps_the_split_it_trained_on(aib9, tiny_npz, tmp_path):
    config = TrainConfig(data=tiny_npz, seed=5, model=tiny_model_config())
    payload = model_payload(config, aib9.topology, make_model(aib9))
    del payload["config"]["split_seed"]
    path = tmp_path / "old.pt"
    save_checkpoint(path, payload)
    validation = run_split(load_checkpoint(path), path)[1].validation
    dataset = load_dataset(tiny_npz)
    labels = dataset.trajectory_labels()
    assert np.array_equal(validation, training_split(dataset.coords, labels, None, 0.1, 5, 1).validation)
    assert not np.array_equal(validation, training_split(dataset.coords, labels, None, 0.1, 0, 1).validation)


def test_resume_keeps_the_split_seed(aib9, tiny_npz, tmp_path):
    config = TrainConfig(data=tiny_npz, seed=1, split_seed=6, model=tiny_model_config())
    model = make_model(aib9)
    optimizer = torch.optim.AdamW(model.parameters())
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    path = tmp_path / "last.pt"
    payload = training_payload(config, aib9.topology, model, optimizer, scheduler, Progress(), torch.device("cpu"))
    save_checkpoint(path, payload)
    resumed, _ = parse_config(["--resume", str(path), "--split-seed", "9", "--seed", "3"])
    assert (resumed.seed, resumed.split_seed) == (1, 6)
