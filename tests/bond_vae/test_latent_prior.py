"""The mixture prior (the default): a Gaussian mixture fitted to the training split's posterior means."""

from __future__ import annotations

import json

import numpy as np
import torch
from bond_vae.evaluation.evaluate import main as evaluate_main
from bond_vae.sampling.inference import encode_in_batches, load_for_inference, run_split
from bond_vae.sampling.prior import fit_latent_mixture
from bond_vae.sampling.sample import main as sample_main
from bond_vae.sampling.sampler import SamplerOptions, fit_sampler, prior_latents

FLAGS = ["--device", "cpu", "--no-pdb"]


def test_mixture_recovers_the_shares_and_shapes_of_two_clusters():
    rng = np.random.default_rng(0)
    clusters = np.concatenate([rng.normal(-3.0, 0.3, size=(700, 4)), rng.normal(3.0, 0.5, size=(300, 4))])
    mixture = fit_latent_mixture(clusters, components=2, seed=0)
    draws = mixture.sample(8000, torch.Generator().manual_seed(1))
    right = draws[:, 0] > 0
    assert abs(right.float().mean().item() - 0.3) < 0.02  # N(0, I) would give 0.5
    assert torch.allclose(draws[right].mean(0), torch.full((4,), 3.0), atol=0.05)
    assert torch.allclose(draws[~right].std(0), torch.full((4,), 0.3), atol=0.02)
    assert torch.allclose(draws[right].std(0), torch.full((4,), 0.5), atol=0.03)
    again = mixture.sample(8000, torch.Generator().manual_seed(1))
    assert torch.equal(draws, again), "the same seed must give the same draws"


def test_mixture_of_fewer_frames_than_components_has_one_per_frame():
    mixture = fit_latent_mixture(np.arange(12.0).reshape(3, 4), components=16, seed=0)
    assert len(mixture.weights) == 3 and mixture.frames == 3
    assert torch.isfinite(mixture.sample(10, torch.Generator().manual_seed(0))).all()


def test_mixture_prior_draws_where_the_encoder_puts_the_training_frames(tiny_checkpoint):
    checkpoint, model, _, device = load_for_inference(tiny_checkpoint, "cpu")
    train = run_split(checkpoint, tiny_checkpoint)[1].train
    posterior_means, _ = encode_in_batches(model, train, 64, device, bf16=False)
    sampler = fit_sampler(model, train, 64, False, False, seed=0)
    draws, description = prior_latents(
        sampler, SamplerOptions(), 2000, model.latent_dim, torch.Generator().manual_seed(0)
    )
    assert description == "a 16-component Gaussian mixture fitted to the posterior means of 36 training frames"
    # the untrained encoder puts every frame near one point away from the origin: so do the draws, N(0, I) does not
    centre = torch.from_numpy(posterior_means.mean(0))
    assert centre.norm() > 0.2 and (draws - centre).norm(dim=1).max() < 0.1
    standard, description = prior_latents(
        sampler, SamplerOptions(prior="standard"), 5, model.latent_dim, torch.Generator().manual_seed(0)
    )
    assert description == "N(0, I)" and torch.equal(
        standard, torch.randn(5, model.latent_dim, generator=torch.Generator().manual_seed(0))
    )


def test_sample_and_evaluate_draw_from_the_mixture_by_default_and_record_it(tiny_checkpoint, tmp_path):
    sample_main([str(tiny_checkpoint), "--num-samples", "6", "--output", str(tmp_path / "samples")] + FLAGS)
    with np.load(tmp_path / "samples.npz") as saved:
        assert saved["coords"].shape == (6, 58, 3)
        metadata = json.loads(str(saved["metadata"]))
    assert metadata["prior"] == "a 16-component Gaussian mixture fitted to the posterior means of 36 training frames"
    evaluate_main([str(tiny_checkpoint), "--num-samples", "8", "--output", str(tmp_path / "report"), *FLAGS[:2]])
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert report["prior"] == metadata["prior"]
    assert f"latents drawn from {metadata['prior']}" in (tmp_path / "report" / "report.md").read_text()
    sample_main([str(tiny_checkpoint), "--prior", "standard", "--output", str(tmp_path / "standard")] + FLAGS)
    with np.load(tmp_path / "standard.npz") as saved:
        assert json.loads(str(saved["metadata"]))["prior"] == "N(0, I)"
