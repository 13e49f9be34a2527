"""``report.md``: the headline numbers of an evaluation report (:mod:`pairwise_vae.evaluation.report`) for people.

With ``--relax`` every sample table has a column for the relaxed samples beside the model's own;
the quality bar's criteria that relaxation meets by construction show the raw samples' value in
that column, marked with ``*``.
"""

from __future__ import annotations

from pairwise_vae.evaluation.ensembles import ENSEMBLE_METRICS

RAW_MARK = "*"  # a relaxed-column value judged on the raw samples (relaxation meets the criterion by construction)


def number(value: float | None, digits: int) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def met_text(met: bool | None) -> str:
    return {True: "yes", False: "**no**", None: "n/a"}[met]


def relaxation_sentence(report: dict) -> str:
    """What ``--relax`` did, for report.md; empty when it was off."""
    if not report.get("relaxed"):
        return ""
    return (
        " Samples relaxed (--relax: bonds to their training means, no atoms 4 or more bonds apart closer than the "
        "steric distance) are "
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


def sample_lines(report: dict) -> list[str]:
    """Sample-vs-reference metrics, helix handedness and bond lengths by type (relaxed column with --relax)."""
    samples, floor = report["samples"], report["reference_floor"]
    relaxed = report.get("relaxed_samples")
    clashes = samples["clash_fraction"]
    relaxed_header = " relaxed samples |" if relaxed is not None else ""
    lines = [
        "## Prior samples",
        "",
        "Reference floor: the same metric between two halves of the reference, what a perfect model "
        "would score with this many frames: "
        + (floor["method"] if floor is not None else "none (a single reference frame)")
        + f". A clash is two atoms >= {clashes['min_bonds_apart']} bonds apart closer than "
        f"{clashes['threshold_angstrom']} A.",
        "",
        f"| metric | samples |{relaxed_header} reference floor |",
        "|---|---|" + ("---|" if relaxed is not None else "") + "---|",
    ]
    for key, values in report["ensemble_metrics"].items():
        relaxed_value = f" {number(values['relaxed_samples'], 4)} |" if relaxed is not None else ""
        lines.append(
            f"| {ENSEMBLE_METRICS[key]} | {values['samples']:.4f} |{relaxed_value} "
            f"{number(values['reference_floor'], 4)} |"
        )
    if "handedness" in report:
        lines += ["", "## Helix handedness (fraction of frames)", "", "| ensemble | right | left | mixed |"]
        lines.append("|---|---|---|---|")
        for name, fractions in report["handedness"].items():
            lines.append(
                f"| {name.replace('_', ' ')} | {fractions['right']:.3f} | {fractions['left']:.3f} "
                f"| {fractions['mixed']:.3f} |"
            )
    floor_by_type = floor["samples"]["bond_length_by_type"] if floor is not None else {}
    relaxed_columns = " relaxed samples | mean abs deviation |" if relaxed is not None else ""
    lines += [
        "",
        "## Bond lengths by type (A)",
        "",
        f"| type | reference | samples | mean abs deviation |{relaxed_columns} reference floor |",
        "|---|---|---|---|" + ("---|---|" if relaxed is not None else "") + "---|",
    ]
    for label, values in samples["bond_length_by_type"].items():
        floor_value = number(floor_by_type[label]["mean_abs_deviation"], 4) if label in floor_by_type else "n/a"
        relaxed_values = ""
        if relaxed is not None:
            other = relaxed["bond_length_by_type"][label]
            relaxed_values = f" {other['sample_mean']:.3f} | {other['mean_abs_deviation']:.4f} |"
        lines.append(
            f"| {label} | {values['reference_mean']:.3f} | {values['sample_mean']:.3f} "
            f"| {values['mean_abs_deviation']:.4f} |{relaxed_values} {floor_value} |"
        )
    return lines


def markdown_report(report: dict) -> str:
    """A readable summary of the report's headline numbers."""
    samples, latent = report["samples"], report["latent"]
    lines = [
        f"# Evaluation of {report['checkpoint']}",
        "",
        f"Reference: {report['reference']['description']}, {report['reference']['frames']} frames; "
        f"{samples['count']} prior samples, latents drawn from {report['prior']}.",
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
        f"Latent space: {latent['active_units']} of {latent['latent_dim']} dimensions active; "
        f"KL {latent['kl_total']:.2f} nats per molecule.",
        "",
        *(f"![{name}]({name})" for name in report["figures"]),
    ]
    return "\n".join(lines) + "\n"
