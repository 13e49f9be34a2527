"""``report.md``: the headline numbers of an evaluation report (:mod:`bond_vae.evaluation.report`) for people.

With ``--relax`` every sample table has a column for the relaxed samples beside the model's own;
the quality bar's criteria that relaxation meets by construction show the raw samples' value in
that column, marked with ``*``.
"""

from __future__ import annotations

from bond_vae.evaluation.ensembles import ENSEMBLE_METRICS
from bond_vae.evaluation.two_sample import TWO_SAMPLE_FEATURES

RAW_MARK = "*"  # a relaxed-column value judged on the raw samples (relaxation meets the criterion by construction)
ROW_NAMES = {"samples_before_placement": "samples before the stereocentre layer"}


def number(value: float | None, digits: int) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def met_text(met: bool | None) -> str:
    return {True: "yes", False: "**no**", None: "n/a"}[met]


def relaxation_sentence(report: dict) -> str:
    """What ``--relax`` did, for report.md; empty when it was off."""
    if not report.get("relaxed"):
        return ""
    tolerance = report.get("relax_bond_tolerance") or 0.0
    bonds = (
        f"bonds beyond {tolerance:g} standard deviations of their training means pulled back"
        if tolerance > 0
        else "bonds to their training means"
    )
    return (
        f" Samples relaxed (--relax: {bonds}, no atoms 4 or more bonds apart closer than the steric distance) are "
        "shown beside the model's own samples; reconstructions are not relaxed, and the quality bar's headline "
        "counts the model's own samples."
    )


def quality_bar_lines(report: dict) -> list[str]:
    """The quality bar table: one value column, or the samples' and the relaxed samples' side by side."""
    criteria = report["quality_bar"]["criteria"]
    relaxed_bar = report.get("quality_bar_relaxed")
    if relaxed_bar is None:
        lines = ["| criterion | value | bar | met |", "|---|---|---|---|"]
        for criterion in criteria.values():
            lines.append(
                f"| {criterion['criterion']} | {number(criterion['value'], 3)} | {criterion['bar']} "
                f"| {met_text(criterion['met'])} |"
            )
        return [*lines, "", report["quality_bar"]["summary"]]
    lines = ["| criterion | bar | samples | met | relaxed samples | met |", "|---|---|---|---|---|---|"]
    for key, criterion in criteria.items():
        relaxed = relaxed_bar["criteria"][key]
        mark = RAW_MARK if relaxed.get("judged_on_raw_samples") else ""
        lines.append(
            f"| {criterion['criterion']} | {criterion['bar']} | {number(criterion['value'], 3)} "
            f"| {met_text(criterion['met'])} | {number(relaxed['value'], 3)}{mark} | {met_text(relaxed['met'])} |"
        )
    return [
        *lines,
        "",
        f"{RAW_MARK} judged on the model's own samples: relaxation meets this criterion by construction.",
        "",
        f"Model's own samples (the headline): {report['quality_bar']['summary']}",
        "",
        f"Relaxed samples: {relaxed_bar['summary']}",
    ]


def reconstruction_lines(reconstruction: dict) -> list[str]:
    lines = [
        "## Reconstruction (from posterior means)",
        "",
        "| metric | value |",
        "|---|---|",
        f"| Kabsch RMSD, proper rotation (A) | {reconstruction['kabsch_rmsd']:.3f} |",
        f"| same, median over frames (A) | {reconstruction['kabsch_rmsd_median']:.3f} |",
    ]
    by_class = reconstruction.get("kabsch_rmsd_by_reference_class")
    if by_class is not None:
        values = " / ".join(number(value, 3) for value in by_class.values())
        lines.append(f"| same, mean over reference frames that are {' / '.join(by_class)} helices (A) | {values} |")
    return [
        *lines,
        f"| Kabsch RMSD, reflection allowed (A) | {reconstruction['kabsch_rmsd_reflection_allowed']:.3f} |",
        f"| bond-length MAE (A) | {reconstruction['bond_mae']:.4f} |",
        f"| all-pairs distance MAE (A) | {reconstruction['distance_mae']:.3f} |",
    ]


def floor_sentence(matched: dict) -> str:
    """How the floors were computed, for report.md."""
    if matched["floor_draws"] == 0:
        return f"No floor: {matched['pool']}."
    draws = f", mean of {matched['floor_draws']} draws" if matched["floor_draws"] > 1 else ""
    return (
        f"Each number compares {matched['n_samples']} samples with the {matched['n_reference']} reference frames; "
        f"its floor is the same number for {matched['n_samples']} MD frames the model did not train on "
        f"({matched['pool']}) against the same reference{draws}: what more MD from the same engine scores."
    )


def table_row(name: str, row: dict, with_relaxed: bool, digits: int) -> str:
    relaxed = f" {number(row['relaxed_samples'], digits)} |" if with_relaxed else ""
    return f"| {name} | {number(row['samples'], digits)} |{relaxed} {number(row['floor'], digits)} |"


def table_header(first: str, with_relaxed: bool) -> list[str]:
    relaxed = " relaxed samples |" if with_relaxed else ""
    return [f"| {first} | samples |{relaxed} floor |", "|---|---|" + ("---|" if with_relaxed else "") + "---|"]


def sample_lines(report: dict) -> list[str]:
    """Sample-vs-reference metrics beside their floors, helix handedness and bond lengths by type (a relaxed
    column with --relax)."""
    samples = report["samples"]
    relaxed = report.get("relaxed_samples")
    with_relaxed = relaxed is not None
    clashes = samples["clash_fraction"]
    lines = [
        "## Prior samples",
        "",
        floor_sentence(report["matched"])
        + f" A clash is two atoms >= {clashes['min_bonds_apart']} bonds apart closer than "
        f"{clashes['threshold_angstrom']} A.",
        "",
        *table_header("metric", with_relaxed),
    ]
    lines += [table_row(ENSEMBLE_METRICS[key], row, with_relaxed, 4) for key, row in report["ensemble_metrics"].items()]
    if "handedness" in report:
        lines += ["", "## Helix handedness (fraction of frames)", "", "| ensemble | right | left | mixed |"]
        lines.append("|---|---|---|---|")
        for name, fractions in report["handedness"].items():
            lines.append(
                f"| {name.replace('_', ' ')} | {fractions['right']:.3f} | {fractions['left']:.3f} "
                f"| {fractions['mixed']:.3f} |"
            )
    relaxed_columns = " relaxed samples | mean abs deviation |" if with_relaxed else ""
    lines += [
        "",
        f"## Bond lengths by type (A), all {samples['count']} samples",
        "",
        f"| type | reference | samples | mean abs deviation |{relaxed_columns}",
        "|---|---|---|---|" + ("---|---|" if with_relaxed else ""),
    ]
    for label, values in samples["bond_length_by_type"].items():
        relaxed_values = ""
        if with_relaxed:
            other = relaxed["bond_length_by_type"][label]
            relaxed_values = f" {other['sample_mean']:.3f} | {other['mean_abs_deviation']:.4f} |"
        lines.append(
            f"| {label} | {values['reference_mean']:.3f} | {values['sample_mean']:.3f} "
            f"| {values['mean_abs_deviation']:.4f} |{relaxed_values}"
        )
    return lines


def stereocentre_lines(report: dict) -> list[str]:
    """A chiral molecule's stereocentres per ensemble: frames that keep every one, inverted centres per frame and
    the least-kept centre; nothing for other molecules."""
    found = report.get("stereocentres")
    if found is None:
        return []
    names = found["centres"]
    lines = [
        "## Stereocentres",
        "",
        f"{len(names)} stereocentres ({', '.join(names)}) in the training configuration or inverted. The parity "
        "rule picks one hand for a whole sample; centres that disagree within a sample stay as the model made them. "
        "A decoder with a stereocentre layer places every centre in the hand of the others; the samples before that "
        "layer (same latents) show how often it acts.",
        "",
        "| ensemble | frames with every centre kept | inverted centres per frame | least-kept centre |",
        "|---|---|---|---|",
    ]
    for name in ("reference", "reconstructions", "samples", "relaxed_samples", "samples_before_placement"):
        if name in found:
            row = found[name]
            least = min(range(len(names)), key=lambda k: row["per_centre"][k])
            label = ROW_NAMES.get(name, name.replace("_", " "))
            lines.append(
                f"| {label} | {row['all_kept']:.3f} | {row['inverted_per_frame']:.3f} "
                f"| {names[least]} ({row['per_centre'][least]:.3f}) |"
            )
    return [*lines, ""]


def two_sample_lines(report: dict) -> list[str]:
    """The classifier two-sample tests: ROC AUC of samples against the reference, beside the floor."""
    with_relaxed = report.get("relaxed_samples") is not None
    rows = {name: row for name, row in report["two_sample"].items() if row is not None}
    if not rows:
        return []
    first = next(iter(rows.values()))
    lines = [
        "## Two-sample tests (ROC AUC; 0.5: indistinguishable, 1: every frame told apart)",
        "",
        f"A {first['classifier'].replace('_', '-')} classifier, {first['folds']}-fold cross-validated on "
        f"{first['per_class']} frames of each set, tells samples from reference frames by their "
        "features; the floor tells unseen MD from the reference the same way.",
        "",
        *table_header("features", with_relaxed),
    ]
    return lines + [table_row(TWO_SAMPLE_FEATURES[name], row, with_relaxed, 3) for name, row in rows.items()]


def novelty_lines(report: dict) -> list[str]:
    """Nearest-training-frame RMSDs of samples and reference frames, and the data-copying statistic."""
    found = report.get("novelty")
    if found is None:
        return ["## Novelty", "", "Not computed: the training data cannot be read."]
    first = found["samples"]
    lines = [
        "## Novelty: RMSD to the nearest training frame (A, reflection allowed)",
        "",
        f"Against {first['n_training']} training frames. Copying Z (Meehan et al. 2020, Mann-Whitney of the "
        "samples' against the reference frames' distances): below -3, samples sit closer to training than "
        "independent MD does (replayed frames); far above 0, farther from it.",
        "",
        "| ensemble | median | 5th percentile | copying Z |",
        "|---|---|---|---|",
        f"| reference frames | {first['test_nearest_training_rmsd_median']:.3f} "
        f"| {first['test_nearest_training_rmsd_p5']:.3f} | |",
    ]
    for name, result in found.items():
        lines.append(
            f"| {name.replace('_', ' ')} | {result['sample_nearest_training_rmsd_median']:.3f} "
            f"| {result['sample_nearest_training_rmsd_p5']:.3f} | {result['copying_z']:.1f} |"
        )
    return lines


def markdown_report(report: dict) -> str:
    """A readable summary of the report's headline numbers."""
    samples, latent = report["samples"], report["latent"]
    lines = [
        f"# Evaluation of {report['checkpoint']}",
        "",
        f"Reference: {report['reference']['description']}, {report['reference']['frames']} frames: "
        f"{report['reference']['relation']}. {samples['count']} prior samples, latents drawn from "
        f"{report['prior']}.",
        "",
        f"Sampler: {report['sampler']}. Orientation of the output: {report['parity']}. "
        f"Computed in {report['precision']}."
        + (f" Samples with {report['torsion_noise']} (--torsion-noise)." if report.get("torsion_noise") else "")
        + relaxation_sentence(report),
        "",
        "## Quality bar",
        "",
        *quality_bar_lines(report),
        "",
        *reconstruction_lines(report["reconstruction"]),
        "",
        *sample_lines(report),
        "",
        *stereocentre_lines(report),
        *two_sample_lines(report),
        "",
        *novelty_lines(report),
        "",
        f"Latent space: {latent['active_units']} of {latent['latent_dim']} dimensions active; "
        f"KL {latent['kl_total']:.2f} nats per molecule.",
        "",
        *(f"![{name}]({name})" for name in report["figures"]),
    ]
    return "\n".join(lines) + "\n"
