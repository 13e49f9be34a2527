"""The quality bar a trained model is judged by (``bond-vae-evaluate``): its thresholds in one
place, and whether an evaluation report meets each criterion.

bond_vae, trained with geometric terms besides the pairwise criteria, is held to two more:
the bond-length error of its reconstructions and a stricter share of sample bonds near the
reference mean.

Criteria read against a floor (the phi/psi Jensen-Shannon distance, the torsion two-sample AUC)
compare the samples with MD frames the model did not train on, scored against the same reference at
the same sizes (:mod:`bond_vae.evaluation.scoring`). The criteria that need backbone phi/psi
angles (helix handedness, phi/psi Jensen-Shannon distance, torsion two-sample AUC) do not apply to
a molecule without them: they are "n/a", neither met nor failed.

With ``--relax`` the bar is also judged on the relaxed samples (:func:`judge_relaxed`), except for
the criteria relaxation meets by construction (``MET_BY_RELAXATION``), which stay judged on the
model's raw samples; the headline counts the raw samples.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from bond_vae.evaluation.ensembles import HANDS

TOLERANCE = 1e-9  # fractions such as 0.35 - 0.30 are not exact in binary
# criteria that --relax meets by construction (it pulls every bond to its training mean and pushes atoms 4 or more
# bonds apart beyond the steric distance): beside the relaxed samples they are judged on the raw ones
MET_BY_RELAXATION = ("bonds_within_0.1", "clash_fraction", "bonds_within_0.1_strict")


@dataclass(frozen=True)
class QualityBar:
    """Thresholds of the bar: Angstrom for lengths, fractions of frames or of bonds otherwise."""

    kabsch_rmsd: float = 0.5  # reconstruction RMSD, proper rotation (det +1): at most
    handedness_difference: float = 0.05  # each of the right / left / mixed fractions: at most this off the reference's
    js_above_floor: float = 0.1  # mean phi/psi JS distance: at most this above its matched floor
    c2st_above_floor: float = 0.1  # ROC AUC of telling samples from the reference by torsions: at most floor + this
    bonds_within_0_1: float = 0.98  # sample bonds within 0.1 A of the reference mean: at least
    clash_excess: float = 0.01  # fraction of sample frames with a clash: at most the reference's plus this
    radius_of_gyration_difference: float = 0.2  # mean radius of gyration: at most this off the reference's
    bond_mae: float = 0.02  # bond_vae: reconstruction bond-length MAE: at most
    strict_bonds_within_0_1: float = 0.99  # bond_vae: sample bonds within 0.1 A of the reference mean: at least
    # a chiral molecule: fraction of sample frames with every stereocentre in the training configuration, at least
    # the reference's minus this
    stereo_deficit: float = 0.01


QUALITY_BAR = QualityBar()


@dataclass(frozen=True)
class Criterion:
    """One criterion: ``value`` against ``bar`` (in words); ``value`` and ``met`` are None when n/a;
    ``judged_on_raw``: judged on the raw samples in place of relaxed ones (see :func:`judge_relaxed`)."""

    key: str
    name: str
    value: float | None
    bar: str
    met: bool | None
    judged_on_raw: bool = False


def at_most(key: str, name: str, value: float, limit: float, note: str = "") -> Criterion:
    """Met when ``value`` <= ``limit``."""
    return Criterion(key, name, value, f"<= {limit:.3f}{note}", value <= limit + TOLERANCE)


def at_least(key: str, name: str, value: float, limit: float, note: str = "") -> Criterion:
    """Met when ``value`` >= ``limit``."""
    return Criterion(key, name, value, f">= {limit:.3f}{note}", value >= limit - TOLERANCE)


def above_floor(key: str, name: str, row: dict, margin: float) -> Criterion:
    """Met when the samples' value is at most ``margin`` above its floor; n/a without a value or a floor."""
    if row is None:
        return Criterion(key, name, None, "not computed (a single reference frame or sample)", None)
    if row["floor"] is None:
        return Criterion(key, name, None, "no floor (fewer than two reference frames)", None)
    return at_most(key, name, row["samples"], row["floor"] + margin, f" (matched floor {row['floor']:.3f} + {margin})")


def judge(report: dict, bar: QualityBar = QUALITY_BAR) -> list[Criterion]:
    """Each criterion of ``bar`` on an evaluation report (with ``ensemble_metrics``, see
    ``scoring.matched_scores``), in a fixed order; the stereocentre criterion only for a chiral molecule
    (a report with ``stereocentres``), on the samples before the decoder's stereocentre layer where it has one
    (the layer meets the criterion by construction)."""
    samples, metrics = report["samples"], report["ensemble_metrics"]
    clashes, gyration = samples["clash_fraction"], samples["radius_of_gyration"]
    criteria = [
        at_most(
            "kabsch_rmsd",
            "reconstruction Kabsch RMSD, proper rotation (A)",
            report["reconstruction"]["kabsch_rmsd"],
            bar.kabsch_rmsd,
        )
    ]
    handedness_name = "right / left / mixed helix fractions: largest difference from the reference's"
    js_name = "phi/psi Jensen-Shannon distance, mean over residues"
    c2st_name = "ROC AUC of a classifier telling samples from the reference by backbone torsions"
    if "ramachandran_js_distance_mean" in metrics:
        differences = [metrics[f"helix_{hand}_fraction_difference"]["samples"] for hand in HANDS]
        criteria.append(at_most("helix_fractions", handedness_name, max(differences), bar.handedness_difference))
        criteria.append(
            above_floor("ramachandran_js", js_name, metrics["ramachandran_js_distance_mean"], bar.js_above_floor)
        )
        criteria.append(
            above_floor("torsion_c2st", c2st_name, report["two_sample"]["backbone_torsions"], bar.c2st_above_floor)
        )
    else:
        criteria += [
            Criterion(key, name, None, "no backbone phi/psi in this molecule", None)
            for key, name in (
                ("helix_fractions", handedness_name),
                ("ramachandran_js", js_name),
                ("torsion_c2st", c2st_name),
            )
        ]
    criteria += [
        at_least(
            "bonds_within_0.1",
            "sample bonds within 0.1 A of the reference mean",
            samples["bonds_within_0.1_of_reference_mean"],
            bar.bonds_within_0_1,
        ),
        at_most(
            "clash_fraction",
            "sample frames with a clash",
            clashes["samples"],
            clashes["reference"] + bar.clash_excess,
            f" (reference {clashes['reference']:.3f} + {bar.clash_excess})",
        ),
        at_most(
            "radius_of_gyration",
            "radius of gyration, mean: difference from the reference's (A)",
            abs(gyration["sample_mean"] - gyration["reference_mean"]),
            bar.radius_of_gyration_difference,
            f" (samples {gyration['sample_mean']:.2f}, reference {gyration['reference_mean']:.2f})",
        ),
        at_most(
            "bond_mae",
            "bond_vae: reconstruction bond-length MAE (A)",
            report["reconstruction"]["bond_mae"],
            bar.bond_mae,
        ),
        at_least(
            "bonds_within_0.1_strict",
            "bond_vae: sample bonds within 0.1 A of the reference mean",
            samples["bonds_within_0.1_of_reference_mean"],
            bar.strict_bonds_within_0_1,
        ),
    ]
    stereocentres = report.get("stereocentres")
    if stereocentres is not None:
        reference = stereocentres["reference"]["all_kept"]
        name = "sample frames with every stereocentre in the training configuration"
        judged = stereocentres["samples"]
        before = stereocentres.get("samples_before_placement")
        if before is not None:  # the decoder's stereocentre layer meets it by construction: the EGNN's own samples
            name += f", before the decoder's stereocentre layer (after it: {judged['all_kept']:.3f})"
            judged = before
        criteria.append(
            at_least(
                "stereocentres",
                name,
                judged["all_kept"],
                reference - bar.stereo_deficit,
                f" (reference {reference:.3f} - {bar.stereo_deficit})",
            )
        )
    return criteria


def judge_relaxed(report: dict, bar: QualityBar = QUALITY_BAR) -> list[Criterion]:
    """Each criterion of ``bar`` with the relaxed samples of a report (``relaxed_samples``, and
    ``ensemble_metrics[key]["relaxed_samples"]``) in place of the samples; those of ``MET_BY_RELAXATION`` are
    judged on the raw samples and marked ``judged_on_raw``. Reconstructions are never relaxed."""

    def relaxed_rows(table: dict) -> dict:
        return {
            key: None if row is None else {"samples": row["relaxed_samples"], "floor": row["floor"]}
            for key, row in table.items()
        }

    relaxed_report = {
        **report,
        "samples": report["relaxed_samples"],
        "ensemble_metrics": relaxed_rows(report["ensemble_metrics"]),
        "two_sample": relaxed_rows(report["two_sample"]),
    }
    if "stereocentres" in report:
        relaxed_report["stereocentres"] = {
            **report["stereocentres"],
            "samples": report["stereocentres"]["relaxed_samples"],
        }
    relaxed = judge(relaxed_report, bar)
    raw = {criterion.key: criterion for criterion in judge(report, bar)}
    return [
        replace(raw[criterion.key], judged_on_raw=True) if criterion.key in MET_BY_RELAXATION else criterion
        for criterion in relaxed
    ]


def summary(criteria: list[Criterion]) -> str:
    """One line: ``quality bar: 5 of 6 met (failed: ramachandran_js)``; n/a criteria are not counted."""
    failed = [c.key for c in criteria if c.met is False]
    not_applicable = [c.key for c in criteria if c.met is None]
    notes = []
    if failed:
        notes.append(f"failed: {', '.join(failed)}")
    if not_applicable:
        notes.append(f"n/a: {', '.join(not_applicable)}")
    applicable = len(criteria) - len(not_applicable)
    line = f"quality bar: {applicable - len(failed)} of {applicable} met"
    return f"{line} ({'; '.join(notes)})" if notes else line


def bar_report(criteria: list[Criterion]) -> dict:
    """The ``quality_bar`` entry of report.json: each criterion by key, the counts and the summary line."""
    applicable = [c for c in criteria if c.met is not None]
    return {
        "criteria": {
            c.key: {
                "criterion": c.name,
                "value": c.value,
                "bar": c.bar,
                "met": c.met,
                **({"judged_on_raw_samples": True} if c.judged_on_raw else {}),
            }
            for c in criteria
        },
        "met": sum(c.met is True for c in criteria),
        "applicable": len(applicable),
        "passed": all(c.met for c in applicable),
        "summary": summary(criteria),
    }
