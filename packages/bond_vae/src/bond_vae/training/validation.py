"""The validation pass of a training run: loss, reconstruction and sample quality, and the run's figures.

The loss is computed from the posterior means (no sampled z), so the choice of ``best.pt`` is
reproducible, on the decoder's raw output (it is blind to reflections anyway); the structural
metrics see reconstructions and prior samples oriented by the model's parity rule.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from bond_vae.data.records import Topology
from bond_vae.data.structure_files import write_pdb
from bond_vae.evaluation.ensembles import compare_ensembles, write_figures
from bond_vae.evaluation.plots import plot_bond_lengths, plot_loss_curves
from bond_vae.geometry import bond_length_statistics, bond_lengths, kabsch_rmsd, pairwise_distances
from bond_vae.model.parity import orient_reconstructions
from bond_vae.model.vae import MolecularVAE

EVALUATION_SAMPLES = 512
LOGGED_MOLECULES = 4  # prior samples sent to W&B as 3D molecules at each evaluation
VALIDATION_BATCH = 256


@dataclass
class ValidationResult:
    """Metrics of one validation pass and the ensembles they came from.

    ``metrics``: loss terms at full beta and structural errors (Angstrom); ``reference``,
    ``reconstructed``: (F, N, 3) validation frames and their reconstructions from the posterior
    means; ``samples``: (EVALUATION_SAMPLES, N, 3) prior samples; all float64, Angstrom, the
    last two oriented by the model's parity rule.
    """

    metrics: dict[str, float]
    reference: np.ndarray
    reconstructed: np.ndarray
    samples: np.ndarray


@torch.no_grad()
def validate(model: MolecularVAE, coords: torch.Tensor, beta: float, amp: bool, seed: int) -> ValidationResult:
    """Loss terms at full ``beta``, reconstruction and sample quality of (F, N, 3) validation frames.

    Args:
        model: the model (not a compiled or data-parallel wrapper).
        coords: (F, N, 3) validation frames on the model's device, Angstrom.
        beta: the KL weight of the reported loss.
        amp: run the model under bfloat16 autocast.
        seed: seed of the prior samples.
    """
    model.eval()
    device = coords.device
    totals = {"loss": 0.0, "reconstruction": 0.0, "kl": 0.0, "angle": 0.0, "torsion": 0.0}
    rmsd, reconstructions = [], []
    for start in range(0, len(coords), VALIDATION_BATCH):
        batch = coords[start : start + VALIDATION_BATCH]
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            mu, log_var = model.encode(batch)
            reconstruction = model.decode(mu).float()
        terms = model.criterion(batch, reconstruction, mu, log_var, beta=beta)
        for key, value in (
            ("loss", terms.total),
            ("reconstruction", terms.reconstruction),
            ("kl", terms.kl),
            ("angle", terms.angle),
            ("torsion", terms.torsion),
        ):
            totals[key] += value.item() * len(batch)
        reconstruction = orient_reconstructions(reconstruction, batch, model.parity, model.bonds)
        rmsd.append(kabsch_rmsd(reconstruction, batch))
        reconstructions.append(reconstruction)
    reconstructed = torch.cat(reconstructions)
    generator = torch.Generator(device=device).manual_seed(seed)
    samples = model.sample(EVALUATION_SAMPLES, generator=generator).float()
    reference_mean = bond_lengths(coords, model.bonds).mean(dim=0)
    metrics = {key: value / len(coords) for key, value in totals.items()}
    metrics.update(bond_length_statistics(reconstructed, coords, model.bonds))
    metrics["kabsch_rmsd"] = torch.cat(rmsd).mean().item()
    metrics["distance_mae"] = (pairwise_distances(reconstructed) - pairwise_distances(coords)).abs().mean().item()
    metrics["sample_bond_mae"] = (bond_lengths(samples, model.bonds) - reference_mean).abs().mean().item()
    return ValidationResult(
        metrics=metrics,
        reference=coords.double().cpu().numpy(),
        reconstructed=reconstructed.double().cpu().numpy(),
        samples=samples.double().cpu().numpy(),
    )


def structural_metrics(result: ValidationResult, topology: Topology) -> dict[str, float]:
    """Headline structural metrics of a validation pass (see ``ensembles.compare_ensembles``)."""
    report = compare_ensembles(result.reference, result.reconstructed, result.samples, topology)
    samples = report["samples"]
    metrics = {
        "kabsch_rmsd_reflection_allowed": report["reconstruction"]["kabsch_rmsd_reflection_allowed"],
        "mirror_gap": report["reconstruction"]["mirror_gap"],
        "sample_bonds_within_0.1": samples["bonds_within_0.1_of_reference_mean"],
        "sample_clash_fraction": samples["clash_fraction"]["samples"],
        "sample_radius_of_gyration": samples["radius_of_gyration"]["sample_mean"],
    }
    if "handedness" in report:
        metrics["sample_ramachandran_js"] = samples["ramachandran_js_distance"]["mean"]
        metrics.update({f"sample_{name}_handed": value for name, value in report["handedness"]["samples"].items()})
    return metrics


def write_plots(result: ValidationResult, topology: Topology, history: list[dict], folder: Path) -> dict[str, Path]:
    """Loss curves, bond-length histograms and the evaluation figures in a run folder.

    Returns:
        The PNG files by W&B key (``plots/<name>``).
    """
    bonds = torch.from_numpy(topology.bonds)
    lengths = [
        bond_lengths(torch.from_numpy(c), bonds).numpy()
        for c in (result.reference, result.reconstructed, result.samples)
    ]
    images = {
        "loss_curves": plot_loss_curves(history, folder / "loss_curves.png"),
        "bond_lengths": plot_bond_lengths(*lengths, folder / "bond_lengths.png"),
    }
    evaluation = folder / "evaluation"
    evaluation.mkdir(exist_ok=True)
    figures = write_figures(result.reference, result.reconstructed, result.samples, topology, evaluation)
    images.update({path.stem: path for path in figures})
    return {f"plots/{name}": path for name, path in images.items()}


def write_sample_molecules(result: ValidationResult, topology: Topology, folder: Path) -> list[Path]:
    """The first prior samples as single-model PDB files (``evaluation/prior_sample_<k>.pdb``), for W&B."""
    evaluation = folder / "evaluation"
    evaluation.mkdir(exist_ok=True)
    return [
        write_pdb(evaluation / f"prior_sample_{k + 1}.pdb", sample[None], topology, f"prior sample {k + 1}")
        for k, sample in enumerate(result.samples[:LOGGED_MOLECULES])
    ]
