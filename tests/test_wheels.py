"""Each package builds into a wheel that installs and trains on its embedded data on its own.

The wheel is installed into a fresh virtual environment with its locked dependencies (offline
from the uv cache where it can be, else from the index), and its training command runs from a
folder outside the checkout: the default dataset must come with the wheel (package data).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TINY_FLAGS = (
    "--epochs 1 --max-frames 64 --no-compile --wandb disabled --device cpu --batch-size 32 --latent-dim 4 "
    "--encoder-hidden-channels 16 --encoder-num-layers 2 --encoder-num-heads 2 --encoder-num-rbf 8 "
    "--decoder-hidden-channels 16 --decoder-num-layers 2 --decoder-pair-channels 16"
).split()
# The workspace's build settings of torch-cluster (pyproject.toml, [tool.uv]): its sdist imports
# torch in setup.py, so it is built against the torch that is installed.
UV_CONFIG = """\
[extra-build-dependencies]
torch-cluster = [{ requirement = "torch", match-runtime = true }]

[[dependency-metadata]]
name = "torch-cluster"
version = "1.6.3"
requires-dist = ["scipy"]
"""


def uv() -> list[str]:
    found = shutil.which("uv")
    return [found] if found else [sys.executable, "-m", "uv"]


def clean_environment() -> dict[str, str]:
    """This process's environment without the workspace's virtual environment."""
    return {key: value for key, value in os.environ.items() if key not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}


def run_uv(*arguments: str, cwd: Path) -> None:
    """A uv command, offline from the cache first and with the index if the cache lacks something."""
    for offline in (["--offline"], []):
        result = subprocess.run(
            [*uv(), *arguments, *offline],
            cwd=cwd,
            env=clean_environment(),
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        if result.returncode == 0:
            return
    raise AssertionError(f"uv {' '.join(arguments)} failed:\n{result.stdout}\n{result.stderr}")


@pytest.mark.slow
@pytest.mark.parametrize(("package", "module"), [("bond-vae", "bond_vae"), ("pairwise-vae", "pairwise_vae")])
def test_wheel_installs_and_trains_on_its_embedded_data(tmp_path, package, module):
    dist = tmp_path / "dist"
    run_uv("build", "--package", package, "--wheel", "--out-dir", str(dist), cwd=ROOT)
    (wheel,) = dist.glob(f"{module}-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        metadata = archive.read(next(name for name in names if name.endswith(".dist-info/METADATA"))).decode()
    assert f"{module}/data/resources/aib9.npz" in names
    assert "License-Expression: MIT" in metadata and "Requires-Python: >=3.10" in metadata
    assert "Classifier: " in metadata and "Provides-Extra: md" in metadata

    locked = tmp_path / "pylock.toml"
    run_uv(
        "export", "--frozen", "--package", package, "--no-dev", "--no-emit-workspace", "--format", "pylock.toml",
        "--output-file", str(locked), "--quiet", cwd=ROOT,
    )  # fmt: skip
    (tmp_path / "uv.toml").write_text(UV_CONFIG)
    venv = tmp_path / "venv"
    run_uv("venv", "--quiet", "--python", sys.executable, str(venv), cwd=tmp_path)
    python = str(venv / "bin" / "python")
    config = ["--config-file", str(tmp_path / "uv.toml"), "--python", python, "--quiet"]
    run_uv("pip", "install", *config, "-r", str(locked), cwd=tmp_path)
    run_uv("pip", "install", *config, str(wheel), cwd=tmp_path)

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = subprocess.run(
        [str(venv / "bin" / f"{package}-train"), *TINY_FLAGS, "--output-dir", "runs"],
        cwd=elsewhere,
        env=clean_environment(),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert str(venv) in result.stdout and f"{module}/data/resources/aib9.npz" in result.stdout  # the wheel's own copy
    (run,) = (elsewhere / "runs").iterdir()
    assert (run / "best.pt").is_file() and (run / "metrics.jsonl").is_file()

    # without the 'md' extra a trajectory is refused in one line that names the extra
    (elsewhere / "traj.xtc").write_bytes(b"not read")
    (elsewhere / "top.pdb").write_text("END\n")
    result = subprocess.run(
        [str(venv / "bin" / f"{package}-train"), "--data", "traj.xtc", "--topology", "top.pdb"],
        cwd=elsewhere,
        env=clean_environment(),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"error: traj.xtc: reading MD trajectories needs MDTraj; install the extra: pip install '{package}[md]'"
    ]
