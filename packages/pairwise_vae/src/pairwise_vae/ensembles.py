"""Comparing conformation ensembles: structural agreement of reconstructions and prior samples
with a reference, as numbers (:func:`compare_ensembles`) and figures (:func:`write_figures`).

* reconstruction: Kabsch RMSD with a proper rotation, and with reflection allowed (a large
  gap means the mirror image was rebuilt), bond-length and all-pairs distance errors;
* prior samples: bond lengths and angles per element type, bonds within 0.1 Angstrom of the
  reference mean, clashes, per-residue phi/psi Jensen-Shannon distances, helix handedness,
  radius of gyration, and a free-energy map.

Ensembles are (frames, N, 3) numpy arrays in Angstrom.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from pairwise_vae.data import Topology
from pairwise_vae.metrics import (
    CLASH_DISTANCE,
    CLASH_MIN_BONDS_APART,
    JS_PSEUDO_COUNT,
    RAMACHANDRAN_BINS,
    angle_triplets,
    bond_angles,
    clash_fraction,
    dihedrals,
    find_backbone,
    helix_handedness,
    jensen_shannon_distance,
    per_type_deviation,
    radius_of_gyration,
    ramachandran_histogram,
    type_labels,
)
from pairwise_vae.plots import plot_free_energy, plot_histograms, plot_ramachandran, plot_structures
from pairwise_vae.utils import bond_lengths, kabsch_rmsd, pairwise_distances

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
    reference_t, reconstructed_t, samples_t = (torch.from_numpy(c) for c in (reference, reconstructed, samples))
    bonds_t = torch.from_numpy(bonds)
    proper = kabsch_rmsd(reconstructed_t, reference_t).numpy()
    improper = kabsch_rmsd(reconstructed_t, reference_t, allow_reflection=True).numpy()
    bond_error = bond_lengths(reconstructed_t, bonds_t) - bond_lengths(reference_t, bonds_t)
    distance_error = pairwise_distances(reconstructed_t) - pairwise_distances(reference_t)
    report: dict = {
        "reconstruction": {
            "kabsch_rmsd": float(proper.mean()),
            "kabsch_rmsd_reflection_allowed": float(improper.mean()),
            "mirror_gap": float((proper - improper).mean()),
            "bond_mae": bond_error.abs().mean().item(),
            "distance_mae": distance_error.abs().mean().item(),
        }
    }
    triplets = angle_triplets(bonds, topology.n_atoms)
    reference_lengths = bond_lengths(reference_t, bonds_t).numpy()
    sample_lengths = bond_lengths(samples_t, bonds_t).numpy()
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
            "definition": "Jensen-Shannon distance (sqrt of divergence), log base 2, "
            f"{RAMACHANDRAN_BINS}x{RAMACHANDRAN_BINS} bins of 10 degrees, pseudo-count {JS_PSEUDO_COUNT} per bin",
        }
        report["handedness"] = {name: helix_handedness(phi) for name, (phi, _) in angles.items()}
    return report


def projections(reference: np.ndarray, samples: np.ndarray, topology: Topology) -> dict[str, np.ndarray]:
    """The per-frame numbers behind the Ramachandran and free-energy figures, for other tools to plot.

    Returns:
        ``{ensemble}_rg`` (frames,) radius of gyration in Angstrom, and for peptides
        ``{ensemble}_phi`` and ``{ensemble}_psi`` (frames, inner residues) in degrees, for
        ensembles ``reference`` and ``samples``.
    """
    arrays = {"reference_rg": radius_of_gyration(reference), "samples_rg": radius_of_gyration(samples)}
    found = backbone_angles(topology, {"reference": reference, "samples": samples})
    if found is not None:
        for name, (phi, psi) in found[1].items():
            arrays[f"{name}_phi"], arrays[f"{name}_psi"] = phi[:, 1:-1], psi[:, 1:-1]
    return arrays


def write_figures(
    reference: np.ndarray, reconstructed: np.ndarray, samples: np.ndarray, topology: Topology, folder: Path
) -> list[Path]:
    """The evaluation PNGs (Ramachandran and free-energy maps only for peptides).

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
