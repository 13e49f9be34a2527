"""Judge a trained model against reference conformations: ``bond-vae-evaluate``.

Draws samples through the model's sampler (by default the mixture prior and torsion noise that
training stored in the checkpoint; ``--prior standard --no-torsion-noise`` judges the raw
decoder; ``--relax`` adds the relaxed samples beside them) and writes the report folder of
:func:`bond_vae.evaluation.report.write_report`: ``report.json``, ``report.md``, PNG figures,
``reference.npz`` and ``projections.npz``. The reference defaults to the independent AIB9 test
trajectories for a model trained on the embedded data, and to the test frames its run held out
otherwise (:mod:`bond_vae.evaluation.references`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from bond_vae.cli import check_inference_request, exit_on_user_error, parse_checkpoint_command
from bond_vae.data.dataset import load_dataset
from bond_vae.evaluation.references import Reference
from bond_vae.evaluation.report import ReportSettings, write_report


@dataclass
class EvaluateConfig:
    """Reference and output"""

    data: list[Path] | None = field(
        default=None,
        metadata={
            "help": "reference conformations (one or more files the loaders accept), best trajectories the model "
            "never saw; none: the AIB9 test trajectories for a model of the embedded data, else the test frames "
            "its run held out (--test-trajectories), else half of its validation split",
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
    report: ReportSettings = field(default_factory=ReportSettings, metadata={"prefix": ""})


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``bond-vae-evaluate``."""
    checkpoint, config = parse_checkpoint_command("bond-vae-evaluate", __doc__, EvaluateConfig, argv)
    with exit_on_user_error():
        check_inference_request(config, [config.output], ())
        config.report.check()
        reference = None
        if config.data is not None:
            dataset = load_dataset(config.data, config.topology, config.select, config.stride)
            source = str(dataset.source)
            reference = Reference(dataset.coords, source, f"{source} (all frames)", dataset.topology.atomic_numbers)
        report = write_report(checkpoint, config.report, config.output, reference)
    print(f"wrote {config.output / 'report.md'} (and report.json, figures)")
    if "quality_bar_relaxed" in report:
        print(f"relaxed samples: {report['quality_bar_relaxed']['summary']}")
    print(report["quality_bar"]["summary"])
