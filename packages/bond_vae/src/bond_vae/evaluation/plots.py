"""PNG figures: loss curves and bond-length histograms of a run, and the evaluation figures.

Every figure is laid out by matplotlib's constrained layout and written by :func:`_save`.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def _save(figure: plt.Figure, path: Path) -> Path:
    """Write ``figure`` as a PNG at ``path``, free its memory, and return ``path``."""
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def plot_loss_curves(history: list[dict], path: Path) -> Path:
    """Training and validation loss terms per epoch (log scale) from ``metrics.jsonl`` records."""
    figure, axes = plt.subplots(1, 3, figsize=(13, 3.6), layout="constrained")
    for axis, key, title in zip(
        axes,
        ("loss", "reconstruction", "kl"),
        ("total loss", "bond-length MSE (Angstrom^2)", "KL per molecule (nats)"),
        strict=True,
    ):
        for split in ("train", "validation"):
            # an epoch whose steps were all skipped (non-finite) has a train record without losses
            records = [r for r in history if r.get("split") == split and key in r]
            if records:
                axis.plot([r["epoch"] for r in records], [r[key] for r in records], marker="o", ms=3, label=split)
        axis.set_title(title)
        axis.set_xlabel("epoch")
        axis.set_yscale("log")
        axis.grid(alpha=0.3)
    axes[0].legend()
    return _save(figure, path)


def plot_bond_lengths(reference: np.ndarray, reconstructed: np.ndarray, sampled: np.ndarray, path: Path) -> Path:
    """Histograms of all bond lengths (Angstrom): reference data, reconstructions, prior samples."""
    figure, axis = plt.subplots(figsize=(6.5, 4), layout="constrained")
    bins = np.linspace(min(reference.min(), 1.0), max(reference.max(), 1.8), 80)
    for values, label in (
        (reference, "validation data"),
        (reconstructed, "reconstruction"),
        (sampled, "prior samples"),
    ):
        axis.hist(
            np.clip(values.ravel(), bins[0], bins[-1]), bins=bins, histtype="step", density=True, lw=1.5, label=label
        )
    axis.set_xlabel("bond length (Angstrom)")
    axis.set_ylabel("density")
    axis.legend()
    axis.grid(alpha=0.3)
    return _save(figure, path)


def _side_by_side(n_panels: int, width: float = 5.0, height: float = 4.2) -> tuple[plt.Figure, np.ndarray]:
    figure, axes = plt.subplots(1, n_panels, figsize=(width * n_panels, height), squeeze=False, layout="constrained")
    return figure, axes[0]


def plot_ramachandran(phi: dict[str, np.ndarray], psi: dict[str, np.ndarray], path: Path) -> Path:
    """Ramachandran density (all inner residues pooled) for each named ensemble."""
    figure, axes = _side_by_side(len(phi))
    edges = np.linspace(-180, 180, 73)
    for axis, name in zip(axes, phi, strict=True):
        counts, _, _ = np.histogram2d(phi[name].ravel(), psi[name].ravel(), bins=[edges, edges])
        axis.imshow(np.log1p(counts.T), origin="lower", extent=(-180, 180, -180, 180), cmap="viridis", aspect="equal")
        axis.set_title(f"{name}: phi/psi")
        axis.set_xlabel("phi (degrees)")
        axis.set_ylabel("psi (degrees)")
    return _save(figure, path)


def plot_free_energy(
    cv1: dict[str, np.ndarray], cv2: dict[str, np.ndarray], labels: tuple[str, str], path: Path
) -> Path:
    """-ln p on two collective variables, same bins and colour scale for every ensemble (kT units)."""
    all_x = np.concatenate(list(cv1.values()))
    all_y = np.concatenate(list(cv2.values()))
    x_edges = np.linspace(all_x.min(), all_x.max(), 41)
    y_edges = np.linspace(all_y.min(), all_y.max(), 41)
    figure, axes = plt.subplots(1, len(cv1), figsize=(5.0 * len(cv1) + 1.0, 4.2), squeeze=False, layout="constrained")
    axes = axes[0]
    for axis, name in zip(axes, cv1, strict=True):
        density, _, _ = np.histogram2d(cv1[name], cv2[name], bins=[x_edges, y_edges], density=True)
        with np.errstate(divide="ignore"):
            free_energy = -np.log(density)
        free_energy -= np.nanmin(free_energy[np.isfinite(free_energy)])
        image = axis.imshow(
            np.where(np.isfinite(free_energy), free_energy, np.nan).T,
            origin="lower",
            aspect="auto",
            cmap="magma",
            extent=(x_edges[0], x_edges[-1], y_edges[0], y_edges[-1]),
            vmin=0,
            vmax=8,
        )
        axis.set_title(f"{name}: free energy (kT)")
        axis.set_xlabel(labels[0])
        axis.set_ylabel(labels[1])
    figure.colorbar(image, ax=list(axes), shrink=0.8)
    return _save(figure, path)


def plot_histograms(series: dict[str, dict[str, np.ndarray]], path: Path) -> Path:
    """One panel per quantity (e.g. bond length), one line per ensemble."""
    figure, axes = _side_by_side(len(series), width=4.6, height=3.6)
    for axis, (quantity, ensembles) in zip(axes, series.items(), strict=True):
        values = np.concatenate([v.ravel() for v in ensembles.values()])
        low, high = np.percentile(values, [0.5, 99.5])
        bins = np.linspace(low, high, 80)
        for name, v in ensembles.items():
            axis.hist(np.clip(v.ravel(), low, high), bins=bins, density=True, histtype="step", lw=1.4, label=name)
        axis.set_xlabel(quantity)
        axis.grid(alpha=0.3)
    axes[0].legend()
    return _save(figure, path)


def plot_structures(structures: dict[str, np.ndarray], bonds: np.ndarray, path: Path) -> Path:
    """3D stick renders of single conformations (each (N, 3), Angstrom), one panel each."""
    figure = plt.figure(figsize=(4.5 * len(structures), 4.5), layout="constrained")
    for panel, (name, coords) in enumerate(structures.items(), start=1):
        axis = figure.add_subplot(1, len(structures), panel, projection="3d")
        centred = coords - coords.mean(axis=0)
        for i, j in bonds.tolist():
            axis.plot(*centred[[i, j]].T, color="0.3", lw=2)
        axis.scatter(*centred.T, c=np.arange(len(centred)), cmap="viridis", s=18, depthshade=False)
        limit = np.abs(centred).max()
        axis.set_xlim(-limit, limit)
        axis.set_ylim(-limit, limit)
        axis.set_zlim(-limit, limit)
        axis.set_title(name)
        axis.set_axis_off()
    return _save(figure, path)
