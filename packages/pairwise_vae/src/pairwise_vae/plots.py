"""PNG plots written into a run folder: loss curves and bond-length histograms."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def plot_loss_curves(history: list[dict], path: Path) -> Path:
    """Training and validation loss terms per epoch (log scale) from ``metrics.jsonl`` records."""
    train = [r for r in history if r.get("split") == "train"]
    validation = [r for r in history if r.get("split") == "validation"]
    figure, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for axis, key, title in zip(
        axes, ("loss", "reconstruction", "kl"), ("total loss", "pairwise-distance MSE (Angstrom^2)", "KL per molecule (nats)")
    ):
        for records, label in ((train, "train"), (validation, "validation")):
            if records:
                axis.plot([r["epoch"] for r in records], [r[key] for r in records], marker="o", ms=3, label=label)
        axis.set_title(title)
        axis.set_xlabel("epoch")
        axis.set_yscale("log")
        axis.grid(alpha=0.3)
    axes[0].legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def plot_bond_lengths(reference: np.ndarray, reconstructed: np.ndarray, sampled: np.ndarray, path: Path) -> Path:
    """Histograms of all bond lengths (Angstrom): reference data, reconstructions, prior samples."""
    figure, axis = plt.subplots(figsize=(6.5, 4))
    bins = np.linspace(min(reference.min(), 1.0), max(reference.max(), 1.8), 80)
    for values, label in ((reference, "validation data"), (reconstructed, "reconstruction"), (sampled, "prior samples")):
        axis.hist(np.clip(values.ravel(), bins[0], bins[-1]), bins=bins, histtype="step", density=True, lw=1.5, label=label)
    axis.set_xlabel("bond length (Angstrom)")
    axis.set_ylabel("density")
    axis.legend()
    axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
