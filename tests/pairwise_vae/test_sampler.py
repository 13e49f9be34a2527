"""The model's sampler: fitted when training ends, stored in the checkpoint, the default of sample and evaluate."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from pairwise_vae.data.dataset import load_dataset
from pairwise_vae.evaluation.evaluate import main as evaluate_main
from pairwise_vae.model.parity import orient_samples
from pairwise_vae.sampling.inference import decode_in_batches, load_for_inference, run_split
from pairwise_vae.sampling.sample import main as sample_main
from pairwise_vae.sampling.sampler import Sampler, SamplerOptions, draw_samples, fit_sampler
from pairwise_vae.training import loop, validation
from pairwise_vae.training import train as train_command
from pairwise_vae.training.checkpoint import (
    CHECKPOINT_VERSION,
    load_checkpoint,
    model_from_checkpoint,
    save_checkpoint,
    store_sampler,
)

FLAGS = [
    "--num-samples",
    "12",
    "--device",
    "cpu",
    "--no-pdb",
    "--no-compile",
    "--precision",
    "fp32",
]  # as the draws compared


def edited_copy(checkpoint: Path, destination: Path, *, data: str | None = None, sampler: bool = True) -> Path:
    """A copy of a checkpoint whose run read its data from ``data`` (unchanged: None), without its sampler
    unless ``sampler``."""
    payload = load_checkpoint(checkpoint)
    if data is not None:
        payload["config"]["data"] = data
    if not sampler:
        del payload["sampler"]
    save_checkpoint(destination, payload)
    return destination


def sample_file(checkpoint: Path, output: Path, *flags: str) -> tuple[np.ndarray, dict]:
    sample_main([str(checkpoint), "--output", str(output), *FLAGS, *flags])
    with np.load(output.with_suffix(".npz")) as saved:
        return saved["coords"], json.loads(str(saved["metadata"]))


def test_a_finished_run_stores_the_sampler_of_each_checkpoints_own_weights(tiny_run):
    for name in ("best.pt", "last.pt"):
        payload = load_checkpoint(tiny_run / name)
        assert payload["format_version"] == CHECKPOINT_VERSION == 7
        stored = Sampler.from_record(payload["sampler"])
        model = model_from_checkpoint(payload)
        train = run_split(payload, tiny_run / name)[1].train
        train = train - train.mean(axis=1, keepdims=True)  # training fits to its centred frames
        refitted = fit_sampler(model, train, 64, False, False, seed=payload["config"]["seed"])
        torch.testing.assert_close(stored.mixture.means, refitted.mixture.means, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(stored.mixture.weights, refitted.mixture.weights, rtol=1e-4, atol=1e-4)
        assert stored.mixture.frames == len(train) == 43  # 48 frames, the default validation fraction
        bonds = torch.as_tensor(payload["topology"]["bonds"])
        lengths = torch.from_numpy(train).double()[:, bonds].diff(dim=2).squeeze(2).norm(dim=-1)
        torch.testing.assert_close(stored.relaxation.bond_lengths, lengths.mean(dim=0))
        assert stored.relaxation.steric_distance == model.config.steric_distance
        assert (stored.torsion_noise is None) == (stored.torsion_noise_note is not None)


def test_a_checkpoint_whose_training_data_is_gone_samples_with_its_full_sampler(tiny_run, tmp_path, capfd):
    moved = edited_copy(tiny_run / "best.pt", tmp_path / "moved.pt", data=str(tmp_path / "gone.npz"))
    coords, metadata = sample_file(moved, tmp_path / "moved")
    assert "note:" not in capfd.readouterr().err
    stored = Sampler.from_record(load_checkpoint(moved)["sampler"])
    assert metadata["prior"] == stored.mixture.describe() and "43 training frames" in metadata["prior"]
    assert metadata["sampler"] == "fitted when training ended (stored in the checkpoint)"
    assert metadata["torsion_noise"] is (stored.torsion_noise is not None)
    # the same draws as through the sampler in hand (mixture, parity rule, torsion noise)
    _, model, _, _ = load_for_inference(moved, "cpu")
    draws = draw_samples(model, stored, SamplerOptions(), 12, torch.Generator().manual_seed(0), 1024, False, False)
    np.testing.assert_allclose(coords, draws.samples, atol=1e-6)

    relaxed, metadata = sample_file(moved, tmp_path / "relaxed", "--relax")
    assert metadata["relaxed"] is True
    bonds = load_dataset(tmp_path / "relaxed.npz").topology.bonds
    lengths = np.linalg.norm(relaxed[:, bonds[:, 0]] - relaxed[:, bonds[:, 1]], axis=-1)
    assert np.abs(lengths - stored.relaxation.bond_lengths.numpy()).max() < 0.01

    evaluate_main(
        [str(moved), "--output", str(tmp_path / "report"), "--data", str(tiny_run.parent.parent / "tiny.npz")]
        + FLAGS[:4]
    )
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert report["prior"] == stored.mixture.describe() and report["samples"]["count"] == 12


def test_without_a_stored_sampler_it_is_refitted_to_the_training_data_with_a_note(tiny_run, tmp_path, capfd):
    old = edited_copy(tiny_run / "best.pt", tmp_path / "old.pt", sampler=False)
    _, metadata = sample_file(old, tmp_path / "old")
    notes = [line for line in capfd.readouterr().err.splitlines() if line.startswith("note:")]
    assert len(notes) in (1, 2) and "holds no fitted sampler" in notes[0] and "refitting it to the 43" in notes[0]
    assert metadata["sampler"].startswith("refitted to the training data")
    assert metadata["prior"] == Sampler.from_record(load_checkpoint(tiny_run / "best.pt")["sampler"]).mixture.describe()


def test_without_a_sampler_or_training_data_the_raw_decoder_with_a_note(tiny_run, tmp_path, capfd):
    orphan = edited_copy(tiny_run / "best.pt", tmp_path / "orphan.pt", data=str(tmp_path / "gone.npz"), sampler=False)
    coords, metadata = sample_file(orphan, tmp_path / "orphan")
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "holds no fitted sampler, and its training data cannot be read" in err[0]
    assert "drawing from the raw decoder" in err[0]
    assert metadata["prior"] == "N(0, I)" and metadata["torsion_noise"] is False
    raw, _ = sample_file(tiny_run / "best.pt", tmp_path / "raw", "--prior", "standard", "--no-torsion-noise")
    np.testing.assert_allclose(coords, raw, atol=1e-6)
    with pytest.raises(SystemExit) as exit_info:
        sample_main([str(orphan), "--output", str(tmp_path / "refused"), "--relax", *FLAGS])
    err = capfd.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 1 and len(err) == 1 and err[0].startswith("error: --relax: ")


def test_prior_standard_without_torsion_noise_is_the_raw_decoder(tiny_run, tmp_path):
    coords, metadata = sample_file(tiny_run / "best.pt", tmp_path / "raw", "--prior", "standard", "--no-torsion-noise")
    assert metadata["sampler"] == "none (the raw decoder)" and metadata["prior"] == "N(0, I)"
    _, model, _, _ = load_for_inference(tiny_run / "best.pt", "cpu")
    generator = torch.Generator().manual_seed(0)
    latents = torch.randn(12, model.latent_dim, generator=generator)
    decoded = torch.from_numpy(decode_in_batches(model, latents, 1024, False, False))
    np.testing.assert_allclose(coords, orient_samples(decoded, model.parity, generator).numpy(), atol=1e-6)


def test_an_interpolation_is_decoded_without_prior_or_torsion_noise(tiny_run, tmp_path, capfd):
    data = tiny_run.parent.parent / "tiny.npz"
    orphan = edited_copy(tiny_run / "best.pt", tmp_path / "orphan.pt", data=str(tmp_path / "gone.npz"), sampler=False)
    _, metadata = sample_file(orphan, tmp_path / "path", "--interpolate", "0,5", "--steps", "3", "--data", str(data))
    assert capfd.readouterr().err.strip() == ""  # no sampler needed, so no note
    assert metadata["source"] == "interpolation" and metadata["torsion_noise"] is False


def test_a_stored_sampler_survives_the_checkpoint_round_trip(tiny_run, tmp_path):
    payload = load_checkpoint(tiny_run / "last.pt")
    sampler = Sampler.from_record(payload["sampler"])
    del payload["sampler"]
    save_checkpoint(tmp_path / "bare.pt", payload)
    store_sampler(tmp_path / "bare.pt", sampler.to_record())
    again = Sampler.from_record(torch.load(tmp_path / "bare.pt", weights_only=True)["sampler"])
    torch.testing.assert_close(again.mixture.scale_tril, sampler.mixture.scale_tril, rtol=0, atol=0)
    torch.testing.assert_close(again.relaxation.far_pairs, sampler.relaxation.far_pairs, rtol=0, atol=0)
    if sampler.torsion_noise is not None:
        np.testing.assert_array_equal(again.torsion_noise.scale_tril, sampler.torsion_noise.scale_tril)
        np.testing.assert_array_equal(again.torsion_noise.rotatable.moving, sampler.torsion_noise.rotatable.moving)


def test_a_format_6_checkpoint_without_a_sampler_still_loads(tiny_checkpoint, tmp_path):
    payload = load_checkpoint(tiny_checkpoint)
    payload["format_version"] = 6
    torch.save(payload, tmp_path / "format6.pt")
    assert load_checkpoint(tmp_path / "format6.pt")["format_version"] == 6
    assert "sampler" not in load_checkpoint(tmp_path / "format6.pt")


def test_the_run_ends_with_the_report_of_best_pt_through_its_sampler(tiny_run):
    report = json.loads((tiny_run / "evaluation" / "report.json").read_text())
    assert report["checkpoint"] == str(tiny_run / "best.pt")
    assert report["samples"]["count"] == train_command.TRAINING_REPORT_SAMPLES == 100
    assert report["sampler"] == "fitted when training ended (stored in the checkpoint)"
    assert report["prior"] == Sampler.from_record(load_checkpoint(tiny_run / "best.pt")["sampler"]).mixture.describe()
    # nothing held out (tiny_run_flags): half of the 5 validation frames, the even-numbered of 5 one-frame blocks
    assert report["reference"]["frames"] == 3 and "validation split" in report["reference"]["description"]
    records = [json.loads(line) for line in (tiny_run / "metrics.jsonl").read_text().splitlines()]
    assert "sample_bond_mae" in records[-1]  # the last epoch is an evaluation epoch


def test_training_draws_no_evaluation_figures():
    """The per-epoch validation computes numbers and training's own figures; the report's figures are drawn
    once, by the train command (evaluation.report)."""
    for module in (validation, loop):
        names = {getattr(value, "__module__", None) for value in vars(module).values()}
        assert "pairwise_vae.evaluation.plots" not in names and "write_figures" not in vars(module)
        assert "pairwise_vae.evaluation.report" not in names
    assert (
        validation.plot_loss_curves.__module__
        == validation.plot_bond_lengths.__module__
        == "pairwise_vae.training.plots"
    )
