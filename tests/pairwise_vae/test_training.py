"""Training lowers the loss; checkpoints round-trip; an interrupted run resumes on the same curve."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal

import pytest
import torch
from pairwise_helpers import (
    SHARED_RUN_EPOCHS,
    SHARED_RUN_FLAGS,
    make_model,
    random_orthogonal,
    run_main,
    tiny_model_config,
    tiny_run_flags,
    with_trained_size_coordinate_updates,
)
from pairwise_vae.model.losses import aligned_coordinate_loss, steric_loss, steric_pairs
from pairwise_vae.model.vae import MolecularVAEMSE as MODEL_CLASS
from pairwise_vae.model.vae import reference_conformation
from pairwise_vae.training import validation
from pairwise_vae.training.checkpoint import (
    CheckpointError,
    load_checkpoint,
    model_from_checkpoint,
    model_payload,
    save_checkpoint,
)
from pairwise_vae.training.config import TrainConfig
from pairwise_vae.training.run_log import new_run_folder
from pairwise_vae.training.schedule import beta_at, learning_rate_factor
from pairwise_vae.training.validation import draw_validation_samples, validate


def at_training_step(n, action, monkeypatch):
    """Run ``action()`` in the loss of the n-th training step (validation passes are not counted)."""
    original_criterion = MODEL_CLASS.criterion
    calls = {"n": 0}

    def criterion(self, positions, *outputs, beta):
        if self.training:
            calls["n"] += 1
            if calls["n"] == n:
                action()
        return original_criterion(self, positions, *outputs, beta=beta)

    monkeypatch.setattr(MODEL_CLASS, "criterion", criterion)


def interrupt():
    os.kill(os.getpid(), signal.SIGINT)


def die():
    raise KeyboardInterrupt  # like kill -9: no final checkpoint is written


def test_a_few_optimiser_steps_lower_the_loss(aib9):
    model = make_model(aib9)
    batch = torch.from_numpy(aib9.coords[:16])
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    torch.manual_seed(0)
    losses = []
    for _ in range(40):
        terms = model.loss(batch, beta=1e-3)
        optimizer.zero_grad()
        terms.total.backward()
        optimizer.step()
        losses.append(terms.reconstruction.item())
    assert sum(losses[-5:]) / 5 < 0.8 * sum(losses[:5]) / 5, losses  # measured: 0.158 -> 0.109 A^2


def test_steric_weight_adds_the_repulsion_of_overlapping_atoms_to_the_loss(aib9):
    model = make_model(aib9)
    model.config.relative_chirality_weight = model.config.aligned_weight = 0.0  # the steric term alone
    model.config.steric_weight = 2.0
    positions = torch.from_numpy(aib9.coords[:4])
    squeezed = 0.6 * positions
    mu, log_var = torch.zeros(4, model.latent_dim), torch.zeros(4, model.latent_dim)
    terms = model.criterion(positions, squeezed, mu, log_var, beta=0.0)
    expected = steric_loss(squeezed, steric_pairs(model.bonds, 58), model.config.steric_distance)
    assert expected > 0.1
    torch.testing.assert_close(terms.steric, expected)
    torch.testing.assert_close(terms.total, terms.reconstruction + 2.0 * expected)
    assert model.criterion(positions, positions, mu, log_var, beta=0.0).steric == 0.0
    assert "steric_pairs" not in model.state_dict(), "derived from the bonds: not stored in checkpoints"


def test_aligned_coordinate_loss_against_hand_computation_and_under_e3(aib9):
    generator = torch.Generator().manual_seed(0)
    target = torch.from_numpy(aib9.coords[:3]).double()
    centred = target - target.mean(dim=1, keepdim=True)
    # shrunk about the centroid: the best superposition is the identity, MSD = (1 - s)^2 |T|^2 / N
    shrunk = 0.9 * centred
    expected = (0.01 * centred.pow(2).sum(dim=(1, 2)) / 58).mean()
    torch.testing.assert_close(aligned_coordinate_loss(shrunk, target), expected)
    for reflect in (False, True):
        moved = shrunk @ random_orthogonal(reflect, generator).double().T + torch.tensor([3.0, -1.0, 7.0])
        torch.testing.assert_close(aligned_coordinate_loss(moved, target), expected)
        assert aligned_coordinate_loss(centred @ random_orthogonal(reflect, generator).double().T, target) < 1e-9
    # one atom displaced: the loss sees it (0.5 A on 1 of 58 atoms, a little less after superposition)
    displaced = target.clone()
    displaced[:, 10, 0] += 0.5
    assert 0.5 * 0.25 / 58 < aligned_coordinate_loss(displaced, target) <= 0.25 / 58
    predicted = shrunk.clone().float().requires_grad_(True)
    aligned_coordinate_loss(predicted, target.float()).backward()
    assert torch.isfinite(predicted.grad).all() and predicted.grad.abs().sum() > 0


def test_aligned_weight_adds_the_aligned_term_to_the_total(aib9):
    model = make_model(aib9)
    assert model.config.aligned_weight == 0.1, "on by default (the measured recipe)"
    model.config.relative_chirality_weight = model.config.steric_weight = model.config.aligned_weight = 0.0
    positions = torch.from_numpy(aib9.coords[:4])
    shrunk = 0.8 * (positions - positions.mean(dim=1, keepdim=True))
    mu, log_var = torch.zeros(4, model.latent_dim), torch.zeros(4, model.latent_dim)
    assert model.criterion(positions, shrunk, mu, log_var, beta=0.0).aligned == 0.0, "off at weight 0"
    model.config.aligned_weight = 0.5
    terms = model.criterion(positions, shrunk, mu, log_var, beta=0.0)
    torch.testing.assert_close(terms.aligned, aligned_coordinate_loss(shrunk, positions))
    torch.testing.assert_close(terms.total, terms.reconstruction + 0.5 * terms.aligned)


def test_a_non_finite_batch_gives_a_non_finite_aligned_term_not_an_svd_error(aib9):
    """Bug: with the aligned term on (the default since 0.3), a NaN coordinate made the SVD raise
    LinAlgError and killed the run, where the trainer should skip the step as for any non-finite loss."""
    positions = torch.from_numpy(aib9.coords[:3])
    shrunk = 0.8 * (positions - positions.mean(dim=1, keepdim=True))
    poisoned = shrunk.clone()
    poisoned[1, 5, 0] = float("nan")
    assert torch.isnan(aligned_coordinate_loss(poisoned, positions))
    infinite = positions.clone()
    infinite[0, 0, 2] = float("inf")
    assert torch.isnan(aligned_coordinate_loss(shrunk, infinite))
    assert torch.isfinite(aligned_coordinate_loss(shrunk, positions)), "finite batches: see the hand computation"
    model = make_model(aib9)
    model.config.aligned_weight = 0.1
    mu, log_var = torch.zeros(3, model.latent_dim), torch.zeros(3, model.latent_dim)
    assert not torch.isfinite(model.criterion(positions, poisoned, mu, log_var, beta=0.0).total)


def test_checkpoint_round_trip_gives_identical_outputs(aib9, tmp_path):
    model = make_model(aib9)
    config = TrainConfig(model=tiny_model_config())
    save_checkpoint(tmp_path / "model.pt", model_payload(config, aib9.topology, model))
    restored = model_from_checkpoint(load_checkpoint(tmp_path / "model.pt"))
    batch = torch.from_numpy(aib9.coords[:4])
    z = torch.randn(3, model.latent_dim)
    torch.testing.assert_close(restored.decode(z), model.decode(z), rtol=0, atol=0)
    torch.testing.assert_close(restored.encode(batch), model.encode(batch), rtol=0, atol=0)


def test_a_checkpoint_with_the_old_name_of_the_hop_count_buffer_loads(aib9, tmp_path):
    model = make_model(aib9)
    payload = model_payload(TrainConfig(model=tiny_model_config()), aib9.topology, model)
    payload["model"]["decoder.topology"] = payload["model"].pop("decoder.hop_counts")  # as format 2 wrote it
    save_checkpoint(tmp_path / "old.pt", payload)
    restored = model_from_checkpoint(load_checkpoint(tmp_path / "old.pt"))
    torch.testing.assert_close(restored.decoder.hop_counts, model.decoder.hop_counts, rtol=0, atol=0)


def test_a_format_5_checkpoint_loads_with_the_shared_latent_input_it_was_trained_with(aib9, tmp_path):
    config = TrainConfig(model=tiny_model_config())
    config.model.decoder.latent_input = "shared"
    torch.manual_seed(0)
    model = MODEL_CLASS(
        config.model,
        torch.from_numpy(aib9.topology.atomic_numbers),
        torch.from_numpy(aib9.topology.bonds),
        torch.from_numpy(aib9.coords[0]),
    )
    payload = model_payload(config, aib9.topology, model)
    del payload["config"]["model"]["decoder"]["latent_input"]  # format 5 had no such setting
    payload["format_version"] = 5
    save_checkpoint(tmp_path / "format5.pt", payload)
    restored = model_from_checkpoint(load_checkpoint(tmp_path / "format5.pt"))
    assert restored.decoder.config.latent_input == "shared"
    z = torch.randn(3, model.latent_dim)
    torch.testing.assert_close(restored.decode(z), model.decode(z), rtol=0, atol=0)
    payload["format_version"] = 4
    save_checkpoint(tmp_path / "format4.pt", payload)
    with pytest.raises(CheckpointError, match="format4.pt: written in checkpoint format 4"):
        load_checkpoint(tmp_path / "format4.pt")


def test_a_run_writes_its_folder(tiny_run):
    for name in ("config.json", "metrics.jsonl", "last.pt", "best.pt", "loss_curves.png", "bond_lengths.png"):
        assert (tiny_run / name).is_file(), name
    records = [json.loads(line) for line in (tiny_run / "metrics.jsonl").read_text().splitlines()]
    assert [(r["split"], r["epoch"]) for r in records] == [
        (split, epoch) for epoch in range(1, SHARED_RUN_EPOCHS + 1) for split in ("train", "validation")
    ]
    assert json.loads((tiny_run / "config.json").read_text())["epochs"] == SHARED_RUN_EPOCHS
    model = model_from_checkpoint(load_checkpoint(tiny_run / "best.pt"))
    assert model.sample(2).shape == (2, 58, 3)
    assert (tiny_run / "evaluation" / "structures.png").is_file()


@pytest.mark.slow  # two training runs (killed, then resumed): about 13 CPU-s
def test_killed_run_resumes_on_the_same_curve(tiny_run, tiny_npz, tmp_path, monkeypatch):
    full = load_checkpoint(tiny_run / "last.pt")
    at_training_step(7, die, monkeypatch)
    assert run_main(tiny_run_flags(tiny_npz, tmp_path / "killed", SHARED_RUN_EPOCHS, *SHARED_RUN_FLAGS)) == 130
    monkeypatch.undo()
    interrupted = load_checkpoint(tmp_path / "killed" / "run" / "last.pt")
    assert interrupted["step"] == 6, "the periodic checkpoint of step 6 is the last one written"

    assert run_main(["--resume", str(tmp_path / "killed" / "run" / "last.pt")]) == 0
    resumed = load_checkpoint(tmp_path / "killed" / "run" / "last.pt")
    assert resumed["step"] == full["step"]
    for name, value in full["model"].items():
        torch.testing.assert_close(resumed["model"][name], value, rtol=1e-4, atol=1e-5, msg=name)


def test_sigint_saves_a_checkpoint_and_says_how_to_resume(tiny_npz, tmp_path, monkeypatch, capsys):
    at_training_step(3, interrupt, monkeypatch)
    assert run_main(tiny_run_flags(tiny_npz, tmp_path / "runs", 2, "--run-name", "run")) == 130
    checkpoint = load_checkpoint(tmp_path / "runs" / "run" / "last.pt")
    assert checkpoint["step"] == 3
    assert "--resume" in capsys.readouterr().err


def test_non_finite_steps_are_skipped_then_the_run_stops_with_a_good_state(tiny_npz, tmp_path, monkeypatch, capsys):
    original_criterion = MODEL_CLASS.criterion
    calls = {"n": 0}

    def loss_goes_nan_after_two_steps(self, positions, *outputs, beta):
        terms = original_criterion(self, positions, *outputs, beta=beta)
        calls["n"] += 1
        if calls["n"] > 2:
            terms.total = terms.total * float("nan")
        return terms

    monkeypatch.setattr(MODEL_CLASS, "criterion", loss_goes_nan_after_two_steps)
    flags = tiny_run_flags(tiny_npz, tmp_path / "runs", 3, "--run-name", "run", "--max-bad-steps", "4")
    assert run_main(flags) == 3
    err = capsys.readouterr().err
    # the host looks every 10 steps: steps 3..10 were skipped when it did
    assert "8 consecutive steps gave a non-finite loss" in err
    checkpoint = load_checkpoint(tmp_path / "runs" / "run" / "last.pt")
    assert checkpoint["step"] == 10 and checkpoint["skipped_steps"] == 8
    assert all(torch.isfinite(value).all() for value in checkpoint["model"].values() if value.is_floating_point())
    assert all(state["step"] == 2 for state in checkpoint["optimizer"]["state"].values()), (
        "skipped steps left the optimiser as it was"
    )


def test_a_full_disk_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"step": 1})

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(CheckpointError, match="No space left on device"):
        save_checkpoint(path, {"step": 2})
    monkeypatch.undo()
    assert load_checkpoint(path)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"], "no temporary file is left behind"


def test_runs_started_in_the_same_second_get_their_own_folders(tmp_path):
    folders = {new_run_folder(tmp_path, "20260101-000000") for _ in range(3)}
    assert len(folders) == 3 and all(folder.is_dir() for folder in folders)


@pytest.mark.slow  # torch.compile of the model and a compiled training run: about 20 s
@pytest.mark.skipif(
    not (shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")),
    reason="no C compiler: torch.compile is off, so there is no compiled run to compare",
)
def test_compiled_training_follows_the_eager_run(tiny_run, tiny_npz, tmp_path, aib9):
    """The compiled step computes the eager step's loss and gradients; a compiled run trains alike.

    Whole runs are compared loosely: Adam rescales near-zero gradients to full-size updates, so
    rounding differences between the compiled and eager kernels grow over training steps.
    """
    # in float64: standardised over the batch, the fresh encoder's means (about 1e-4 apart) leave the gradients of
    # its readout below float32's rounding, which the compiled and the eager kernels round differently
    model = make_model(aib9).double()
    batch = torch.from_numpy(aib9.coords[:8]).double()
    results = {}
    for name, network in (("eager", model), ("compiled", torch.compile(model))):
        torch.manual_seed(3)
        model.zero_grad()
        with torch._inductor.config.patch(fallback_random=True):  # the eager random stream
            terms = model.criterion(batch, *network(batch), beta=1e-3)
        terms.total.backward()
        results[name] = (terms.total.detach(), [p.grad.clone() for p in model.parameters()])
    torch.testing.assert_close(results["compiled"][0], results["eager"][0], rtol=1e-4, atol=1e-8)
    for compiled, eager in zip(results["compiled"][1], results["eager"][1], strict=True):
        torch.testing.assert_close(compiled, eager, rtol=1e-3, atol=1e-6)

    flags = tiny_run_flags(tiny_npz, tmp_path / "runs", SHARED_RUN_EPOCHS, *SHARED_RUN_FLAGS, "--compile")
    assert run_main(flags) == 0
    losses = {}
    for name, run in (("eager", tiny_run), ("compiled", tmp_path / "runs" / "run")):
        records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        losses[name] = [r["loss"] for r in records if r["split"] == "validation"]
    assert losses["compiled"] == pytest.approx(losses["eager"], rel=0.1), losses


def test_bfloat16_autocast_trains_and_stays_close_to_float32(aib9):
    # coordinate updates of trained size: an untrained decoder returns its starting frame in any precision
    # in evaluation: the means of a fresh encoder differ by about 1e-4, and standardised over a training batch its
    # bfloat16 rounding would be measured, not the decoder's
    model = with_trained_size_coordinate_updates(make_model(aib9)).eval()
    batch = torch.from_numpy(aib9.coords[:8])
    reference = model.reconstruct(batch)
    assert (reference - model.decoder.reference_positions).norm(dim=-1).max() > 0.5, "the decoder moved the atoms"
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = model.reconstruct(batch)
        terms = model.train().loss(batch, beta=1e-3)
    terms.total.backward()
    assert mixed.dtype == torch.float32, "coordinates leave the decoder in float32"
    deviation = (mixed - reference).norm(dim=-1).max()
    assert 0.0 < deviation < 0.02, f"{deviation:.4f} A: bfloat16 ran, and stayed close (measured 0.002 to 0.003)"
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.slow  # a training run and its resume: about 13 CPU-s
def test_stop_on_the_last_step_of_an_epoch_resumes_cleanly(tiny_npz, tmp_path, monkeypatch):
    """Bug: a stop agreed on the last step of an epoch saved batch_in_epoch == steps_per_epoch; the
    resumed run then wrote a train record without a loss, and the loss plot raised KeyError."""
    at_training_step(5, interrupt, monkeypatch)  # 43 training frames / batches of 8: step 5 ends epoch 1
    assert run_main(tiny_run_flags(tiny_npz, tmp_path / "runs", 2, "--run-name", "run")) == 130
    monkeypatch.undo()
    run = tmp_path / "runs" / "run"
    assert load_checkpoint(run / "last.pt")["step"] == 5

    assert run_main(["--resume", str(run / "last.pt")]) == 0
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    train_records = [r for r in records if r["split"] == "train"]
    assert [r["epoch"] for r in train_records] == [1, 2]
    assert all("loss" in r for r in train_records), train_records
    assert (run / "loss_curves.png").is_file()
    assert load_checkpoint(run / "last.pt")["step"] == 10


def test_learning_rate_warms_up_linearly_then_decays_to_five_percent():
    assert learning_rate_factor(0, warmup_steps=4, total_steps=20) == 0.25
    assert learning_rate_factor(3, warmup_steps=4, total_steps=20) == 1.0
    assert learning_rate_factor(4, warmup_steps=4, total_steps=20) == 1.0, "the cosine starts at its peak"
    assert math.isclose(learning_rate_factor(12, warmup_steps=4, total_steps=20), 0.05 + 0.95 * 0.5)
    assert math.isclose(learning_rate_factor(20, warmup_steps=4, total_steps=20), 0.05)
    assert math.isclose(learning_rate_factor(99, warmup_steps=4, total_steps=20), 0.05), "stays at the floor"


def test_beta_rises_linearly_over_its_warm_up_epochs():
    assert beta_at(0, beta=0.1, warmup_epochs=2.0, steps_per_epoch=5) == 0.0
    assert math.isclose(beta_at(5, beta=0.1, warmup_epochs=2.0, steps_per_epoch=5), 0.05)
    assert beta_at(10, beta=0.1, warmup_epochs=2.0, steps_per_epoch=5) == 0.1
    assert beta_at(50, beta=0.1, warmup_epochs=2.0, steps_per_epoch=5) == 0.1
    assert beta_at(0, beta=0.1, warmup_epochs=0.0, steps_per_epoch=5) == 0.1, "no warm-up: full beta at once"


def test_the_posterior_noise_of_training_rises_with_the_kl_weight(tiny_npz, tmp_path, monkeypatch):
    """z = mu + s * sigma * eps in the training pass, s rising from 0 to 1 over the KL warm-up (here one epoch of
    two), then staying 1; the noise-free start is what keeps the decoder from learning to ignore z."""
    scales = []
    original_forward = MODEL_CLASS.forward

    def forward(self, positions, noise_scale=1.0):
        if self.training:
            scales.append(float(noise_scale))
        return original_forward(self, positions, noise_scale)

    monkeypatch.setattr(MODEL_CLASS, "forward", forward)
    assert run_main(tiny_run_flags(tiny_npz, tmp_path, 2, "--beta-warmup-epochs", "1")) == 0
    steps_per_epoch = len(scales) // 2
    assert steps_per_epoch > 2 and len(scales) == 2 * steps_per_epoch
    assert scales == pytest.approx([min(1.0, step / steps_per_epoch) for step in range(len(scales))])


def test_a_noise_scale_of_zero_decodes_the_posterior_mean(aib9, positions):
    model = with_trained_size_coordinate_updates(make_model(aib9)).double()
    reconstruction, mu, _ = model(positions, torch.tensor(0.0, dtype=torch.float64))
    torch.testing.assert_close(reconstruction, model.decode(mu))
    noisy, _, _ = model(positions)
    assert (noisy - reconstruction).abs().max() > 1e-3, "at full noise z is not the mean"


def test_reference_conformation_is_the_frame_closest_to_the_mean_distances():
    generator = torch.Generator().manual_seed(0)
    base = torch.randn(1, 6, 3, generator=generator, dtype=torch.float64)
    # frames scaled by 0.8 .. 1.2: the unscaled one has the mean distances
    frames = base * torch.tensor([0.8, 0.9, 1.2, 1.0, 1.1], dtype=torch.float64).view(-1, 1, 1)
    chosen = reference_conformation(frames)
    torch.testing.assert_close(chosen, frames[3])
    chosen += 1.0
    assert not torch.equal(frames[3], chosen), "a copy, not a view of the data"


@pytest.mark.slow  # a resumed run: about 13 CPU-s
def test_changing_epochs_on_resume_says_what_happens_to_the_schedule(tiny_run, tmp_path, capsys):
    run = shutil.copytree(tiny_run, tmp_path / "run")
    assert run_main(["--resume", str(run / "last.pt"), "--epochs", str(SHARED_RUN_EPOCHS + 1)]) == 0
    err = capsys.readouterr().err
    assert f"--epochs {SHARED_RUN_EPOCHS + 1} (the run had {SHARED_RUN_EPOCHS})" in err
    assert "learning-rate schedule" in err
    assert load_checkpoint(run / "last.pt")["epoch"] == SHARED_RUN_EPOCHS + 1


def test_validation_loss_is_deterministic(aib9):
    """best.pt is chosen on this loss: it decodes the posterior means, so two passes agree exactly."""
    model = make_model(aib9)
    frames = torch.from_numpy(aib9.coords[:6])
    first, second = (validate(model, frames, beta=1e-3, amp=False) for _ in range(2))
    assert first.metrics["loss"] == second.metrics["loss"]
    assert draw_validation_samples(model, frames, seed=0, amp=False).shape == (validation.EVALUATION_SAMPLES, 58, 3)
