"""CUDA code paths: bf16 autocast, torch.compile, device placement, GPU checkpoints read on a CPU.

Skipped without a CUDA GPU; ``make gpu-check`` runs them (``pytest -m cuda``).
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from bond_helpers import TINY_MODEL_FLAGS, make_model
from bond_vae.training.checkpoint import load_checkpoint

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]
CUDA = torch.device("cuda")


def test_model_lives_on_the_gpu_and_bf16_autocast_training_lowers_the_loss(aib9):
    model = make_model(aib9).to(CUDA)
    assert all(tensor.device.type == "cuda" for tensor in [*model.parameters(), *model.buffers()])
    batch = torch.from_numpy(aib9.coords[:16]).to(CUDA)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, fused=True)
    losses = []
    for _ in range(40):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            terms = model.loss(batch, beta=1e-3)
        optimizer.zero_grad(set_to_none=True)
        terms.total.backward()
        optimizer.step()
        losses.append(terms.reconstruction.item())
    assert terms.total.dtype == torch.float32  # the loss is computed in the input's precision
    assert np.isfinite(losses).all()
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5])
    assert model.sample(4).device.type == "cuda"


def test_compiled_model_on_the_gpu_matches_eager(aib9):
    model = make_model(aib9).to(CUDA).eval()
    batch = torch.from_numpy(aib9.coords[:8]).to(CUDA)
    with torch.no_grad():
        mu, log_var = model.encode(batch)
        expected = model.decode(mu)
        compiled_mu, compiled_log_var = torch.compile(model.encoder)(model.atomic_numbers, batch)
        compiled = torch.compile(model.decoder)(compiled_mu)
    torch.testing.assert_close(compiled_mu, mu, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(compiled_log_var, log_var, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(compiled, expected, rtol=1e-4, atol=1e-4)


def test_a_run_trained_on_the_gpu_samples_on_a_cpu(tiny_npz, tmp_path):
    command = [sys.executable, "-m", "bond_vae", "--data", str(tiny_npz), "--epochs", "1", "--batch-size", "8"]
    command += ["--device", "cuda", "--wandb", "disabled", "--output-dir", str(tmp_path / "runs"), *TINY_MODEL_FLAGS]
    trained = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    assert trained.returncode == 0, trained.stderr[-2000:]
    (checkpoint,) = (tmp_path / "runs").glob("*/last.pt")

    payload = load_checkpoint(checkpoint, map_location="cpu")
    assert all(tensor.device.type == "cpu" for tensor in payload["model"].values())
    sample = "from bond_vae.sampling.sample import main; main()"
    output = tmp_path / "samples"
    flags = [str(checkpoint), "--device", "cpu", "--num-samples", "8", "--output", str(output)]
    cpu_only = os.environ | {"CUDA_VISIBLE_DEVICES": ""}
    sampled = subprocess.run(
        [sys.executable, "-c", sample, *flags], capture_output=True, text=True, timeout=300, env=cpu_only, check=False
    )
    assert sampled.returncode == 0, sampled.stderr[-2000:]
    with np.load(output.with_suffix(".npz")) as archive:
        coords = archive["coords"]
    assert coords.shape == (8, 58, 3) and np.isfinite(coords).all()
