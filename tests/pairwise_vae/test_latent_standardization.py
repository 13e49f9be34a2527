"""The posterior means are standardised over each training batch, so that z tells frames apart from the first step."""

from __future__ import annotations

import numpy as np
import torch
from pairwise_helpers import make_model
from pairwise_vae.config import from_dict, to_dict
from pairwise_vae.data.split import subsample
from pairwise_vae.model.encoder import EncoderConfig
from pairwise_vae.sampling.inference import run_split
from pairwise_vae.training.checkpoint import load_checkpoint, model_from_checkpoint
from pairwise_vae.training.validation import STATISTICS_FRAMES, set_latent_statistics


def spread_frames(aib9, count: int = 16) -> torch.Tensor:
    """(count, 58, 3) frames evenly spaced over the embedded data, Angstrom."""
    return torch.from_numpy(aib9.coords[:: len(aib9.coords) // count][:count]).float()


def test_fresh_means_of_different_frames_differ_at_order_one(aib9):
    model = make_model(aib9)
    frames = spread_frames(aib9)
    mu, _ = model.encode(frames)
    assert torch.allclose(mu.std(dim=0), torch.ones(mu.shape[1]), atol=0.1), "standardised: about 1 in every dimension"
    model.encoder.mu_norm = None
    raw, _ = model.encode(frames)
    assert raw.std(dim=0).max() < 1e-2, "without it, fresh means barely differ (about 1e-4): z would be noise"


def test_under_bfloat16_autocast_the_means_are_float32_and_follow_the_float32_ones(aib9):
    model = make_model(aib9)
    frames = spread_frames(aib9)
    mu, _ = model.encode(frames)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low, _ = model.encode(frames)
    assert low.dtype == torch.float32
    correlation = np.corrcoef(mu.detach().numpy().ravel(), low.detach().numpy().ravel())[0, 1]
    assert correlation > 0.5


def test_in_evaluation_a_frame_encodes_alike_alone_and_in_a_batch(aib9):
    model = make_model(aib9)
    frames = spread_frames(aib9)
    with torch.no_grad():
        trained, _ = model.encode(frames)
        assert torch.equal(model.encoder.mu_norm.running_var, torch.ones(4)), "training batches leave them alone"
        set_latent_statistics(model, frames, amp=False)
        single_in_training, _ = model.encode(frames[:1])  # a batch of one uses the set statistics too
    model.eval()
    with torch.no_grad():
        batch, _ = model.encode(frames)
        single, _ = model.encode(frames[:1])
    # the encoder's float32 rounding (about 1e-8) differs between batch sizes, standardised by a spread of 1e-4
    torch.testing.assert_close(single[0], batch[0], rtol=0, atol=2e-3)
    torch.testing.assert_close(single_in_training, single, rtol=0, atol=1e-6)
    torch.testing.assert_close(batch, trained, rtol=0, atol=2e-3)  # the statistics of the batch itself


def test_an_older_record_encodes_without_standardisation(aib9):
    record = to_dict(EncoderConfig())
    assert record.pop("standardize_means") is True
    assert from_dict(EncoderConfig, record).standardize_means is False


def test_the_epoch_end_sets_the_statistics_that_evaluation_standardises_by(aib9):
    model = make_model(aib9)
    frames = spread_frames(aib9, 32)
    model.eval()
    stale, _ = model.encode(frames)
    assert stale.std(dim=0).max() < 1e-2, "a fresh model's running statistics (variance 1) leave the means as they are"
    set_latent_statistics(model, frames, amp=False)
    mu, _ = model.encode(frames)
    torch.testing.assert_close(mu.std(dim=0, unbiased=False), torch.ones(mu.shape[1]), rtol=0, atol=1e-3)
    torch.testing.assert_close(mu.mean(dim=0), torch.zeros(mu.shape[1]), rtol=0, atol=1e-3)


def test_a_run_stores_the_statistics_of_its_final_weights(tiny_run):
    """Both checkpoints standardise the means of their own weights: over the run's training frames they have mean 0
    and standard deviation 1 in evaluation (the running averages of training batches do not)."""
    for name in ("last.pt", "best.pt"):
        checkpoint = load_checkpoint(tiny_run / name)
        model = model_from_checkpoint(checkpoint).eval()
        _, split = run_split(checkpoint, tiny_run / name)
        frames = subsample(torch.from_numpy(split.train), STATISTICS_FRAMES)
        with torch.no_grad():
            mu, _ = model.encode(frames)
        # the tiny run trains on fewer frames than STATISTICS_FRAMES: all of them set the statistics
        torch.testing.assert_close(mu.mean(dim=0), torch.zeros(mu.shape[1]), rtol=0, atol=1e-3)
        torch.testing.assert_close(mu.std(dim=0, unbiased=False), torch.ones(mu.shape[1]), rtol=0, atol=1e-3)
