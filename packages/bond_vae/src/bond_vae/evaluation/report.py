"""The evaluation report of a checkpoint: :func:`write_report` (for ``bond-vae-evaluate`` and the end of training).

Writes a folder with ``report.json``, ``report.md``, PNG figures, the reference frames
(``reference.npz``, in the dataset format) and the per-frame numbers behind the figures
(``projections.npz``: radius of gyration, inner-residue phi/psi of reference and samples):

* reconstruction of the reference frames from their posterior means: Kabsch RMSD with a
  proper rotation, and with reflection allowed (a large gap means the mirror image was
  rebuilt), bond-length and all-pairs distance errors;
* prior samples drawn through the model's sampler (:mod:`bond_vae.sampling.sampler`; by default
  the stored mixture prior and torsion noise) against the reference: bond lengths and angles
  per element type, bonds within 0.1 Angstrom of the reference mean, clashes, per-residue
  phi/psi Jensen-Shannon distances, helix handedness, radius of gyration, and a free-energy map;
* with ``--relax``, the same samples relaxed (:mod:`bond_vae.sampling.relaxation`) beside them,
  for every sample criterion (reconstructions are not relaxed);
* matched floors, two-sample tests and novelty (:mod:`bond_vae.evaluation.scoring`): each
  sample-vs-reference number beside the same number for MD frames the model did not train on, at
  the same sizes; classifier two-sample AUCs on backbone torsions and on local geometry; each
  sample's RMSD to its nearest training frame against each reference frame's;
* the quality bar (``quality_bar.py``): each criterion met or not, and a one-line summary
  counting the model's own (raw) samples; with ``--relax`` also judged on the relaxed samples,
  where the criteria relaxation meets by construction stay judged on the raw ones (marked);
* for a chiral molecule (parity rule ``chiral``), the fraction of frames that keep each
  stereocentre's training configuration (:mod:`bond_vae.evaluation.stereocentres`);
* latent space: KL per dimension and active units.

Reconstructions and prior samples are oriented by the checkpoint's parity rule
(:mod:`bond_vae.model.parity`), as ``sample`` and the training-time metrics orient them. The
reference (:mod:`bond_vae.evaluation.references`) defaults to the independent AIB9 test
trajectories for a model of the embedded data, and to the test frames its run held out otherwise.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from bond_vae import __version__
from bond_vae.config import ConfigError
from bond_vae.data.records import DataError
from bond_vae.data.structure_files import write_conformations_npz
from bond_vae.evaluation.ensembles import compare_ensembles, projections, sample_agreement, write_figures
from bond_vae.evaluation.markdown import markdown_report
from bond_vae.evaluation.metrics import latent_statistics
from bond_vae.evaluation.quality_bar import bar_report, judge, judge_relaxed
from bond_vae.evaluation.references import Reference, evaluation_frames
from bond_vae.evaluation.scoring import matched_scores
from bond_vae.evaluation.stereocentres import stereocentre_report
from bond_vae.model.parity import orient_reconstructions, orient_samples
from bond_vae.runtime import PRECISION_HELP, PRECISIONS, uses_bf16
from bond_vae.sampling.inference import decode_in_batches, encode_in_batches, load_for_inference
from bond_vae.sampling.sampler import SamplerOptions, draw_samples, load_sampler


@dataclass
class ReportSettings:
    """Evaluation"""

    num_samples: int = field(default=2000, metadata={"help": "conformations drawn from the model's sampler"})
    max_frames: int = field(default=2000, metadata={"help": "reference frames used, evenly spaced"})
    batch_size: int = field(default=512, metadata={"help": "conformations encoded, decoded or relaxed at once"})
    sampler: SamplerOptions = field(default_factory=SamplerOptions, metadata={"prefix": ""})
    seed: int = field(
        default=0, metadata={"help": "seed of the prior draws, the torsion noise and mirror-symmetric reflections"}
    )
    device: str = field(default="auto", metadata={"help": "auto, cpu, cuda or cuda:N"})
    precision: str = field(default="auto", metadata={"help": PRECISION_HELP, "choices": PRECISIONS})
    compile: bool = field(
        default=True, metadata={"help": "torch.compile the decoder when more than one batch is decoded"}
    )

    def check(self) -> None:
        """Refuse counts below 1 and sampler settings no sampler can use (one line naming the flag)."""
        for name in ("num_samples", "max_frames", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be at least 1")
        self.sampler.check()


def write_report(
    checkpoint_path: Path,
    settings: ReportSettings,
    output: Path,
    reference: Reference | None = None,
    exist_ok: bool = False,
) -> dict:
    """Evaluate a checkpoint's model on ``reference`` (None: the default of
    :func:`bond_vae.evaluation.references.evaluation_frames`), write the report folder ``output``
    (which must not exist unless ``exist_ok``) and return the report (as in its ``report.json``).

    Raises:
        ConfigError, DataError, CheckpointError: bad settings, data or checkpoint (one line each).
    """
    settings.check()
    checkpoint, model, topology, device = load_for_inference(checkpoint_path, settings.device)
    if reference is not None and not np.array_equal(reference.atomic_numbers, topology.atomic_numbers):
        raise DataError(f"{reference.source}: its atoms differ from the checkpoint's molecule")
    judged_on = evaluation_frames(checkpoint, checkpoint_path, reference, settings.max_frames)
    frames = judged_on.reference
    bf16 = uses_bf16(settings.precision, device)
    options = settings.sampler
    sampler = load_sampler(checkpoint, checkpoint_path, model, options, settings.batch_size, settings.compile, bf16)
    mu, log_var = encode_in_batches(model, frames, settings.batch_size, device, bf16)
    decoded = decode_in_batches(model, torch.from_numpy(mu).to(device), settings.batch_size, settings.compile, bf16)
    reconstructed = orient_reconstructions(
        torch.from_numpy(decoded), torch.from_numpy(frames), model.parity, model.bonds
    ).numpy()
    generator = torch.Generator(device=device).manual_seed(settings.seed)
    draws = draw_samples(
        model, sampler, options, settings.num_samples, generator, settings.batch_size, settings.compile, bf16
    )

    reference_64 = frames.astype(np.float64)
    report = compare_ensembles(
        reference_64, reconstructed.astype(np.float64), draws.samples.astype(np.float64), topology
    )
    relaxed = None if draws.relaxed is None else draws.relaxed.astype(np.float64)
    if relaxed is not None:
        agreement = sample_agreement(relaxed, reference_64, topology)
        report["relaxed_samples"] = agreement["samples"]
        if "handedness" in agreement:
            report["handedness"]["relaxed_samples"] = agreement["handedness"]["samples"]
    report.update(matched_scores(draws.samples.astype(np.float64), relaxed, judged_on, topology))
    ensembles = {"reference": frames, "reconstructions": reconstructed, "samples": draws.samples}
    unplaced = None
    if model.decoder.centres is not None:  # the decoder's stereocentre layer: how often it acts
        raw = decode_in_batches(model, draws.latents, settings.batch_size, settings.compile, bf16, False)
        unplaced = orient_samples(torch.from_numpy(raw), model.parity).numpy()
    stereocentres = stereocentre_report(
        model.parity,
        topology,
        {**ensembles, "relaxed_samples": draws.relaxed, "samples_before_placement": unplaced},
    )
    if stereocentres is not None:
        report["stereocentres"] = stereocentres
    report["quality_bar"] = bar_report(judge(report))
    if draws.relaxed is not None:
        report["quality_bar_relaxed"] = bar_report(judge_relaxed(report))
    report["latent"] = latent_statistics(mu, log_var)
    output.mkdir(parents=True, exist_ok=exist_ok)
    figures = write_figures(frames, reconstructed, draws.samples, topology, output)
    report.update(
        checkpoint=str(checkpoint_path),
        package=f"bond_vae {__version__}",
        reference={"description": judged_on.description, "frames": len(frames), "relation": judged_on.relation},
        sampler="none (the raw decoder)" if sampler is None else sampler.origin,
        prior=draws.prior,
        parity=model.parity.summary(),
        precision="bf16" if bf16 else "fp32",
        torsion_noise=draws.torsion_noise,
        relaxed=options.relax,
        relax_bond_tolerance=options.relax_bond_tolerance if options.relax else None,
        figures=[path.name for path in figures],
    )
    (output / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    # the reference frames (so that another model can be evaluated on the very same frames: --data) and the
    # per-frame numbers of the figures (scripts/compare_runs.py plots two models' side by side)
    write_conformations_npz(output / "reference.npz", frames, topology, {"description": judged_on.description})
    arrays = projections(frames, draws.samples, topology)
    if draws.relaxed is not None:
        relaxed = projections(frames, draws.relaxed, topology)
        arrays.update({f"relaxed_{key}": value for key, value in relaxed.items() if key.startswith("samples_")})
    np.savez(output / "projections.npz", **arrays)
    (output / "report.md").write_text(markdown_report(report))
    return report
