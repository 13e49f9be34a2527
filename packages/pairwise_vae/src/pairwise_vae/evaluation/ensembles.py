"""Comparing conformation ensembles: structural agreement of reconstructions and prior samples
with a reference, as numbers (:func:`compare_ensembles`) and figures (:func:`write_figures`).

* reconstruction: Kabsch RMSD with a proper rotation (mean, median, and for peptides the mean
  over the reference frames of each helix class, which shows where the error sits), and with
  reflection allowed (a large gap means the mirror image was rebuilt), bond-length and all-pairs
  distance errors;
* prior samples: bond lengths and angles per element type, bonds within 0.1 Angstrom of the
  reference mean, clashes, per-residue phi/psi Jensen-Shannon distances, helix handedness,
  radius of gyration, and a free-energy map;
* the flat sample-vs-reference metrics (:func:`ensemble_metrics`), which
  :mod:`pairwise_vae.evaluation.scoring` puts beside their floors at matched sizes.

Ensembles are (frames, N, 3) numpy arrays in Angstrom.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from pairwise_vae.bond_graph import NONBONDED_MIN_BONDS_APART, angle_triplets
from pairwise_vae.data.records import Topology
from pairwise_vae.evaluation.metrics import (
    CLASH_DISTANCE,
    HELIX_CLASSES,
    JS_PSEUDO_COUNT,
    RAMACHANDRAN_BINS,
    bond_angles,
    clash_fraction,
    dihedrals,
    find_backbone,
    helix_classes,
    helix_handedness,
    inner_residues,
    jensen_shannon_distance,
    per_type_deviation,
    radius_of_gyration,
    ramachandran_histogram,
    type_labels,
)
from pairwise_vae.evaluation.plots import plot_free_energy, plot_histograms, plot_note, plot_ramachandran
from pairwise_vae.evaluation.structure_figure import plot_structures, structure_basins
from pairwise_vae.geometry import bond_lengths, distance_mae, kabsch_rmsd, pairwise_distances

BackboneAngles = dict[str, tuple[np.ndarray, np.ndarray]]
HANDS = ("right", "left", "mixed")
# the flat sample-vs-reference metrics (:func:`ensemble_metrics`): differences are absolute
ENSEMBLE_METRICS = {
    "ramachandran_js_distance_mean": "phi/psi Jensen-Shannon distance, mean over residues",
    "helix_right_fraction_difference": "right-handed helix fraction: difference from the reference",
    "helix_left_fraction_difference": "left-handed helix fraction: difference from the reference",
    "helix_mixed_fraction_difference": "mixed or unfolded fraction: difference from the reference",
    "bonds_within_0.1_of_reference_mean": "bonds within 0.1 A of the reference mean",
    "clash_fraction_difference": "frames with a clash: difference from the reference",
    "radius_of_gyration_mean_difference": "radius of gyration, mean: difference from the reference (A)",
    "bond_length_mean_abs_deviation": "bond lengths: mean abs deviation of the per-bond means (A)",
    "bond_angle_mean_abs_deviation": "bond angles: mean abs deviation of the per-angle means (degrees)",
}


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
    bonds_t = torch.from_numpy(topology.bonds)
    reference_t, reconstructed_t = torch.from_numpy(reference), torch.from_numpy(reconstructed)
    proper = kabsch_rmsd(reconstructed_t, reference_t).numpy()
    improper = kabsch_rmsd(reconstructed_t, reference_t, allow_reflection=True).numpy()
    bond_error = bond_lengths(reconstructed_t, bonds_t) - bond_lengths(reference_t, bonds_t)
    report: dict = {
        "reconstruction": {
            "kabsch_rmsd": float(proper.mean()),
            "kabsch_rmsd_median": float(np.median(proper)),
            "kabsch_rmsd_reflection_allowed": float(improper.mean()),
            "mirror_gap": float((proper - improper).mean()),
            "bond_mae": bond_error.abs().mean().item(),
            "distance_mae": distance_mae(reconstructed_t, reference_t),
        }
    }
    report.update(sample_agreement(samples, reference, topology))
    found = backbone_angles(topology, {"reference": reference, "reconstruction": reconstructed})
    if found is not None:
        handedness = report["handedness"]
        report["handedness"] = {
            "reference": handedness["reference"],
            "reconstruction": helix_handedness(found[1]["reconstruction"][0]),
            "samples": handedness["samples"],
        }
        classes = helix_classes(found[1]["reference"][0])
        report["reconstruction"]["kabsch_rmsd_by_reference_class"] = {
            name: float(proper[classes == index].mean()) if (classes == index).any() else None
            for index, name in enumerate(HELIX_CLASSES)
        }
    return report


def sample_agreement(samples: np.ndarray, reference: np.ndarray, topology: Topology) -> dict:
    """Prior samples (or any ensemble standing in for them) against a reference ensemble.

    Args:
        samples: (S, N, 3) conformations, Angstrom.
        reference: (F, N, 3) reference conformations, Angstrom.
        topology: the molecule.

    Returns:
        ``{"samples": {...}}`` (bond lengths and angles by type, bonds within 0.1 Angstrom of the
        reference mean, clash fractions, radius of gyration, and for peptides the per-residue
        phi/psi JS distances) and, for peptides, ``"handedness"`` of ``reference`` and ``samples``.
    """
    bonds = topology.bonds
    bonds_t = torch.from_numpy(bonds)
    triplets = angle_triplets(bonds, topology.n_atoms)
    reference_lengths = bond_lengths(torch.from_numpy(reference), bonds_t).numpy()
    sample_lengths = bond_lengths(torch.from_numpy(samples), bonds_t).numpy()
    reference_angles, sample_angles = bond_angles(reference, triplets), bond_angles(samples, triplets)
    reference_rg, sample_rg = radius_of_gyration(reference), radius_of_gyration(samples)
    agreement: dict = {
        "samples": {
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
                "min_bonds_apart": NONBONDED_MIN_BONDS_APART,
            },
            "radius_of_gyration": {
                "reference_mean": float(reference_rg.mean()),
                "sample_mean": float(sample_rg.mean()),
            },
        }
    }
    found = backbone_angles(topology, {"reference": reference, "samples": samples})
    if found is not None:
        residue_ids, angles = found
        per_residue = {
            str(residue): jensen_shannon_distance(
                ramachandran_histogram(angles["samples"][0][:, k], angles["samples"][1][:, k]),
                ramachandran_histogram(angles["reference"][0][:, k], angles["reference"][1][:, k]),
            )
            for k, residue in enumerate(residue_ids.tolist())
        }
        agreement["samples"]["ramachandran_js_distance"] = {
            "per_residue": per_residue,
            "mean": float(np.mean(list(per_residue.values()))),
            "definition": "Jensen-Shannon distance (sqrt of divergence), log base 2, "
            f"{RAMACHANDRAN_BINS}x{RAMACHANDRAN_BINS} bins of 10 degrees, pseudo-count {JS_PSEUDO_COUNT} per bin",
        }
        agreement["handedness"] = {name: helix_handedness(phi) for name, (phi, _) in angles.items()}
    return agreement


def ensemble_metrics(agreement: dict) -> dict[str, float]:
    """The flat sample-vs-reference metrics (keys of ``ENSEMBLE_METRICS``) of a :func:`sample_agreement`
    result or a report; the phi/psi ones for peptides only, the bond-angle one where there are angles."""
    samples = agreement["samples"]
    clashes, gyration = samples["clash_fraction"], samples["radius_of_gyration"]
    metrics = {}
    if "handedness" in agreement:
        metrics["ramachandran_js_distance_mean"] = samples["ramachandran_js_distance"]["mean"]
        fractions = agreement["handedness"]
        for hand in HANDS:
            metrics[f"helix_{hand}_fraction_difference"] = abs(
                fractions["samples"][hand] - fractions["reference"][hand]
            )
    metrics["bonds_within_0.1_of_reference_mean"] = samples["bonds_within_0.1_of_reference_mean"]
    metrics["clash_fraction_difference"] = abs(clashes["samples"] - clashes["reference"])
    metrics["radius_of_gyration_mean_difference"] = abs(gyration["sample_mean"] - gyration["reference_mean"])
    for kind in ("bond_length", "bond_angle"):
        by_type = list(samples[f"{kind}_by_type"].values())
        if by_type:
            total = sum(t["mean_abs_deviation"] * t["count"] for t in by_type)
            metrics[f"{kind}_mean_abs_deviation"] = total / sum(t["count"] for t in by_type)
    return metrics


def projections(reference: np.ndarray, samples: np.ndarray, topology: Topology) -> dict[str, np.ndarray]:
    """The per-frame numbers behind the Ramachandran and free-energy figures, for other tools to plot.

    Returns:
        ``{ensemble}_rg`` (frames,) radius of gyration in Angstrom, and for peptides
        ``{ensemble}_phi`` and ``{ensemble}_psi`` (frames, residues) in degrees of the residues of
        :func:`inner_residues`, for ensembles ``reference`` and ``samples``.
    """
    arrays = {"reference_rg": radius_of_gyration(reference), "samples_rg": radius_of_gyration(samples)}
    found = backbone_angles(topology, {"reference": reference, "samples": samples})
    if found is not None:
        inner = inner_residues(len(found[0]))
        for name, (phi, psi) in found[1].items():
            arrays[f"{name}_phi"], arrays[f"{name}_psi"] = phi[:, inner], psi[:, inner]
    return arrays


def residues_text(topology: Topology, residue_ids: np.ndarray) -> str:
    """The residues of :func:`inner_residues` among the backbone's ``residue_ids``, in words for a
    figure: 'residue 2 (ALA)', 'residues 2-3', 'inner residues 3-9'."""
    ids = residue_ids[inner_residues(len(residue_ids))].tolist()
    if len(ids) == 1:
        return f"residue {ids[0]} ({topology.residue_names[np.flatnonzero(topology.residue_ids == ids[0])[0]]})"
    listed = f"{ids[0]}-{ids[-1]}" if ids == list(range(ids[0], ids[-1] + 1)) else ", ".join(map(str, ids))
    return f"{'inner ' if len(residue_ids) > 2 else ''}residues {listed}"


def write_figures(
    reference: np.ndarray, reconstructed: np.ndarray, samples: np.ndarray, topology: Topology, folder: Path
) -> list[Path]:
    """The evaluation PNGs. For a molecule without backbone phi and psi, ``ramachandran.png`` and
    ``free_energy.png`` hold a note saying so instead of a map.

    Args:
        reference: (F, N, 3) reference conformations, Angstrom.
        reconstructed: (F, N, 3) their reconstructions, Angstrom.
        samples: (S, N, 3) prior samples, Angstrom.
        topology: the molecule.
        folder: an existing folder for the PNG files.
    """
    bonds = topology.bonds
    triplets = angle_triplets(bonds, topology.n_atoms)
    ensembles = {"reference": reference, "samples": samples}
    as_tensors = {name: torch.from_numpy(c) for name, c in ensembles.items()}
    gyration = {name: radius_of_gyration(c) for name, c in ensembles.items()}
    found = backbone_angles(topology, ensembles)
    figures = [
        plot_histograms(
            {
                "bond length (Angstrom)": {
                    name: bond_lengths(c, torch.from_numpy(bonds)).numpy() for name, c in as_tensors.items()
                },
                "bond angle (degrees)": {name: bond_angles(c, triplets) for name, c in ensembles.items()},
            },
            folder / "bonds_angles.png",
        ),
        plot_histograms(
            {
                "interatomic distance (Angstrom)": {
                    name: pairwise_distances(c[:500]).numpy() for name, c in as_tensors.items()
                },
                "radius of gyration (Angstrom)": gyration,
            },
            folder / "distances_rg.png",
        ),
        plot_structures(
            reference,
            reconstructed,
            samples,
            topology,
            structure_basins(
                len(reference),
                len(samples),
                None if found is None else (found[1]["reference"][0], found[1]["samples"][0]),
            ),
            folder / "structures.png",
        ),
    ]
    if found is None:
        reason = (
            "this molecule has no residue with backbone phi and psi\n"
            "(atoms N, CA, C named so, with C of the residue before and N of the residue after)"
        )
        figures.append(plot_note(f"No Ramachandran map: {reason}.", folder / "ramachandran.png"))
        figures.append(plot_note(f"No free-energy map over phi: {reason}.", folder / "free_energy.png"))
        return figures
    residue_ids, angles = found
    inner = inner_residues(len(residue_ids))
    residues = residues_text(topology, residue_ids)
    phi = {name: angles[name][0][:, inner] for name in ensembles}
    figures.append(
        plot_ramachandran(
            phi, {name: angles[name][1][:, inner] for name in ensembles}, residues, folder / "ramachandran.png"
        )
    )
    figures.append(
        plot_free_energy(
            {name: values.mean(axis=1) for name, values in phi.items()},
            gyration,
            (
                f"{'mean signed ' if len(residue_ids) > 1 else ''}phi of {residues} (degrees)",
                "radius of gyration (Angstrom)",
            ),
            folder / "free_energy.png",
        )
    )
    return figures
