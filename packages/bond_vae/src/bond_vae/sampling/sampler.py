"""The model's sampler: what drawing good conformations needs besides the weights, fitted to the training split.

Decoding N(0, I) draws gives the raw decoder's output. The sampler adds three fits to the
run's training split:

* the latent prior (:mod:`bond_vae.sampling.prior`): a Gaussian mixture on the posterior means;
* the torsion noise (:mod:`bond_vae.sampling.torsion_noise`): the rotatable bonds and the
  covariance of the decoder's torsion errors (none for a molecule without rotatable bonds, or
  a model whose reconstructions all put some torsion in another basin: ``torsion_noise_note``
  says why);
* the relaxation targets (:mod:`bond_vae.sampling.relaxation`): mean bond lengths and their
  standard deviations, the steric pairs and distance.

Training fits it when the run finishes, to each checkpoint's own weights, and stores its
:meth:`Sampler.to_record` under the checkpoint's ``sampler`` key
(:mod:`bond_vae.training.checkpoint`), so ``sample`` and ``evaluate`` need no training data. A
checkpoint without one (written before the sampler was stored, or by a run that did not finish)
is refitted from the training data recorded in it (:func:`load_sampler`).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bond_vae.config import ConfigError
from bond_vae.data.records import DataError
from bond_vae.data.split import subsample
from bond_vae.model.parity import orient_samples
from bond_vae.model.vae import MolecularVAE
from bond_vae.sampling.inference import batch_that_fits, decode_in_batches, encode_in_batches, run_split
from bond_vae.sampling.prior import (
    MIXTURE_COMPONENTS,
    MIXTURE_FIT_FRAMES,
    PRIOR_HELP,
    PRIORS,
    LatentMixture,
    fit_latent_mixture,
)
from bond_vae.sampling.relaxation import (
    RELAX_BOND_TOLERANCE_HELP,
    RELAX_HELP,
    RELAX_ITERATIONS_HELP,
    RelaxationTargets,
    check_bond_tolerance,
    relax,
    relaxation_targets,
)
from bond_vae.sampling.torsion_noise import (
    RESIDUAL_FRAMES,
    TORSION_NOISE_HELP,
    TorsionNoise,
    fit_model_torsion_noise,
)
from bond_vae.training.checkpoint import config_from_checkpoint, sampler_record


@dataclass
class SamplerOptions:
    """Sampler (default: the model's own; --prior standard --no-torsion-noise: the raw decoder)

    The flags of ``sample`` and ``evaluate`` that choose how samples are drawn; the sampler's fits
    themselves come from the checkpoint (:func:`load_sampler`).
    """

    prior: str = field(default="mixture", metadata={"help": PRIOR_HELP, "choices": PRIORS})
    torsion_noise: bool = field(default=True, metadata={"help": TORSION_NOISE_HELP})
    relax: bool = field(default=False, metadata={"help": RELAX_HELP})
    relax_iterations: int = field(default=50, metadata={"help": RELAX_ITERATIONS_HELP})
    relax_bond_tolerance: float = field(default=0.0, metadata={"help": RELAX_BOND_TOLERANCE_HELP})

    def check(self) -> None:
        """Refuse settings no sampler can use (one line naming the flag)."""
        if self.relax_iterations < 1:
            raise ConfigError("--relax-iterations must be at least 1")
        check_bond_tolerance(self.relax_bond_tolerance)

    @property
    def needs_fit(self) -> bool:
        """Whether anything asked for needs the fitted sampler (not so for the raw decoder)."""
        return self.prior == "mixture" or self.torsion_noise or self.relax


@dataclass(frozen=True)
class Sampler:
    """The fitted sampler of one model's weights (see the module docstring); ``origin`` says where it came
    from (stored in the checkpoint or refitted), and is not part of the record."""

    mixture: LatentMixture
    torsion_noise: TorsionNoise | None
    torsion_noise_note: str | None
    relaxation: RelaxationTargets
    origin: str = "fitted when training ended (stored in the checkpoint)"

    def to_record(self) -> dict[str, Any]:
        """Plain tensors, numbers and strings, as the checkpoint stores them."""
        return {
            "mixture": self.mixture.to_record(),
            "torsion_noise": None if self.torsion_noise is None else self.torsion_noise.to_record(),
            "torsion_noise_note": self.torsion_noise_note,
            "relaxation": self.relaxation.to_record(),
        }

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Sampler:
        """Inverse of :meth:`to_record`."""
        noise = record["torsion_noise"]
        return cls(
            LatentMixture.from_record(record["mixture"]),
            None if noise is None else TorsionNoise.from_record(noise),
            record["torsion_noise_note"],
            RelaxationTargets.from_record(record["relaxation"]),
        )


def fit_sampler(
    model: MolecularVAE,
    train_frames: np.ndarray,
    batch_size: int,
    compile_decoder: bool,
    bf16: bool,
    seed: int,
    mixture_frames: int = MIXTURE_FIT_FRAMES,
    residual_frames: int = RESIDUAL_FRAMES,
) -> Sampler:
    """Fit the sampler of ``model``'s current weights to its (F, N, 3) training frames (Angstrom).

    The mixture is fitted to the posterior means of at most ``mixture_frames`` frames (evenly spaced; seeded
    by ``seed``), the torsion noise to the reconstructions of at most ``residual_frames``, the relaxation
    targets to all of them. Encoding and decoding run in batches of ``batch_size`` on the model's device.
    """
    device = next(model.parameters()).device
    posterior_means, _ = encode_in_batches(model, subsample(train_frames, mixture_frames), batch_size, device, bf16)
    mixture = fit_latent_mixture(posterior_means, MIXTURE_COMPONENTS, seed)
    try:
        noise = fit_model_torsion_noise(model, train_frames, batch_size, compile_decoder, bf16, residual_frames)
        note = None
    except DataError as error:
        noise, note = None, str(error)
    targets = relaxation_targets(train_frames, model.bonds.cpu().numpy(), model.config.steric_distance)
    return Sampler(mixture, noise, note, targets)


def note(text: str) -> None:
    """One line on stderr that says what a command did instead of what was asked."""
    print(f"note: {text}", file=sys.stderr)


def load_sampler(
    checkpoint: dict[str, Any],
    checkpoint_path: Path,
    model: MolecularVAE,
    options: SamplerOptions,
    batch_size: int,
    compile_decoder: bool,
    bf16: bool,
) -> Sampler | None:
    """The sampler a command draws with: the checkpoint's own; for a checkpoint without one, refitted to the
    training split recorded in it, or None (the raw decoder) if that data cannot be read, each with a one-line
    note on stderr. None too when ``options`` ask for the raw decoder.

    Raises:
        DataError: ``--relax`` on a checkpoint without a sampler whose training data cannot be read.
    """
    if not options.needs_fit:
        return None
    record = sampler_record(checkpoint)
    if record is not None:
        sampler = Sampler.from_record(record)
    else:
        try:
            dataset, split = run_split(checkpoint, checkpoint_path)
            train = split.train
        except DataError as error:
            if options.relax:
                raise DataError(
                    f"--relax: {checkpoint_path} holds no fitted sampler, and its training data cannot be read "
                    f"to fit the relaxation targets ({error})"
                ) from None
            note(
                f"{checkpoint_path} holds no fitted sampler, and its training data cannot be read ({error}): "
                "drawing from the raw decoder (N(0, I), no torsion noise)"
            )
            return None
        note(
            f"{checkpoint_path} holds no fitted sampler (an older checkpoint, or a run that did not finish): "
            f"refitting it to the {len(train)} training frames of {dataset.source}"
        )
        seed = config_from_checkpoint(checkpoint, checkpoint_path).seed
        sampler = replace(
            fit_sampler(model, train, batch_size, compile_decoder, bf16, seed),
            origin=f"refitted to the training data ({dataset.source})",
        )
    if options.torsion_noise and sampler.torsion_noise is None:
        note(f"samples without torsion noise: {sampler.torsion_noise_note}")
    return sampler


def prior_latents(
    sampler: Sampler | None, options: SamplerOptions, count: int, latent_dim: int, generator: torch.Generator
) -> tuple[torch.Tensor, str]:
    """(count, latent_dim) latents drawn with ``generator`` (on its device) and where they come from: the
    sampler's mixture, or N(0, I) for ``--prior standard`` or without a sampler."""
    if options.prior == "mixture" and sampler is not None:
        return sampler.mixture.sample(count, generator), sampler.mixture.describe()
    return torch.randn(count, latent_dim, generator=generator, device=generator.device), "N(0, I)"


def add_torsion_noise(
    coords: np.ndarray, sampler: Sampler | None, options: SamplerOptions, generator: torch.Generator
) -> tuple[np.ndarray, str | None]:
    """(S, N, 3) conformations (Angstrom) with the sampler's torsion noise when asked for and fitted, and its
    description (None when none was added)."""
    if not options.torsion_noise or sampler is None or sampler.torsion_noise is None:
        return coords, None
    return sampler.torsion_noise.add_to(coords, generator), sampler.torsion_noise.describe()


def relax_samples(coords: np.ndarray, sampler: Sampler, options: SamplerOptions, batch_size: int) -> np.ndarray:
    """(S, N, 3) conformations (Angstrom) relaxed to the sampler's targets, molecule by molecule."""
    targets = sampler.relaxation.with_bond_tolerance(options.relax_bond_tolerance)
    return relax(coords, targets, options.relax_iterations, batch_size)


@dataclass(frozen=True)
class Draws:
    """Prior samples of a model: ``samples`` (S, N, 3) float32 Angstrom, the model's own output (decoded,
    oriented by its parity rule, with torsion noise); ``relaxed``: the same relaxed (with ``--relax``, else
    None); ``prior`` and ``torsion_noise``: descriptions (None: no torsion noise); ``latents``: (S, D) the latents
    they were decoded from."""

    samples: np.ndarray
    relaxed: np.ndarray | None
    prior: str
    torsion_noise: str | None
    latents: torch.Tensor


def draw_samples(
    model: MolecularVAE,
    sampler: Sampler | None,
    options: SamplerOptions,
    count: int,
    generator: torch.Generator,
    batch_size: int,
    compile_decoder: bool,
    bf16: bool,
) -> Draws:
    """``count`` prior samples through the whole sampler: latents, decoding (batches of ``batch_size``),
    orientation, torsion noise, and with ``options.relax`` their relaxed copies (``sampler`` must then be
    given), relaxed ``batch_size`` at a time or as many as fit in memory."""
    batch_size = batch_that_fits(model, batch_size, model.atomic_numbers.device)
    latents, prior = prior_latents(sampler, options, count, model.latent_dim, generator)
    decoded = decode_in_batches(model, latents, batch_size, compile_decoder, bf16)
    samples = orient_samples(torch.from_numpy(decoded), model.parity, generator).numpy()
    samples, noise = add_torsion_noise(samples, sampler, options, generator)
    relaxed = relax_samples(samples, sampler, options, batch_size) if options.relax else None
    return Draws(samples, relaxed, prior, noise, latents)
