"""``structures.png``: reference frames, their reconstructions and prior samples, drawn to be compared by eye.

One row per basin (for peptides a helix class, else all frames): a typical reference frame of the
basin (radius of gyration nearest the basin's median), its reconstruction over a grey shadow of the
reference, and prior samples of the basin spread over its radius of gyration (low, median, high).
Everything in a row is superposed on the row's reference frame by a proper rotation (Kabsch, so a
mirror image stays one) and seen along that frame's principal axes: the longest across, the second
up, the third towards the viewer (a right-handed view, no mirror). Every panel has the same scale.
Atoms are coloured by element and drawn back to front with their bonds.

Coordinates are numpy arrays in Angstrom.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import to_rgb  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

from bond_vae.data.records import ELEMENTS, Topology  # noqa: E402
from bond_vae.evaluation.metrics import helix_classes, radius_of_gyration  # noqa: E402

ELEMENT_COLOURS = {
    "H": "#e8e8e8",
    "C": "#808080",
    "N": "#2050e0",
    "O": "#e02020",
    "S": "#f0d020",
    "P": "#ff8000",
    "F": "#60c040",
    "Cl": "#20a020",
    "Br": "#a02828",
}
OTHER_COLOUR = "#e060e0"  # elements outside the table
SAMPLES_PER_BASIN = 3
MARGIN = 1.2  # Angstrom of empty space around the atom centres of the widest panel
ATOM_RADIUS = 0.38  # Angstrom, as drawn
BOND_WIDTH = 0.16  # Angstrom, as drawn
PANEL_WIDTH = 2.7  # inches
SHADOW_COLOUR = "#b8b8b8"
BASIN_LABELS = ("right-handed helix", "left-handed helix", "mixed or unfolded")  # of HELIX_CLASSES
SIGN_LABELS = ("phi < 0", "phi > 0", "phi of both signs")  # the same classes for one or two residues
FOG = 0.5  # how far the farthest atom of a view is faded towards white (depth cue)


@dataclass
class Basin:
    """Frames of one basin: ``reference`` and ``samples`` are index arrays into the two ensembles."""

    label: str
    reference: np.ndarray
    samples: np.ndarray


def element_colour(atomic_number: int) -> str:
    """Colour of an element: C grey, N blue, O red, S yellow, a few others from ``ELEMENT_COLOURS``."""
    return ELEMENT_COLOURS.get(ELEMENTS.get(int(atomic_number), ""), OTHER_COLOUR)


def superpose(mobile: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Rotate (proper rotation, det +1) and translate each frame of ``mobile`` onto ``target``.

    Args:
        mobile: (F, N, 3) or (N, 3) coordinates, Angstrom.
        target: (N, 3) coordinates, Angstrom.

    Returns:
        ``mobile``'s shape: each frame at its least-squares position on ``target`` (Kabsch).
    """
    frames = np.asarray(mobile, dtype=np.float64).reshape(-1, *target.shape)
    centre = target.mean(axis=0)
    moved = frames - frames.mean(axis=1, keepdims=True)
    u, _, vh = np.linalg.svd(moved.transpose(0, 2, 1) @ (target - centre))
    # flip the last singular direction where the best orthogonal matrix would be a reflection
    u[:, :, -1] *= np.sign(np.linalg.det(u @ vh))[:, None]
    return (moved @ (u @ vh) + centre).reshape(np.shape(mobile))


def principal_axes(coords: np.ndarray) -> np.ndarray:
    """(3, 3) rows: the principal axes of (N, 3) ``coords`` by decreasing spread, the third the cross
    product of the first two, so that ``centred @ axes.T`` is a rotation (a view, not a mirror)."""
    centred = coords - coords.mean(axis=0)
    _, vectors = np.linalg.eigh(centred.T @ centred)
    first, second = vectors[:, 2], vectors[:, 1]
    return np.stack([first, second, np.cross(first, second)])


def typical_frame(gyration: np.ndarray, members: np.ndarray) -> int:
    """The member frame whose radius of gyration ((frames,) Angstrom) is nearest the members' median."""
    values = gyration[members]
    return int(members[np.argmin(np.abs(values - np.median(values)))])


def spread_frames(gyration: np.ndarray, members: np.ndarray, count: int) -> np.ndarray:
    """Up to ``count`` members spread over their radius of gyration: at its quantiles (k + 1/2) / count."""
    ordered = members[np.argsort(gyration[members], kind="stable")]
    positions = ((np.arange(count) + 0.5) * len(ordered) / count).astype(int)
    return ordered[np.unique(positions)] if len(ordered) else ordered


def structure_basins(n_reference: int, n_samples: int, phi: tuple[np.ndarray, np.ndarray] | None) -> list[Basin]:
    """The rows: for peptides the helix classes (:func:`helix_classes`) that hold a reference frame or
    a sample, else one row of all frames.

    Args:
        n_reference: the number of reference frames.
        n_samples: the number of prior samples.
        phi: for peptides the (frames, residues) backbone phi angles of the reference and of the
            samples, degrees; None for other molecules.
    """
    if phi is None:
        return [Basin("all frames", np.arange(n_reference), np.arange(n_samples))]
    reference_classes, sample_classes = (helix_classes(angles) for angles in phi)
    labels = BASIN_LABELS if phi[0].shape[1] > 2 else SIGN_LABELS
    basins = [
        Basin(label, np.flatnonzero(reference_classes == index), np.flatnonzero(sample_classes == index))
        for index, label in enumerate(labels)
    ]
    return [basin for basin in basins if len(basin.reference) or len(basin.samples)]


def _row(reference: np.ndarray, reconstructed: np.ndarray, samples: np.ndarray, basin: Basin) -> dict:
    """The frames of one row, superposed on its reference frame and turned into its principal-axes view."""
    reference_rg, sample_rg = radius_of_gyration(reference), radius_of_gyration(samples)
    members = basin.reference if len(basin.reference) else np.arange(len(reference))
    frame = typical_frame(reference_rg, members)
    target = reference[frame]
    centre, axes = target.mean(axis=0), principal_axes(target)
    picked = spread_frames(sample_rg, basin.samples, SAMPLES_PER_BASIN)
    rebuilt = superpose(reconstructed[frame], target)
    placed = superpose(samples[picked], target) if len(picked) else np.zeros((0, *target.shape))

    def deviation(coords: np.ndarray) -> float:
        return float(np.sqrt(((coords - target) ** 2).sum(-1).mean()))

    return {
        "frame": frame,
        "views": [(c - centre) @ axes.T for c in (target, rebuilt, *placed)],
        "rebuilt_rmsd": deviation(rebuilt),
        "samples": [(int(k), float(sample_rg[k]), deviation(c)) for k, c in zip(picked, placed, strict=True)],
    }


def _draw(axis: plt.Axes, view: np.ndarray, bonds: np.ndarray, colours: np.ndarray, scale: float) -> None:
    """Atoms and bonds of one (N, 3) view (x across, y up, z towards the viewer), back to front, the
    farthest faded by ``FOG`` towards white; ``colours`` (N, 3) RGB, ``scale`` in points per Angstrom."""
    depth = view[:, 2]
    fade = FOG * (depth.max() - depth) / max(float(np.ptp(depth)), 1e-6)  # (N,) 0 nearest, FOG farthest

    def faded(rgb: np.ndarray, amount: float) -> np.ndarray:
        return rgb + (1.0 - rgb) * amount

    items = [(depth[[i, j]].mean() - 1e-3, "bond", (i, j)) for i, j in bonds.tolist()]
    items += [(depth[k], "atom", k) for k in range(len(view))]
    for _, kind, what in sorted(items, key=lambda item: item[0]):
        if kind == "bond":
            colour = faded(np.full(3, 0.25), fade[list(what)].mean())
            axis.plot(*view[list(what), :2].T, color=colour, lw=BOND_WIDTH * scale, solid_capstyle="round")
        else:
            axis.plot(
                *view[what, :2],
                "o",
                ms=2 * ATOM_RADIUS * scale,
                mfc=faded(colours[what], fade[what]),
                mec=faded(np.full(3, 0.15), fade[what]),
                mew=0.6,
            )


def plot_structures(
    reference: np.ndarray,
    reconstructed: np.ndarray,
    samples: np.ndarray,
    topology: Topology,
    basins: list[Basin],
    path: Path,
) -> Path:
    """The structures figure (module docstring): one row per basin.

    Args:
        reference: (F, N, 3) reference conformations, Angstrom.
        reconstructed: (F, N, 3) their reconstructions, Angstrom.
        samples: (S, N, 3) prior samples, Angstrom.
        topology: the molecule (elements and bonds).
        basins: the rows, each with at least one reference frame or sample.
        path: the PNG file to write.
    """
    rows = [_row(reference, reconstructed, samples, basin) for basin in basins]
    half = np.max([np.abs(v[:, :2] - _middle(row["views"][0])).max(axis=0) for row in rows for v in row["views"]], 0)
    half = half + MARGIN
    scale = PANEL_WIDTH / (2 * half[0]) * 72  # points per Angstrom
    columns = 2 + SAMPLES_PER_BASIN
    figure, axes = plt.subplots(
        len(rows),
        columns,
        figsize=(columns * PANEL_WIDTH + 0.5, len(rows) * (PANEL_WIDTH * half[1] / half[0] + 0.55) + 0.8),
        squeeze=False,
        layout="constrained",
    )
    colours = np.array([to_rgb(element_colour(z)) for z in topology.atomic_numbers])
    bonds = topology.bonds
    for basin, row, panel_row in zip(basins, rows, axes, strict=True):
        middle = _middle(row["views"][0])
        for axis in panel_row:
            axis.set(xlim=(middle[0] - half[0], middle[0] + half[0]), ylim=(middle[1] - half[1], middle[1] + half[1]))
            axis.set_aspect("equal")
            axis.set_xticks([])
            axis.set_yticks([])
            axis.spines[:].set_visible(False)
        reference_view, rebuilt_view, *sample_views = row["views"]
        _draw(panel_row[0], reference_view, bonds, colours, scale)
        for i, j in bonds.tolist():  # the reference's shadow behind its reconstruction
            panel_row[1].plot(*reference_view[[i, j], :2].T, color=SHADOW_COLOUR, lw=5 * BOND_WIDTH * scale)
        _draw(panel_row[1], rebuilt_view, bonds, colours, scale)
        in_basin = len(basin.reference) > 0
        panel_row[0].set_ylabel(
            f"{basin.label}\n{len(basin.reference)} of {len(reference)} reference frames,\n"
            f"{len(basin.samples)} of {len(samples)} samples",
            fontsize=9,
        )
        panel_row[0].set_title(
            f"reference frame {row['frame']}" if in_basin else f"none in this basin: frame {row['frame']}",
            fontsize=9,
        )
        panel_row[1].set_title(f"its reconstruction, RMSD {row['rebuilt_rmsd']:.2f} A", fontsize=9)
        for axis, view, (index, gyration, deviation) in zip(
            panel_row[2 : 2 + len(sample_views)], sample_views, row["samples"], strict=True
        ):
            _draw(axis, view, bonds, colours, scale)
            axis.set_title(
                f"prior sample {index}: Rg {gyration:.1f} A,\nRMSD {deviation:.1f} A to the reference", fontsize=9
            )
        for axis in panel_row[2 + len(sample_views) :]:
            axis.text(
                0.5,
                0.5,
                "no further prior sample\nin this basin",
                ha="center",
                va="center",
                color="0.4",
                transform=axis.transAxes,
            )
    present = sorted({int(z) for z in topology.atomic_numbers})
    handles = [
        Line2D([], [], ls="", marker="o", ms=9, mfc=element_colour(z), mec="0.15", label=ELEMENTS.get(z, f"Z={z}"))
        for z in present
    ]
    handles.append(Line2D([], [], color=SHADOW_COLOUR, lw=6, label="reference frame, behind its reconstruction"))
    handles.append(Line2D([], [], ls="", marker="o", ms=9, mfc="#e0e0e0", mec="#b0b0b0", label="paler: farther away"))
    figure.legend(handles=handles, loc="outside lower center", ncols=len(handles), fontsize=9, frameon=False)
    figure.suptitle(
        "Superposed on each row's reference frame (proper rotation), seen along its principal axes; "
        f"one scale, panel width {2 * half[0]:.0f} A",
        fontsize=10,
    )
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def _middle(view: np.ndarray) -> np.ndarray:
    """(2,) centre of the bounding box of a view's x and y, Angstrom."""
    return (view[:, :2].min(axis=0) + view[:, :2].max(axis=0)) / 2
