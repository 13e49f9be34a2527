"""bond-vae-train --config FILE: YAML or TOML settings under the command line; the recipes under recipes/."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from bond_helpers import run_main, tiny_run_flags
from bond_vae.config import ConfigFileError
from bond_vae.training.config import TrainConfig
from bond_vae.training.train import main, parse_config

RECIPES = Path(__file__).resolve().parents[2] / "recipes"
PACKAGE_RECIPES = RECIPES / "bond_vae"

# the same settings in both formats: a switch, an optional setting set to none, a choice, numbers
# (YAML 1.1 reads 2e-4 without a dot as text: the flag's type converts it as on the command line)
YAML_SETTINGS = """\
# a comment
encoder_num_layers: 2
encoder-cutoff: 4.5
beta: 2e-4
learning_rate: 1.0e-3
compile: false
decoder_pair_channels: null
parity: mirror-symmetric
run_name: from-file
"""
TOML_SETTINGS = """\
# a comment
encoder_num_layers = 2
encoder-cutoff = 4.5
beta = 2e-4
learning_rate = 1.0e-3
compile = false
decoder_pair_channels = "none"
parity = "mirror-symmetric"
run_name = "from-file"
"""


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.fixture(params=["yaml", "yml", "toml"])
def settings_file(request, tmp_path) -> Path:
    return write(tmp_path / f"settings.{request.param}", TOML_SETTINGS if request.param == "toml" else YAML_SETTINGS)


def test_the_file_sets_what_it_names_and_leaves_the_rest_at_the_defaults(settings_file):
    config, _ = parse_config(["--config", str(settings_file)])
    expected = TrainConfig(
        beta=2e-4, learning_rate=1e-3, compile=False, parity="mirror-symmetric", run_name="from-file"
    )
    expected.model.encoder.num_layers = 2
    expected.model.encoder.cutoff = 4.5
    expected.model.decoder.pair_channels = None
    assert config == expected


def test_flags_on_the_command_line_override_the_file(settings_file):
    argv = ["--encoder-num-layers", "5", "--config", str(settings_file), "--compile", "--decoder-pair-channels", "8"]
    config, _ = parse_config(argv)
    assert config.model.encoder.num_layers == 5 and config.compile is True
    assert config.model.decoder.pair_channels == 8
    assert config.model.encoder.cutoff == 4.5 and config.beta == 2e-4, "the file's other settings stay"


def refusal(argv: list[str], capsys) -> str:
    """Run the training command; assert it exits with code 2 and one error line; return the line."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    return err


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("unknown.yaml", "encoder_num_layer: 3\n", "unknown setting 'encoder_num_layer' (no flag --encoder-num-layer)"),
        ("unknown.toml", "free_bits = 1.0\n", "unknown setting 'free_bits' (no flag --free-bits)"),
        ("choice.toml", 'encoder_graph = "radius"\n', "encoder_graph must be one of bonds, bonds+radius, got 'radius'"),
        ("retired.yaml", "encoder_chiral_features: true\n", "unknown setting 'encoder_chiral_features'"),
        ("flagless.yaml", "decoder_coarse_channels: 0\n", "unknown setting 'decoder_coarse_channels'"),
        ("not_int.yaml", "encoder_num_layers: 3.5\n", "encoder_num_layers must be an integer, got 3.5"),
        ("text.toml", 'batch_size = "many"\n', "batch_size must be an integer, got 'many'"),
        ("switch.yaml", "compile: 1\n", "compile must be true or false, got 1"),
        ("bool_number.yaml", "beta: true\n", "beta must be a number, got True"),
        ("list.yaml", "beta: [1, 2]\n", "beta must be a number, got [1, 2]"),
        (
            "choice.yaml",
            "parity: sideways\n",
            "parity must be one of auto, mirror-symmetric, chiral, none, got 'sideways'",
        ),
        ("not_none.yaml", "epochs: null\n", "epochs must be an integer, got None"),
        ("nested.yaml", "encoder:\n  num_layers: 3\n", "encoder holds a table; write the settings flat"),
        ("nested.toml", "[encoder]\nnum_layers = 3\n", "encoder holds a table; write the settings flat"),
        ("twice.yaml", "encoder_num_layers: 3\nencoder-num-layers: 4\n", "encoder-num-layers is set twice"),
        ("list_top.yaml", "- beta: 1\n", "expected 'flag: value' lines (a table), got a list"),
        ("broken.yaml", "beta: [1\n", "not valid YAML ("),
        ("broken.toml", "beta = \n", "not valid TOML ("),
        ("config.yaml", "config: other.yaml\n", "unknown setting 'config'"),
        ("settings.json", "{}", "a config file must be YAML (.yaml, .yml) or TOML (.toml), not '.json'"),
    ],
)
def test_a_bad_file_is_refused_with_one_line_naming_the_file_and_the_key(tmp_path, capsys, name, text, expected):
    path = write(tmp_path / name, text)
    err = refusal(["--config", str(path)], capsys)
    assert err.startswith(f"error: {path}: ")
    assert expected in err


def test_a_missing_file_is_refused(tmp_path, capsys):
    err = refusal(["--config", str(tmp_path / "absent.yaml")], capsys)
    assert err == f"error: {tmp_path / 'absent.yaml'}: config file not found"


def test_an_empty_yaml_file_changes_nothing(tmp_path):
    config, _ = parse_config(["--config", str(write(tmp_path / "empty.yaml", "# nothing yet\n"))])
    assert config == TrainConfig()


def test_config_json_records_the_resolved_settings(tiny_npz, tmp_path):
    """A one-epoch tiny run: the file's settings and the command line's end up in config.json."""
    settings = write(tmp_path / "run.yaml", "warmup_steps: 3\nbeta: 0.5e-3\nsplit_seed: 2\nrun_name: from-file\n")
    flags = tiny_run_flags(tiny_npz, tmp_path / "runs", 1, "--config", str(settings), "--beta", "0.25e-3")
    assert run_main(flags) == 0
    recorded = json.loads((tmp_path / "runs" / "from-file" / "config.json").read_text())
    assert recorded["warmup_steps"] == 2, "tiny_run_flags gives --warmup-steps 2 on the command line"
    assert recorded["beta"] == 0.25e-3 and recorded["split_seed"] == 2
    assert recorded["batch_size"] == 8 and recorded["model"]["latent_dim"] == 4


def recipe_files() -> list[Path]:
    return sorted(path for path in PACKAGE_RECIPES.rglob("*") if path.is_file())


def test_every_recipe_lies_in_a_package_folder():
    """Each package's tests parse its own recipes: a file elsewhere under recipes/ would go unchecked."""
    stray = [
        path
        for path in RECIPES.rglob("*")
        if path.is_file() and path.relative_to(RECIPES).parts[0] not in ("bond_vae", "pairwise_vae")
    ]
    assert not stray


def test_every_recipe_parses_with_todays_flags():
    """A recipe that names a retired flag, or a value its flag no longer takes, fails here."""
    for path in recipe_files():
        try:
            config, _ = parse_config(["--config", str(path)])
        except ConfigFileError as error:
            pytest.fail(f"recipe {path.relative_to(RECIPES)}: {error}")
        config.validate()


# the measured run of recipes/bond_vae/conformations.yaml, flag for flag, on the defaults of the time, and the
# stereocentre weight of its A4GA4 run (a term that is zero for AIB9, which has no stereocentres)
MEASURED_CONFORMATION_FLAGS = (
    "--batch-size 32 --decoder-pair-channels 32 --beta 2e-5 --learning-rate 3e-3 --angle-weight 1 --torsion-weight 1 "
    "--steric-weight 1 --relative-chirality-weight 1 --aligned-weight 0.1 --encoder-graph bonds+radius "
    "--encoder-num-layers 3 --encoder-cutoff 4 --encoder-vector-channels 16 --stereocentre-weight 30"
).split()
# the defaults of the time that 0.3 changed
DEFAULTS_BEFORE_0_3 = ["--no-encoder-bond-length-features", "--latent-dim", "32"]


def test_the_conformation_recipe_gives_the_measured_run():
    assert PACKAGE_RECIPES / "conformations.yaml" in recipe_files()
    config, _ = parse_config(["--config", str(PACKAGE_RECIPES / "conformations.yaml")])
    measured, _ = parse_config([*DEFAULTS_BEFORE_0_3, *MEASURED_CONFORMATION_FLAGS])
    assert config == measured
    assert (config.beta, config.learning_rate, config.model.latent_dim) == (2e-5, 3e-3, 32)
    assert config.model.encoder.graph == "bonds+radius" and not config.model.encoder.bond_length_features
    first_line = (PACKAGE_RECIPES / "conformations.yaml").read_text().splitlines()[0]
    assert first_line.startswith("# Measured: 30 CPU minutes")
