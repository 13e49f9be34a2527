"""Judge a trained model against reference conformations: ``bond-vae-evaluate``.

Writes a folder with ``report.json``, ``report.md``, PNG figures, the reference frames
(``reference.npz``, in the dataset format) and the per-frame numbers behind the figures
(``projections.npz``: radius of gyration, inner-residue phi/psi of reference and samples):

* reconstruction of the reference frames from their posterior means: Kabsch RMSD with a
  proper rotation, and with reflection allowed (a large gap means the mirror image was
  rebuilt), bond-length and all-pairs distance errors;
* prior samples (latents from N(0, I), or with ``--prior mixture`` from a Gaussian mixture fitted
  to the training split's posterior means: :mod:`bond_vae.sampling.prior`) against the
  reference: bond lengths and angles per element type, bonds
  within 0.1 Angstrom of the reference mean, clashes, per-residue phi/psi Jensen-Shannon
  distances, helix handedness, radius of gyration, and a free-energy map;
* with ``--torsion-noise``, the samples turned about their rotatable bonds by the decoder's torsion
  errors (:mod:`bond_vae.sampling.torsion_noise`; reconstructions are left as decoded);
* with ``--relax``, all of the above on relaxed reconstructions and samples
  (:mod:`bond_vae.sampling.relaxation`);
* the reference floor: each sample-vs-reference metric between two halves of the reference
  (interleaved blocks), printed beside the samples' value;
* the quality bar (``quality_bar.py``): each criterion met or not, and a one-line summary;
* latent space: KL per dimension and active units.

Reconstructions and prior samples are oriented by the checkpoint's parity rule
(:mod:`bond_vae.model.parity`), as ``sample`` and the training-time metrics orient them. The
reference defaults to the validation split of the checkpoint's own training data.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from bond_vae import __version__
from bond_vae.cli import check_inference_request, exit_on_user_error, parse_checkpoint_command
from bond_vae.data.dataset import load_dataset
from bond_vae.data.records import DataError, Topology
from bond_vae.data.split import subsample
from bond_vae.data.structure_files import write_conformations_npz
from bond_vae.evaluation.ensembles import (
    ENSEMBLE_METRICS,
    compare_ensembles,
    floor_comparison,
    projections,
    write_figures,
)
from bond_vae.evaluation.metrics import latent_statistics
from bond_vae.evaluation.quality_bar import bar_report, judge
from bond_vae.model.parity import orient_reconstructions, orient_samples
from bond_vae.runtime import PRECISION_HELP, PRECISIONS, uses_bf16
from bond_vae.sampling.inference import decode_in_batches, encode_in_batches, load_for_inference, run_split
from bond_vae.sampling.prior import PRIOR_HELP, PRIORS, prior_draws
from bond_vae.sampling.relaxation import (
    RELAX_BOND_TOLERANCE_HELP,
    RELAX_HELP,
    RELAX_ITERATIONS_HELP,
    check_bond_tolerance,
    relax,
    run_relaxation_targets,
)
from bond_vae.sampling.torsion_noise import TORSION_NOISE_HELP, run_torsion_noise


@dataclass
class EvaluateConfig:
    """Evaluation"""

    data: Path | None = field(
        default=None,
        metadata={
            "help": "reference conformations (any file the loaders accept); "
            "none: the validation split of the checkpoint's training data",
            "metavar": "FILE",
        },
    )
    topology: Path | None = field(
        default=None, metadata={"help": "topology of .npy reference coordinates or of a trajectory", "metavar": "FILE"}
    )
    select: str | None = field(
        default=None,
        metadata={
            "help": "atoms of a reference trajectory (MDTraj selection); none: the heavy atoms of the first "
            "molecule that is not solvent or ions",
            "metavar": "SELECTION",
        },
    )
    stride: int = field(default=1, metadata={"help": "read every N-th frame of --data"})
    output: Path = field(
        default=Path("evaluation"),
        metadata={"help": "new folder for the report (must not exist yet)", "metavar": "DIR"},
    )
    num_samples: int = field(default=2000, metadata={"help": "conformations drawn from the prior"})
    max_frames: int = field(default=2000, metadata={"help": "reference frames used, evenly spaced"})
    batch_size: int = field(default=512, metadata={"help": "conformations encoded or decoded at once"})
    prior: str = field(default="standard", metadata={"help": PRIOR_HELP, "choices": PRIORS})
    prior_components: int = field(default=16, metadata={"help": "Gaussians of --prior mixture"})
    torsion_noise: bool = field(default=False, metadata={"help": TORSION_NOISE_HELP + "; applied to the samples"})
    relax: bool = field(default=False, metadata={"help": RELAX_HELP + "; applied to reconstructions and samples"})
    relax_iterations: int = field(default=50, metadata={"help": RELAX_ITERATIONS_HELP})
    relax_bond_tolerance: float = field(default=0.0, metadata={"help": RELAX_BOND_TOLERANCE_HELP})
    seed: int = field(
        default=0, metadata={"help": "seed of the prior draws, the mixture fit and mirror-symmetric reflections"}
    )
    device: str = field(default="auto", metadata={"help": "auto, cpu, cuda or cuda:N"})
    precision: str = field(default="auto", metadata={"help": PRECISION_HELP, "choices": PRECISIONS})
    compile: bool = field(
        default=True, metadata={"help": "torch.compile the decoder when more than one batch is decoded"}
    )


def reference_frames(
    checkpoint: dict, topology: Topology, config: EvaluateConfig, checkpoint_path: Path
) -> tuple[np.ndarray, str]:
    """(F, N, 3) reference coordinates (Angstrom) and a description of where they come from."""
    if config.data is not None:
        dataset = load_dataset(config.data, config.topology, config.select, config.stride)
        if not np.array_equal(dataset.topology.atomic_numbers, topology.atomic_numbers):
            raise DataError(f"{dataset.source}: its atoms differ from the checkpoint's molecule")
        return subsample(dataset.coords, config.max_frames), f"{dataset.source} (all frames)"
    dataset, _, coords = run_split(checkpoint, checkpoint_path)
    return subsample(coords, config.max_frames), f"{dataset.source} (validation split of the training run)"


def relaxation_sentence(report: dict) -> str:
    """What ``--relax`` did, for report.md; empty when it was off."""
    if not report.get("relaxed"):
        return ""
    tolerance = report.get("relax_bond_tolerance") or 0.0
    bonds = (
        f"bonds beyond {tolerance:g} standard deviations of their training means pulled back"
        if tolerance > 0
        else "bonds to their training means"
    )
    return (
        f" Reconstructions and samples relaxed (--relax: {bonds}, no atoms 4 or more bonds apart closer than the "
        "steric distance; the model's raw output is evaluated without it)."
    )


def markdown_report(report: dict) -> str:
    """A readable summary of the report's headline numbers."""
    reconstruction, samples, floor = report["reconstruction"], report["samples"], report["reference_floor"]
    clashes = samples["clash_fraction"]
    lines = [
        f"# Evaluation of {report['checkpoint']}",
        "",
        f"Reference: {report['reference']['description']}, {report['reference']['frames']} frames; "
        f"{samples['count']} prior samples, latents drawn from {report['prior']}.",
        "",
        f"Orientation of the output: {report['parity']}. Computed in {report['precision']}."
        + (f" Samples with {report['torsion_noise']} (--torsion-noise)." if report.get("torsion_noise") else "")
        + relaxation_sentence(report),
        "",
        "## Quality bar",
        "",
        "| criterion | value | bar | met |",
        "|---|---|---|---|",
    ]
    for criterion in report["quality_bar"]["criteria"].values():
        value = "n/a" if criterion["value"] is None else f"{criterion['value']:.3f}"
        met = {True: "yes", False: "**no**", None: "n/a"}[criterion["met"]]
        lines.append(f"| {criterion['criterion']} | {value} | {criterion['bar']} | {met} |")
    lines += [
        "",
        report["quality_bar"]["summary"],
        "",
        "## Reconstruction (from posterior means)",
        "",
        "| metric | value |",
        "|---|---|",
        f"| Kabsch RMSD, proper rotation (A) | {reconstruction['kabsch_rmsd']:.3f} |",
        f"| same, median over frames (A) | {reconstruction['kabsch_rmsd_median']:.3f} |",
    ]
    by_class = reconstruction.get("kabsch_rmsd_by_reference_class")
    if by_class is not None:
        values = " / ".join("n/a" if value is None else f"{value:.3f}" for value in by_class.values())
        lines.append(f"| same, mean over reference frames that are {' / '.join(by_class)} helices (A) | {values} |")
    lines += [
        f"| Kabsch RMSD, reflection allowed (A) | {reconstruction['kabsch_rmsd_reflection_allowed']:.3f} |",
        f"| bond-length MAE (A) | {reconstruction['bond_mae']:.4f} |",
        f"| all-pairs distance MAE (A) | {reconstruction['distance_mae']:.3f} |",
        "",
        "## Prior samples",
        "",
        "Reference floor: the same metric between two halves of the reference, what a perfect model "
        "would score with this many frames: "
        + (floor["method"] if floor is not None else "none (a single reference frame)")
        + f". A clash is two atoms >= {clashes['min_bonds_apart']} bonds apart closer than "
        f"{clashes['threshold_angstrom']} A.",
        "",
        "| metric | samples | reference floor |",
        "|---|---|---|",
    ]
    for key, values in report["ensemble_metrics"].items():
        floor_value = "n/a" if values["reference_floor"] is None else f"{values['reference_floor']:.4f}"
        lines.append(f"| {ENSEMBLE_METRICS[key]} | {values['samples']:.4f} | {floor_value} |")
    if "handedness" in report:
        lines += [
            "",
            "## Helix handedness (fraction of frames)",
            "",
            "| ensemble | right | left | mixed |",
            "|---|---|---|---|",
        ]
        for name, fractions in report["handedness"].items():
            lines.append(f"| {name} | {fractions['right']:.3f} | {fractions['left']:.3f} | {fractions['mixed']:.3f} |")
    floor_by_type = floor["samples"]["bond_length_by_type"] if floor is not None else {}
    lines += [
        "",
        "## Bond lengths by type (A)",
        "",
        "| type | reference | samples | mean abs deviation | reference floor |",
        "|---|---|---|---|---|",
    ]
    for label, values in samples["bond_length_by_type"].items():
        floor_value = f"{floor_by_type[label]['mean_abs_deviation']:.4f}" if label in floor_by_type else "n/a"
        lines.append(
            f"| {label} | {values['reference_mean']:.3f} | {values['sample_mean']:.3f} "
            f"| {values['mean_abs_deviation']:.4f} | {floor_value} |"
        )
    latent = report["latent"]
    lines += [
        "",
        f"Latent space: {latent['active_units']} of {latent['latent_dim']} dimensions active; "
        f"KL {latent['kl_total']:.2f} nats per molecule.",
        "",
    ]
    lines += [f"![{name}]({name})" for name in report["figures"]]
    return "\n".join(lines) + "\n"


def evaluate(checkpoint_path: Path, config: EvaluateConfig) -> dict:
    """Write the evaluation folder and return the report (as in its ``report.json``)."""
    check_inference_request(
        config, [config.output], ("num_samples", "max_frames", "batch_size", "prior_components", "relax_iterations")
    )
    check_bond_tolerance(config.relax_bond_tolerance)
    checkpoint, model, topology, device = load_for_inference(checkpoint_path, config.device)
    reference, description = reference_frames(checkpoint, topology, config, checkpoint_path)
    bf16 = uses_bf16(config.precision, device)
    mu, log_var = encode_in_batches(model, reference, config.batch_size, device, bf16)
    decoded = decode_in_batches(model, torch.from_numpy(mu).to(device), config.batch_size, config.compile, bf16)
    reconstructed = orient_reconstructions(
        torch.from_numpy(decoded), torch.from_numpy(reference), model.parity, model.bonds
    ).numpy()
    generator = torch.Generator(device=device).manual_seed(config.seed)
    latents, prior = prior_draws(config, model, checkpoint, checkpoint_path, generator, bf16)
    decoded = decode_in_batches(model, latents, config.batch_size, config.compile, bf16)
    samples = orient_samples(torch.from_numpy(decoded), model.parity, generator).numpy()
    noise = None
    if config.torsion_noise:
        noise = run_torsion_noise(checkpoint, checkpoint_path, model, config.batch_size, config.compile, bf16)
        samples = noise.add_to(samples, generator)
    if config.relax:
        targets = run_relaxation_targets(checkpoint, checkpoint_path, model, config.relax_bond_tolerance)
        reconstructed = relax(reconstructed, targets, config.relax_iterations, config.batch_size)
        samples = relax(samples, targets, config.relax_iterations, config.batch_size)

    reference_64 = reference.astype(np.float64)
    report = compare_ensembles(reference_64, reconstructed.astype(np.float64), samples.astype(np.float64), topology)
    report.update(floor_comparison(report, reference_64, topology))
    report["quality_bar"] = bar_report(judge(report))
    report["latent"] = latent_statistics(mu, log_var)
    config.output.mkdir(parents=True)
    figures = write_figures(reference, reconstructed, samples, topology, config.output)
    report.update(
        checkpoint=str(checkpoint_path),
        package=f"bond_vae {__version__}",
        reference={"description": description, "frames": len(reference)},
        prior=prior,
        parity=model.parity.summary(),
        precision="bf16" if bf16 else "fp32",
        torsion_noise=None if noise is None else noise.describe(),
        relaxed=config.relax,
        relax_bond_tolerance=config.relax_bond_tolerance if config.relax else None,
        figures=[path.name for path in figures],
    )
    (config.output / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    # the reference frames (so that another model can be evaluated on the very same frames: --data) and the
    # per-frame numbers of the figures (scripts/compare_runs.py plots two models' side by side)
    write_conformations_npz(config.output / "reference.npz", reference, topology, {"description": description})
    np.savez(config.output / "projections.npz", **projections(reference, samples, topology))
    (config.output / "report.md").write_text(markdown_report(report))
    return report


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``bond-vae-evaluate``."""
    checkpoint, config = parse_checkpoint_command("bond-vae-evaluate", __doc__, EvaluateConfig, argv)
    with exit_on_user_error():
        report = evaluate(checkpoint, config)
    print(f"wrote {config.output / 'report.md'} (and report.json, figures)")
    print(report["quality_bar"]["summary"])
