"""Judge a trained model against reference conformations: ``pairwise-vae-evaluate``.

Writes a folder with ``report.json``, ``report.md`` and PNG figures:

* reconstruction of the reference frames from their posterior means: Kabsch RMSD with a
  proper rotation, and with reflection allowed (a large gap means the mirror image was
  rebuilt), bond-length and all-pairs distance errors;
* prior samples against the reference: bond lengths and angles per element type, bonds
  within 0.1 Angstrom of the reference mean, clashes, per-residue phi/psi Jensen-Shannon
  distances, helix handedness, radius of gyration, and a free-energy map;
* latent space: KL per dimension and active units.

The reference defaults to the validation split of the checkpoint's own training data.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from pairwise_vae import __version__
from pairwise_vae.cli import check_inference_request, exit_on_user_error, load_for_inference, parse_checkpoint_command
from pairwise_vae.data import DataError, Topology, load_dataset, split_frames, subsample
from pairwise_vae.metrics import (
    CLASH_DISTANCE,
    CLASH_MIN_BONDS_APART,
    JS_PSEUDO_COUNT,
    RAMACHANDRAN_BINS,
    angle_triplets,
    bond_angles,
    bond_lengths,
    clash_fraction,
    dihedrals,
    find_backbone,
    helix_handedness,
    jensen_shannon_distance,
    latent_statistics,
    pairwise_distances,
    per_type_deviation,
    radius_of_gyration,
    ramachandran_histogram,
    type_labels,
)
from pairwise_vae.model import MolecularVAEMSE
from pairwise_vae.plots import (
    plot_free_energy,
    plot_histograms,
    plot_ramachandran,
    plot_structures,
)
from pairwise_vae.sample import decode_in_batches
from pairwise_vae.utils import kabsch_rmsd


@dataclass
class EvaluateConfig:
    """Evaluation"""

    data: Path | None = field(
        default=None,
        metadata={
            "help": "reference conformations (any file the loaders accept); none: the validation split of the checkpoint's training data",
            "metavar": "FILE",
        },
    )
    topology: Path | None = field(
        default=None, metadata={"help": "topology of .npy reference coordinates", "metavar": "FILE"}
    )
    output: Path = field(
        default=Path("evaluation"),
        metadata={"help": "new folder for the report (must not exist yet)", "metavar": "DIR"},
    )
    num_samples: int = field(default=2000, metadata={"help": "conformations drawn from the prior"})
    max_frames: int = field(default=2000, metadata={"help": "reference frames used, evenly spaced"})
    batch_size: int = field(default=512, metadata={"help": "conformations encoded or decoded at once"})
    seed: int = field(default=0, metadata={"help": "seed of the prior draws"})
    device: str = field(default="auto", metadata={"help": "auto, cpu, cuda or cuda:N"})
    compile: bool = field(
        default=True, metadata={"help": "torch.compile the decoder when more than one batch is decoded"}
    )


def reference_frames(checkpoint: dict, config: EvaluateConfig) -> tuple[np.ndarray, str]:
    """Reference coordinates and a description of where they come from."""
    if config.data is not None:
        dataset = load_dataset(config.data, config.topology)
        description = f"{dataset.source} (all frames)"
        coords = dataset.coords
    else:
        train_config = checkpoint["config"]
        dataset = load_dataset(train_config["data"], train_config["topology"])
        coords = subsample(dataset.coords, train_config["max_frames"])
        _, validation = split_frames(len(coords), train_config["validation_fraction"], train_config["seed"])
        coords = coords[validation]
        description = f"{dataset.source} (validation split of the training run)"
    if not np.array_equal(dataset.topology.atomic_numbers, checkpoint["topology"]["atomic_numbers"].numpy()):
        raise DataError(f"{dataset.source}: its atoms differ from the checkpoint's molecule")
    return subsample(coords, config.max_frames), description


BackboneAngles = dict[str, tuple[np.ndarray, np.ndarray]]


def backbone_angles(topology: Topology, ensembles: dict[str, np.ndarray]) -> tuple[np.ndarray, BackboneAngles] | None:
    """Residue ids and, per ensemble, (phi, psi) arrays of shape (frames, residues); None for non-peptides."""
    backbone = find_backbone(topology)
    if backbone is None:
        return None
    return backbone.residue_ids, {
        name: (dihedrals(c, backbone.phi), dihedrals(c, backbone.psi)) for name, c in ensembles.items()
    }


def compare_ensembles(
    reference: np.ndarray, reconstructed: np.ndarray, samples: np.ndarray, topology: Topology
) -> dict:
    """Structural agreement of reconstructions and samples with the reference (see module docstring).

    Args:
        reference: (F, N, 3) reference conformations, Angstrom.
        reconstructed: (F, N, 3) their reconstructions, Angstrom.
        samples: (S, N, 3) prior samples, Angstrom.
        topology: the molecule.
    """
    bonds = topology.bonds
    reference_t, reconstructed_t = torch.from_numpy(reference), torch.from_numpy(reconstructed)
    proper = kabsch_rmsd(reconstructed_t, reference_t).numpy()
    improper = kabsch_rmsd(reconstructed_t, reference_t, allow_reflection=True).numpy()
    report: dict = {
        "reconstruction": {
            "kabsch_rmsd": float(proper.mean()),
            "kabsch_rmsd_reflection_allowed": float(improper.mean()),
            "mirror_gap": float((proper - improper).mean()),
            "bond_mae": float(np.abs(bond_lengths(reconstructed, bonds) - bond_lengths(reference, bonds)).mean()),
            "distance_mae": float(np.abs(pairwise_distances(reconstructed) - pairwise_distances(reference)).mean()),
        }
    }
    triplets = angle_triplets(bonds, topology.n_atoms)
    reference_lengths, sample_lengths = bond_lengths(reference, bonds), bond_lengths(samples, bonds)
    reference_angles, sample_angles = bond_angles(reference, triplets), bond_angles(samples, triplets)
    reference_rg, sample_rg = radius_of_gyration(reference), radius_of_gyration(samples)
    report["samples"] = {
        "count": len(samples),
        "bond_length_by_type": per_type_deviation(sample_lengths, reference_lengths, type_labels(topology, bonds)),
        "bond_angle_by_type": per_type_deviation(sample_angles, reference_angles, type_labels(topology, triplets)),
        "bonds_within_0.1_of_reference_mean": float(
            (np.abs(sample_lengths - reference_lengths.mean(axis=0)) < 0.1).mean()
        ),
        "clash_fraction": {
            "samples": clash_fraction(samples, bonds),
            "reference": clash_fraction(reference, bonds),
            "threshold_angstrom": CLASH_DISTANCE,
            "min_bonds_apart": CLASH_MIN_BONDS_APART,
        },
        "radius_of_gyration": {"reference_mean": float(reference_rg.mean()), "sample_mean": float(sample_rg.mean())},
    }
    found = backbone_angles(topology, {"reference": reference, "reconstruction": reconstructed, "samples": samples})
    if found is not None:
        residue_ids, angles = found
        per_residue = {
            str(residue): jensen_shannon_distance(
                ramachandran_histogram(angles["samples"][0][:, k], angles["samples"][1][:, k]),
                ramachandran_histogram(angles["reference"][0][:, k], angles["reference"][1][:, k]),
            )
            for k, residue in enumerate(residue_ids.tolist())
        }
        report["samples"]["ramachandran_js_distance"] = {
            "per_residue": per_residue,
            "mean": float(np.mean(list(per_residue.values()))),
            "definition": f"Jensen-Shannon distance (sqrt of divergence), log base 2, {RAMACHANDRAN_BINS}x{RAMACHANDRAN_BINS} bins of 10 degrees, pseudo-count {JS_PSEUDO_COUNT} per bin",
        }
        report["handedness"] = {name: helix_handedness(phi) for name, (phi, _) in angles.items()}
    return report


def write_figures(
    reference: np.ndarray, reconstructed: np.ndarray, samples: np.ndarray, topology: Topology, folder: Path
) -> list[Path]:
    """The evaluation PNGs (Ramachandran and free-energy maps only for peptides)."""
    bonds = topology.bonds
    triplets = angle_triplets(bonds, topology.n_atoms)
    ensembles = {"reference": reference, "samples": samples}
    figures = [
        plot_histograms(
            {
                "bond length (Angstrom)": {name: bond_lengths(c, bonds) for name, c in ensembles.items()},
                "bond angle (degrees)": {name: bond_angles(c, triplets) for name, c in ensembles.items()},
            },
            folder / "bonds_angles.png",
        ),
        plot_histograms(
            {
                "interatomic distance (Angstrom)": {name: pairwise_distances(c[:500]) for name, c in ensembles.items()},
                "radius of gyration (Angstrom)": {name: radius_of_gyration(c) for name, c in ensembles.items()},
            },
            folder / "distances_rg.png",
        ),
        plot_structures(
            {"reference": reference[0], "reconstruction": reconstructed[0], "prior sample": samples[0]},
            bonds,
            folder / "structures.png",
        ),
    ]
    found = backbone_angles(topology, ensembles)
    if found is not None:
        angles = found[1]
        inner = slice(1, -1)
        figures.append(
            plot_ramachandran(
                {name: angles[name][0][:, inner] for name in ("reference", "samples")},
                {name: angles[name][1][:, inner] for name in ("reference", "samples")},
                folder / "ramachandran.png",
            )
        )
        figures.append(
            plot_free_energy(
                {name: angles[name][0][:, inner].mean(axis=1) for name in ("reference", "samples")},
                {"reference": radius_of_gyration(reference), "samples": radius_of_gyration(samples)},
                ("mean signed phi of inner residues (degrees)", "radius of gyration (Angstrom)"),
                folder / "free_energy.png",
            )
        )
    return figures


@torch.no_grad()
def encode_in_batches(
    model: MolecularVAEMSE, coords: np.ndarray, batch_size: int, device: torch.device
) -> tuple[np.ndarray, np.ndarray]:
    """Posterior means and log-variances, each (F, latent_dim)."""
    model.eval()
    mus, log_vars = [], []
    for start in range(0, len(coords), batch_size):
        mu, log_var = model.encode(torch.from_numpy(coords[start : start + batch_size]).to(device))
        mus.append(mu.float().cpu())
        log_vars.append(log_var.float().cpu())
    return torch.cat(mus).numpy(), torch.cat(log_vars).numpy()


def markdown_report(report: dict) -> str:
    """A readable summary of the report's headline numbers."""
    reconstruction, samples = report["reconstruction"], report["samples"]
    lines = [
        f"# Evaluation of {report['checkpoint']}",
        "",
        f"Reference: {report['reference']['description']}, {report['reference']['frames']} frames; "
        f"{samples['count']} prior samples.",
        "",
        "## Reconstruction (from posterior means)",
        "",
        "| metric | value |",
        "|---|---|",
        f"| Kabsch RMSD, proper rotation (A) | {reconstruction['kabsch_rmsd']:.3f} |",
        f"| Kabsch RMSD, reflection allowed (A) | {reconstruction['kabsch_rmsd_reflection_allowed']:.3f} |",
        f"| bond-length MAE (A) | {reconstruction['bond_mae']:.4f} |",
        f"| all-pairs distance MAE (A) | {reconstruction['distance_mae']:.3f} |",
        "",
        "## Prior samples",
        "",
        "| metric | value |",
        "|---|---|",
        f"| bonds within 0.1 A of the reference mean | {samples['bonds_within_0.1_of_reference_mean']:.3f} |",
        f"| frames with a clash (< {samples['clash_fraction']['threshold_angstrom']} A, >= {samples['clash_fraction']['min_bonds_apart']} bonds apart): samples / reference | "
        f"{samples['clash_fraction']['samples']:.3f} / {samples['clash_fraction']['reference']:.3f} |",
        f"| radius of gyration, mean (A): samples / reference | {samples['radius_of_gyration']['sample_mean']:.2f} / {samples['radius_of_gyration']['reference_mean']:.2f} |",
    ]
    if "ramachandran_js_distance" in samples:
        lines.append(
            f"| phi/psi Jensen-Shannon distance, mean over residues | {samples['ramachandran_js_distance']['mean']:.3f} |"
        )
        lines += [
            "",
            "## Helix handedness (fraction of frames)",
            "",
            "| ensemble | right | left | mixed |",
            "|---|---|---|---|",
        ]
        for name, fractions in report["handedness"].items():
            lines.append(f"| {name} | {fractions['right']:.3f} | {fractions['left']:.3f} | {fractions['mixed']:.3f} |")
    lines += [
        "",
        "## Bond lengths by type (A)",
        "",
        "| type | reference | samples | mean abs deviation |",
        "|---|---|---|---|",
    ]
    for label, values in samples["bond_length_by_type"].items():
        lines.append(
            f"| {label} | {values['reference_mean']:.3f} | {values['sample_mean']:.3f} | {values['mean_abs_deviation']:.4f} |"
        )
    latent = report["latent"]
    lines += [
        "",
        f"Latent space: {latent['active_units']} of {latent['latent_dim']} dimensions active; KL {latent['kl_total']:.2f} nats per molecule.",
        "",
    ]
    lines += [f"![{name}]({name})" for name in report["figures"]]
    return "\n".join(lines) + "\n"


def evaluate(checkpoint_path: Path, config: EvaluateConfig) -> Path:
    """Write the evaluation folder and return its path."""
    check_inference_request(config, [config.output], ("num_samples", "max_frames", "batch_size"))
    checkpoint, model, topology, device = load_for_inference(checkpoint_path, config.device)
    reference, description = reference_frames(checkpoint, config)
    mu, log_var = encode_in_batches(model, reference, config.batch_size, device)
    reconstructed = decode_in_batches(model, torch.from_numpy(mu).to(device), config.batch_size, config.compile)
    generator = torch.Generator(device=device).manual_seed(config.seed)
    prior_draws = torch.randn(config.num_samples, model.latent_dim, generator=generator, device=device)
    samples = decode_in_batches(model, prior_draws, config.batch_size, config.compile)

    report = compare_ensembles(
        reference.astype(np.float64), reconstructed.astype(np.float64), samples.astype(np.float64), topology
    )
    report["latent"] = latent_statistics(mu, log_var)
    config.output.mkdir(parents=True)
    figures = write_figures(reference, reconstructed, samples, topology, config.output)
    report.update(
        checkpoint=str(checkpoint_path),
        package=f"pairwise_vae {__version__}",
        reference={"description": description, "frames": len(reference)},
        figures=[path.name for path in figures],
    )
    (config.output / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (config.output / "report.md").write_text(markdown_report(report))
    return config.output


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``pairwise-vae-evaluate``."""
    checkpoint, config = parse_checkpoint_command("pairwise-vae-evaluate", __doc__, EvaluateConfig, argv)
    with exit_on_user_error():
        folder = evaluate(checkpoint, config)
    print(f"wrote {folder / 'report.md'} (and report.json, figures)")
