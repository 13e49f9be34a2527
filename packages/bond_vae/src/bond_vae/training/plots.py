"""PNG figures of a training run: loss curves and bond-length histograms, written at evaluation epochs.

The evaluation report's figures (``evaluation/plots.py``) are not drawn during training; the
train command writes the report once, when the run ends.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def save(figure: plt.Figure, path: Path) -> Path:
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
    return save(figure, path)


def plot_bond_lengths(reference: np.ndarray, reconstructed: np.ndarray, sampled: np.ndarray, path: Path) -> Path:
    """Histograms of all bond lengths (Angstrom): validation data, reconstructions, and samples drawn through
    the model's sampler."""
    figure, axis = plt.subplots(figsize=(6.5, 4), layout="constrained")
    bins = np.linspace(min(reference.min(), 1.0), max(reference.max(), 1.8), 80)
    for values, label in (
        (reference, "validation data"),
        (reconstructed, "reconstruction"),
        (sampled, "samples"),
    ):
        axis.hist(
            np.clip(values.ravel(), bins[0], bins[-1]), bins=bins, histtype="step", density=True, lw=1.5, label=label
        )
    axis.set_xlabel("bond length (Angstrom)")
    axis.set_ylabel("density")
    axis.legend()
    axis.grid(alpha=0.3)
    return save(figure, path)
