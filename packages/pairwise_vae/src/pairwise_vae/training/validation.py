"""The validation pass of a training run: loss and reconstruction quality every epoch, sample quality and the
run's own figures at evaluation epochs.

The loss is computed from the posterior means (no sampled z), so the choice of ``best.pt`` is
reproducible, on the decoder's raw output (it is blind to reflections anyway); the structural
metrics see reconstructions oriented by the model's parity rule, and samples drawn as
``sample`` and ``evaluate`` draw them by default: through the model's sampler (mixture prior,
parity rule, torsion noise; :mod:`pairwise_vae.sampling.sampler`), here fitted afresh to the current
weights at each evaluation epoch on a subset of the training split. The evaluation report with
its figures is written once, by the train command when the run ends, not here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pairwise_vae.data.records import Topology
from pairwise_vae.data.split import subsample
from pairwise_vae.data.structure_files import write_pdb
from pairwise_vae.evaluation.ensembles import compare_ensembles
from pairwise_vae.geometry import bond_length_statistics, bond_lengths, distance_mae, kabsch_rmsd
from pairwise_vae.model.parity import orient_reconstructions
from pairwise_vae.model.vae import MolecularVAEMSE
from pairwise_vae.sampling.inference import batch_that_fits
from pairwise_vae.sampling.sampler import SamplerOptions, draw_samples, fit_sampler
from pairwise_vae.training.plots import plot_bond_lengths, plot_loss_curves

EVALUATION_SAMPLES = 512
LOGGED_MOLECULES = 4  # samples sent to W&B as 3D molecules at each evaluation
VALIDATION_BATCH = 256
# the sampler of an evaluation epoch is fitted to this many training frames (evenly spaced), and its torsion
# noise to the reconstructions of this many: a few seconds, where the end of training fits to 20,000 and 2,000
SAMPLER_FIT_FRAMES = 2000
SAMPLER_RESIDUAL_FRAMES = 500
# training frames (evenly spaced) whose posterior means standardise the means in evaluation (set before the first
# step, at each epoch's end and before each checkpoint)
STATISTICS_FRAMES = 512


@dataclass
class ValidationResult:
    """Metrics of one validation pass and the ensembles they came from.

    ``metrics``: loss terms at full beta and reconstruction errors (Angstrom); ``reference``,
    ``reconstructed``: (F, N, 3) validation frames and their reconstructions from the posterior
    means, oriented by the model's parity rule; float64, Angstrom.
    """

    metrics: dict[str, float]
    reference: np.ndarray
    reconstructed: np.ndarray


@torch.no_grad()
def set_latent_statistics(model: MolecularVAEMSE, train_coords: torch.Tensor, amp: bool) -> None:
    """Standardise the posterior means in evaluation (validation, checkpoints, samples) by the statistics of the
    current weights' means of ``STATISTICS_FRAMES`` of the (F, N, 3) training frames (Angstrom, on the model's
    device). The running averages of the training batches lag behind: AIB9, the defaults, after the first epoch a
    validation loss of 4.3 with them against 0.52 in training."""
    frames = subsample(train_coords, STATISTICS_FRAMES)
    batch_size = batch_that_fits(model, VALIDATION_BATCH, train_coords.device)
    with torch.autocast(train_coords.device.type, dtype=torch.bfloat16, enabled=amp):
        model.encoder.set_mean_statistics(model.atomic_numbers, frames.split(batch_size))


@torch.no_grad()
def validate(model: MolecularVAEMSE, coords: torch.Tensor, beta: float, amp: bool) -> ValidationResult:
    """Loss terms at full ``beta`` and reconstruction quality of (F, N, 3) validation frames.

    Args:
        model: the model (not a compiled or data-parallel wrapper).
        coords: (F, N, 3) validation frames on the model's device, Angstrom.
        beta: the KL weight of the reported loss.
        amp: run the model under bfloat16 autocast.
    """
    model.eval()
    device = coords.device
    totals = {"loss": 0.0, "reconstruction": 0.0, "kl": 0.0}
    rmsd, reconstructions = [], []
    batch_size = batch_that_fits(model, VALIDATION_BATCH, device)
    for start in range(0, len(coords), batch_size):
        batch = coords[start : start + batch_size]
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            mu, log_var = model.encode(batch)
            reconstruction = model.decode(mu).float()
        terms = model.criterion(batch, reconstruction, mu, log_var, beta=beta)
        for key, value in (("loss", terms.total), ("reconstruction", terms.reconstruction), ("kl", terms.kl)):
            totals[key] += value.item() * len(batch)
        reconstruction = orient_reconstructions(reconstruction, batch, model.parity, model.bonds)
        rmsd.append(kabsch_rmsd(reconstruction, batch))
        reconstructions.append(reconstruction)
    reconstructed = torch.cat(reconstructions)
    metrics = {key: value / len(coords) for key, value in totals.items()}
    metrics.update(bond_length_statistics(reconstructed, coords, model.bonds))
    metrics["kabsch_rmsd"] = torch.cat(rmsd).mean().item()
    metrics["distance_mae"] = distance_mae(reconstructed, coords)
    return ValidationResult(
        metrics=metrics,
        reference=coords.double().cpu().numpy(),
        reconstructed=reconstructed.double().cpu().numpy(),
    )


def draw_validation_samples(model: MolecularVAEMSE, train_coords: torch.Tensor, seed: int, amp: bool) -> np.ndarray:
    """(EVALUATION_SAMPLES, N, 3) samples (float64, Angstrom) through the default sampler of the model's current
    weights, fitted to ``SAMPLER_FIT_FRAMES`` of the (F, N, 3) training frames (Angstrom, any device); the draws
    and the mixture fit are seeded by ``seed``."""
    frames = subsample(train_coords, SAMPLER_FIT_FRAMES).float().cpu().numpy()
    sampler = fit_sampler(
        model, frames, VALIDATION_BATCH, False, amp, seed, SAMPLER_FIT_FRAMES, SAMPLER_RESIDUAL_FRAMES
    )
    generator = torch.Generator(device=train_coords.device).manual_seed(seed)
    draws = draw_samples(model, sampler, SamplerOptions(), EVALUATION_SAMPLES, generator, VALIDATION_BATCH, False, amp)
    return draws.samples.astype(np.float64)


def sample_metrics(result: ValidationResult, samples: np.ndarray, topology: Topology) -> dict[str, float]:
    """Headline sample metrics of an evaluation epoch (see ``ensembles.compare_ensembles``): (S, N, 3) samples
    against the validation frames of ``result``, and the reconstructions' mirror metrics."""
    report = compare_ensembles(result.reference, result.reconstructed, samples, topology)
    bonds = torch.from_numpy(topology.bonds)
    reference_mean = bond_lengths(torch.from_numpy(result.reference), bonds).mean(dim=0)
    sampled = report["samples"]
    metrics = {
        "kabsch_rmsd_reflection_allowed": report["reconstruction"]["kabsch_rmsd_reflection_allowed"],
        "mirror_gap": report["reconstruction"]["mirror_gap"],
        "sample_bond_mae": (bond_lengths(torch.from_numpy(samples), bonds) - reference_mean).abs().mean().item(),
        "sample_bonds_within_0.1": sampled["bonds_within_0.1_of_reference_mean"],
        "sample_clash_fraction": sampled["clash_fraction"]["samples"],
        "sample_radius_of_gyration": sampled["radius_of_gyration"]["sample_mean"],
    }
    if "handedness" in report:
        metrics["sample_ramachandran_js"] = sampled["ramachandran_js_distance"]["mean"]
        metrics.update({f"sample_{name}_handed": value for name, value in report["handedness"]["samples"].items()})
    return metrics


def write_plots(
    result: ValidationResult, samples: np.ndarray, topology: Topology, history: list[dict], folder: Path
) -> dict[str, Path]:
    """The run's own figures in its folder: loss curves and bond-length histograms (validation frames,
    reconstructions, (S, N, 3) samples).

    Returns:
        The PNG files by W&B key (``plots/<name>``).
    """
    bonds = torch.from_numpy(topology.bonds)
    lengths = [
        bond_lengths(torch.from_numpy(c), bonds).numpy() for c in (result.reference, result.reconstructed, samples)
    ]
    return {
        "plots/loss_curves": plot_loss_curves(history, folder / "loss_curves.png"),
        "plots/bond_lengths": plot_bond_lengths(*lengths, folder / "bond_lengths.png"),
    }


def write_sample_molecules(samples: np.ndarray, topology: Topology, folder: Path) -> list[Path]:
    """The first of (S, N, 3) samples as single-model PDB files (``samples/sample_<k>.pdb`` in the run
    folder), for W&B."""
    molecules = folder / "samples"
    molecules.mkdir(exist_ok=True)
    return [
        write_pdb(molecules / f"sample_{k + 1}.pdb", sample[None], topology, f"sample {k + 1}")
        for k, sample in enumerate(samples[:LOGGED_MOLECULES])
    ]
