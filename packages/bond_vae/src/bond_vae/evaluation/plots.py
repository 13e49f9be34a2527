"""PNG figures of the evaluation report (a training run's own figures are in ``training/plots.py``).

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


FREE_ENERGY_CAP = 8.0  # kT: the top of the colour scale at most; higher bins show in its top colour
MAP_COLOURS = "magma"  # dark = populated; empty bins are left white


def _side_by_side(n_panels: int, width: float = 5.0, height: float = 4.2) -> tuple[plt.Figure, np.ndarray]:
    figure, axes = plt.subplots(1, n_panels, figsize=(width * n_panels, height), squeeze=False, layout="constrained")
    return figure, axes[0]


def _free_energy(x: np.ndarray, y: np.ndarray, x_edges: np.ndarray, y_edges: np.ndarray) -> np.ndarray:
    """-ln p (kT) of (x, y) pairs on a grid, 0 at the most populated bin, NaN where a bin is empty:
    (len(x_edges) - 1, len(y_edges) - 1)."""
    density, _, _ = np.histogram2d(x, y, bins=[x_edges, y_edges], density=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        energy = -np.log(density)
    energy[~np.isfinite(energy)] = np.nan
    return energy - np.nanmin(energy) if np.isfinite(energy).any() else energy


def _maps(
    energies: dict[str, np.ndarray], extent: tuple[float, float, float, float], counts: dict[str, int], aspect: str
) -> tuple[plt.Figure, np.ndarray]:
    """One free-energy map per ensemble on one colour scale (0 to the highest bin, at most ``FREE_ENERGY_CAP``)."""
    finite = [e[np.isfinite(e)] for e in energies.values()]
    top = min(FREE_ENERGY_CAP, max([float(np.ceil(f.max())) for f in finite if f.size] + [1.0]))
    figure, axes = plt.subplots(
        1, len(energies), figsize=(4.6 * len(energies) + 1.2, 4.4), squeeze=False, layout="constrained"
    )
    for axis, (name, energy) in zip(axes[0], energies.items(), strict=True):
        image = axis.imshow(
            energy.T, origin="lower", extent=extent, aspect=aspect, cmap=MAP_COLOURS, vmin=0.0, vmax=top
        )
        axis.set_title(f"{name} ({counts[name]} frames)")
    figure.colorbar(image, ax=list(axes[0]), shrink=0.85, label="free energy -ln p (kT), 0 at the densest bin")
    return figure, axes[0]


def plot_ramachandran(phi: dict[str, np.ndarray], psi: dict[str, np.ndarray], residues: str, path: Path) -> Path:
    """Ramachandran free energy (-ln p in kT, 10-degree bins, residues pooled) for each named ensemble.

    Args:
        phi: per ensemble (frames, residues) phi angles, degrees.
        psi: the matching psi angles, degrees.
        residues: the residues in words, for the title.
        path: the PNG file to write.
    """
    edges = np.linspace(-180.0, 180.0, 37)
    energies = {name: _free_energy(phi[name].ravel(), psi[name].ravel(), edges, edges) for name in phi}
    figure, axes = _maps(energies, (-180, 180, -180, 180), {name: len(v) for name, v in phi.items()}, "equal")
    for axis in axes:
        axis.set(xlabel="phi (degrees)", ylabel="psi (degrees)", xticks=edges[::9], yticks=edges[::9])
        axis.grid(alpha=0.25, color="0.5")
    figure.suptitle(f"Ramachandran map of {residues}" + (", pooled" if next(iter(phi.values())).shape[1] > 1 else ""))
    return _save(figure, path)


def plot_free_energy(
    cv1: dict[str, np.ndarray], cv2: dict[str, np.ndarray], labels: tuple[str, str], path: Path
) -> Path:
    """-ln p (kT) on two collective variables ((frames,) each per ensemble), same bins and colour
    scale for every ensemble, sqrt(frames) bins a side (15 to 40); ``labels`` name the two with their units."""
    all_x, all_y = np.concatenate(list(cv1.values())), np.concatenate(list(cv2.values()))
    bins = int(np.clip(np.sqrt(min(len(v) for v in cv1.values())), 15, 40))  # sparse maps for few frames
    x_edges = np.linspace(np.nanmin(all_x), np.nanmax(all_x), bins + 1)
    y_edges = np.linspace(np.nanmin(all_y), np.nanmax(all_y), bins + 1)
    energies = {name: _free_energy(cv1[name], cv2[name], x_edges, y_edges) for name in cv1}
    extent = (x_edges[0], x_edges[-1], y_edges[0], y_edges[-1])
    figure, axes = _maps(energies, extent, {name: len(v) for name, v in cv1.items()}, "auto")
    for axis in axes:
        axis.set(xlabel=labels[0], ylabel=labels[1])
    return _save(figure, path)


def plot_histograms(series: dict[str, dict[str, np.ndarray]], path: Path) -> Path:
    """One panel per quantity, named with its unit in parentheses ('bond length (Angstrom)'), one
    density line per ensemble. The axis spans the pooled 0.1 to 99.9 percentiles; the legend gives
    the share of each ensemble's values beyond it."""
    figure, axes = _side_by_side(len(series), width=4.8, height=3.8)
    for axis, (quantity, ensembles) in zip(axes, series.items(), strict=True):
        values = {name: v.ravel()[np.isfinite(v.ravel())] for name, v in ensembles.items()}
        low, high = np.percentile(np.concatenate(list(values.values())), [0.1, 99.9])
        bins = np.linspace(low, high, int(np.clip(2 * np.sqrt(min(len(v) for v in values.values())), 20, 80)) + 1)
        for name, v in values.items():
            beyond = 100.0 * ((v < low) | (v > high)).mean()
            label = f"{name}, {beyond:.1f}% beyond the axis" if beyond >= 0.05 else name
            axis.hist(v, bins=bins, density=True, histtype="step", lw=1.5, label=label)
        unit = quantity[quantity.rindex("(") + 1 : -1] if quantity.endswith(")") else "unit"
        axis.set(xlabel=quantity, ylabel=f"density (per {unit.removesuffix('s')})", xlim=(low, high))
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    return _save(figure, path)


def plot_note(text: str, path: Path) -> Path:
    """A figure that only says ``text``: written in place of a map that the molecule does not allow."""
    figure = plt.figure(figsize=(7.5, 1.6))
    figure.text(0.5, 0.5, text, ha="center", va="center", fontsize=11, wrap=True)
    return _save(figure, path)
