"""Compare a bond_vae run with a pairwise_vae run on the same reference frames: ``make compare``.

Runs each package's own evaluate command (``bond-vae-evaluate``, ``pairwise-vae-evaluate``) as
a subprocess, so neither package imports the other, and writes into a new folder:

* ``bond_vae/``, ``pairwise_vae/``: the two evaluation reports;
* ``comparison.md``: the headline numbers side by side, with training time and speed read
  from each run's ``metrics.jsonl``;
* ``free_energy.png``: -ln p over (mean signed phi of the inner residues, radius of gyration)
  for the reference, bond and pairwise samples, one colour scale;
* ``ramachandran.png``: phi/psi densities of the inner residues, reference, bond, pairwise in a row.

The reference is ``--data`` (with ``--topology``, ``--select``, ``--stride``) when given;
otherwise the bond evaluation's default reference (the AIB9 test trajectories for a model of the
embedded data, else the test frames its run held out), which the pairwise model is then
evaluated on too (the bond evaluation's ``reference.npz``).

    python scripts/compare_runs.py                                   # the latest run of each under runs/
    python scripts/compare_runs.py --bond runs/bond_vae/A --pairwise runs/pairwise_vae/B/last.pt
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

PACKAGES = {"bond": "bond_vae", "pairwise": "pairwise_vae"}
FREE_ENERGY_BINS = 36
RAMACHANDRAN_BINS = 36


class CompareError(Exception):
    """A run, checkpoint or evaluation that cannot be compared; the message names it."""


@dataclass
class Model:
    """One side of the comparison: its package, checkpoint, run folder and evaluation."""

    package: str
    checkpoint: Path
    run: Path
    evaluation: Path | None = None

    @property
    def report(self) -> dict:
        return json.loads((self.evaluation / "report.json").read_text())

    @property
    def projections(self) -> dict[str, np.ndarray]:
        with np.load(self.evaluation / "projections.npz") as archive:
            return {key: archive[key] for key in archive.files}


def find_checkpoint(given: Path | None, package: str, runs: Path) -> Model:
    """The checkpoint of a run folder (best.pt, else last.pt), a checkpoint file, or the latest run's."""
    if given is None:
        parent = runs / package
        candidates = sorted(
            (folder for folder in parent.glob("*") if (folder / "best.pt").exists() or (folder / "last.pt").exists()),
            key=lambda folder: folder.stat().st_mtime,
        )
        if not candidates:
            raise CompareError(f"{parent}: no {package} run with a checkpoint; train one or pass --{package[:-4]}")
        given = candidates[-1]
    if given.is_dir():
        for name in ("best.pt", "last.pt"):
            if (given / name).is_file():
                return Model(package, given / name, given)
        raise CompareError(f"{given}: a folder without best.pt or last.pt")
    if not given.is_file():
        raise CompareError(f"{given}: no such run folder or checkpoint")
    return Model(package, given, given.parent)


def evaluate_command(package: str) -> list[str]:
    """The package's own evaluate command, from this Python's environment."""
    name = package.replace("_", "-") + "-evaluate"
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if found is None:
        raise CompareError(f"{name}: command not found; install the {package.replace('_', '-')} package")
    return [found]


def evaluate(model: Model, output: Path, reference: list[str], options: list[str]) -> None:
    """Run the package's evaluate command on the model into ``output``; one line on failure."""
    command = [*evaluate_command(model.package), str(model.checkpoint), "--output", str(output), *reference, *options]
    print(f"evaluating {model.checkpoint} ({model.package})", flush=True)
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or [f"exit code {result.returncode}"])[-1]
        raise CompareError(f"{model.checkpoint}: {model.package} evaluation failed: {last}")
    model.evaluation = output


def training_summary(run: Path) -> dict[str, float | None]:
    """Epochs, training wall time (s) and median molecules/s from a run's metrics.jsonl."""
    path = run / "metrics.jsonl"
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
    train = [record for record in records if record.get("split") == "train"]
    seconds = [record["train_seconds"] for record in train if "train_seconds" in record]
    speeds = [record["molecules_per_s"] for record in train if "molecules_per_s" in record]
    return {
        "epochs": len(train),
        "train_seconds": sum(seconds) if seconds and len(seconds) == len(train) else None,
        "molecules_per_s": statistics.median(speeds) if speeds else None,
    }


def fmt(value: float | None, digits: int) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def headline_rows(bond: Model, pairwise: Model) -> list[tuple[str, str, str]]:
    """(metric, bond, pairwise) rows of the headline table."""
    reports = {"bond": bond.report, "pairwise": pairwise.report}
    runs = {"bond": training_summary(bond.run), "pairwise": training_summary(pairwise.run)}

    def row(label: str, get, digits: int) -> tuple[str, str, str]:
        values = []
        for name in ("bond", "pairwise"):
            try:
                values.append(fmt(get(reports[name], runs[name]), digits))
            except KeyError:
                values.append("n/a")
        return (label, *values)

    rows = [
        row("reconstruction Kabsch RMSD, proper rotation (A)", lambda r, _: r["reconstruction"]["kabsch_rmsd"], 3),
        row(
            "reconstruction Kabsch RMSD, reflection allowed (A)",
            lambda r, _: r["reconstruction"]["kabsch_rmsd_reflection_allowed"],
            3,
        ),
        row("reconstruction bond-length MAE (A)", lambda r, _: r["reconstruction"]["bond_mae"], 4),
        row("reconstruction all-pairs distance MAE (A)", lambda r, _: r["reconstruction"]["distance_mae"], 3),
        row(
            "samples: phi/psi Jensen-Shannon distance, mean over residues",
            lambda r, _: r["samples"]["ramachandran_js_distance"]["mean"],
            3,
        ),
    ]
    for side in ("right", "left", "mixed"):
        rows.append(
            row(f"samples: {side}-handed helices (fraction)", lambda r, _, s=side: r["handedness"]["samples"][s], 3)
        )
    rows += [
        row("samples: frames with a clash (fraction)", lambda r, _: r["samples"]["clash_fraction"]["samples"], 3),
        row("samples: radius of gyration, mean (A)", lambda r, _: r["samples"]["radius_of_gyration"]["sample_mean"], 2),
        row(
            "samples: bonds within 0.1 A of the reference mean",
            lambda r, _: r["samples"]["bonds_within_0.1_of_reference_mean"],
            3,
        ),
        row("latent: active units", lambda r, _: r["latent"]["active_units"], 0),
        row("latent: KL per molecule (nats)", lambda r, _: r["latent"]["kl_total"], 2),
        row("training: epochs", lambda _, t: t["epochs"], 0),
        row("training: time of the training steps (s)", lambda _, t: t["train_seconds"], 1),
        row("training: molecules/s (median over epochs)", lambda _, t: t["molecules_per_s"], 1),
    ]
    return rows


def reference_row(report: dict) -> str:
    handedness = report.get("handedness", {}).get("reference")
    samples = report["samples"]
    parts = [
        f"clash fraction {samples['clash_fraction']['reference']:.3f}",
        f"radius of gyration {samples['radius_of_gyration']['reference_mean']:.2f} A",
    ]
    if handedness:
        parts.insert(0, f"right / left / mixed helices {handedness['right']:.3f} / {handedness['left']:.3f} / "
                        f"{handedness['mixed']:.3f}")  # fmt: skip
    return "; ".join(parts)


def free_energy_figure(ensembles: dict[str, dict[str, np.ndarray]], path: Path) -> Path | None:
    """-ln p over (mean inner phi, Rg) for each ensemble, same bins and one colour scale."""
    if not all("phi" in arrays for arrays in ensembles.values()):
        return None
    x = {name: arrays["phi"].mean(axis=1) for name, arrays in ensembles.items()}
    y = {name: arrays["rg"] for name, arrays in ensembles.items()}
    all_y = np.concatenate(list(y.values()))
    x_edges = np.linspace(-180, 180, FREE_ENERGY_BINS + 1)
    y_edges = np.linspace(all_y.min() - 1e-6, all_y.max() + 1e-6, FREE_ENERGY_BINS + 1)
    energies = {}
    for name in ensembles:
        counts, _, _ = np.histogram2d(x[name], y[name], bins=(x_edges, y_edges))
        with np.errstate(divide="ignore"):
            energies[name] = -np.log(counts / counts.sum())
    finite = np.concatenate([e[np.isfinite(e)] for e in energies.values()])
    low, high = finite.min(), finite.max()
    figure, axes = plt.subplots(
        1, len(ensembles), figsize=(4.0 * len(ensembles), 3.6), sharey=True, layout="constrained"
    )
    for axis, (name, energy) in zip(axes, energies.items(), strict=True):
        image = axis.pcolormesh(x_edges, y_edges, (energy - low).T, vmin=0, vmax=high - low, cmap="viridis_r")
        axis.set(title=name, xlabel="mean phi of inner residues (degrees)")
    axes[0].set_ylabel("radius of gyration (Angstrom)")
    figure.colorbar(image, ax=list(axes), label="-ln p (kT), zero at the lowest bin of all")
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def ramachandran_figure(ensembles: dict[str, dict[str, np.ndarray]], path: Path) -> Path | None:
    """phi/psi density of all inner residues per ensemble, in a row, one colour scale."""
    if not all("phi" in arrays for arrays in ensembles.values()):
        return None
    edges = np.linspace(-180, 180, RAMACHANDRAN_BINS + 1)
    densities = {
        name: np.histogram2d(arrays["phi"].ravel(), arrays["psi"].ravel(), bins=(edges, edges), density=True)[0]
        for name, arrays in ensembles.items()
    }
    vmax = max(density.max() for density in densities.values())
    figure, axes = plt.subplots(
        1, len(ensembles), figsize=(3.8 * len(ensembles), 3.6), sharey=True, layout="constrained"
    )
    for axis, (name, density) in zip(axes, densities.items(), strict=True):
        image = axis.pcolormesh(edges, edges, density.T, vmin=0, vmax=vmax, cmap="Blues")
        axis.set(title=name, xlabel="phi (degrees)", aspect="equal")
    axes[0].set_ylabel("psi (degrees)")
    figure.colorbar(image, ax=list(axes), label="density (1/degree^2)")
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def ensemble(arrays: dict[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    """The arrays of one ensemble of projections.npz, without their prefix ('samples_rg' -> 'rg')."""
    return {key.removeprefix(prefix): value for key, value in arrays.items() if key.startswith(prefix)}


def write_comparison(bond: Model, pairwise: Model, folder: Path) -> Path:
    """comparison.md and its two figures in ``folder``."""
    ensembles = {
        "reference": ensemble(bond.projections, "reference_"),
        "bond_vae samples": ensemble(bond.projections, "samples_"),
        "pairwise_vae samples": ensemble(pairwise.projections, "samples_"),
    }
    figures = [
        free_energy_figure(ensembles, folder / "free_energy.png"),
        ramachandran_figure(ensembles, folder / "ramachandran.png"),
    ]
    bond_report, pairwise_report = bond.report, pairwise.report
    lines = [
        "# bond_vae vs pairwise_vae",
        "",
        f"* bond_vae: `{bond.checkpoint}` ({bond_report['package']})",
        f"* pairwise_vae: `{pairwise.checkpoint}` ({pairwise_report['package']})",
        f"* reference: {bond_report['reference']['description']}, {bond_report['reference']['frames']} frames "
        f"(pairwise evaluated on {pairwise_report['reference']['frames']} frames of "
        f"{pairwise_report['reference']['description']}); {bond_report['samples']['count']} / "
        f"{pairwise_report['samples']['count']} prior samples",
        f"* reference ensemble: {reference_row(bond_report)}",
        "",
        "| metric | bond_vae | pairwise_vae |",
        "|---|---|---|",
        *[f"| {label} | {b} | {p} |" for label, b, p in headline_rows(bond, pairwise)],
        "",
        "Each evaluation's own report: [bond_vae](bond_vae/report.md), [pairwise_vae](pairwise_vae/report.md).",
        "",
        *[f"![{figure.stem}]({figure.name})" for figure in figures if figure is not None],
    ]
    path = folder / "comparison.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bond", type=Path, help="bond_vae run folder or checkpoint (default: latest under RUNS)")
    parser.add_argument("--pairwise", type=Path, help="pairwise_vae run folder or checkpoint (default: latest)")
    parser.add_argument("--runs", type=Path, default=Path("runs"), help="where the latest runs are looked for")
    parser.add_argument("--output", type=Path, help="new folder for the comparison (default: RUNS/comparison-<time>)")
    parser.add_argument("--data", type=Path, help="reference conformations for both (default: the bond run's split)")
    parser.add_argument("--topology", type=Path, help="topology of --data (.npy coordinates or a trajectory)")
    parser.add_argument("--select", help="atoms of a --data trajectory (MDTraj selection)")
    parser.add_argument("--stride", type=int, help="read every N-th frame of --data")
    parser.add_argument("--num-samples", type=int, default=2000, help="prior samples per model")
    parser.add_argument("--max-frames", type=int, default=2000, help="reference frames used, evenly spaced")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--no-compile", action="store_true", help="decode eagerly (no torch.compile)")
    return parser.parse_args(argv)


def compare(arguments: argparse.Namespace) -> Path:
    """Evaluate both models on one reference and write the comparison; returns comparison.md."""
    bond = find_checkpoint(arguments.bond, "bond_vae", arguments.runs)
    pairwise = find_checkpoint(arguments.pairwise, "pairwise_vae", arguments.runs)
    folder = arguments.output or arguments.runs / f"comparison-{time.strftime('%Y%m%d-%H%M%S')}"
    if folder.exists():
        raise CompareError(f"{folder}: already exists; choose another --output (nothing was overwritten)")
    folder.mkdir(parents=True)
    options = ["--num-samples", str(arguments.num_samples), "--max-frames", str(arguments.max_frames)]
    options += ["--device", arguments.device] + (["--no-compile"] if arguments.no_compile else [])
    reference: list[str] = []
    for flag in ("data", "topology", "select", "stride"):
        if getattr(arguments, flag) is not None:
            reference += [f"--{flag}", str(getattr(arguments, flag))]
    evaluate(bond, folder / "bond_vae", reference, options)
    if arguments.data is None:  # the very frames the bond model was judged on
        reference = ["--data", str(folder / "bond_vae" / "reference.npz")]
    evaluate(pairwise, folder / "pairwise_vae", reference, options)
    return write_comparison(bond, pairwise, folder)


def main(argv: list[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    try:
        path = compare(arguments)
    except CompareError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"wrote {path} (and free_energy.png, ramachandran.png)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
