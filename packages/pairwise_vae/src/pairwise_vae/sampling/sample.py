"""Draw conformations from a trained model: ``pairwise-vae-sample``.

By default through the model's whole sampler (:mod:`pairwise_vae.sampling.sampler`), which training
fitted to its training split and stored in the checkpoint, so no training data is read: latents
from a Gaussian mixture fitted to the posterior means (``--prior mixture``,
:mod:`pairwise_vae.sampling.prior`), decoded, oriented by the checkpoint's parity rule
(:mod:`pairwise_vae.model.parity`), then turned about their rotatable bonds by the torsional
fluctuations the decoder averages away (``--torsion-noise``,
:mod:`pairwise_vae.sampling.torsion_noise`). ``--prior standard --no-torsion-noise`` gives the raw
decoder on z ~ N(0, I). ``--relax`` then repairs bond lengths and clashes, molecule by molecule
(:mod:`pairwise_vae.sampling.relaxation`). Instead of prior draws: a ``.npy`` of latents
(``--latents``, with torsion noise), or the straight line between the posterior means of two
frames of a dataset (``--interpolate I,J``: in the handedness of frame I, continuous along the
path, without torsion noise). Writes ``<output>.npz`` (the dataset format, so the other commands
read it back) and ``<output>.pdb`` (one MODEL per conformation, with CONECT bonds).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from pairwise_vae import __version__
from pairwise_vae.cli import check_inference_request, exit_on_user_error, parse_checkpoint_command
from pairwise_vae.config import ConfigError
from pairwise_vae.data.dataset import load_dataset
from pairwise_vae.data.records import DataError, Topology
from pairwise_vae.data.structure_files import write_conformations_npz, write_pdb
from pairwise_vae.model.parity import orient_path, orient_samples
from pairwise_vae.model.vae import MolecularVAEMSE
from pairwise_vae.runtime import PRECISION_HELP, PRECISIONS, uses_bf16
from pairwise_vae.sampling.inference import decode_in_batches, load_for_inference
from pairwise_vae.sampling.sampler import SamplerOptions, add_torsion_noise, draw_samples, load_sampler, relax_samples


@dataclass
class SampleConfig:
    """Sampling"""

    num_samples: int = field(default=1000, metadata={"help": "conformations to draw from the prior"})
    output: Path = field(
        default=Path("samples"),
        metadata={"help": "output path without suffix: writes .npz and .pdb", "metavar": "PATH"},
    )
    latents: Path | None = field(
        default=None,
        metadata={"help": "decode these latent vectors (.npy of shape (K, latent_dim)) instead", "metavar": "FILE"},
    )
    interpolate: str | None = field(
        default=None,
        metadata={
            "help": "'I,J': decode the line between the posterior means of frames I and J of --data",
            "metavar": "I,J",
        },
    )
    steps: int = field(default=10, metadata={"help": "conformations along an interpolation, ends included"})
    data: Path | None = field(
        default=None,
        metadata={"help": "dataset for --interpolate; none: the embedded AIB9 ensemble", "metavar": "FILE"},
    )
    batch_size: int = field(default=1024, metadata={"help": "conformations decoded (or relaxed) at once"})
    seed: int = field(
        default=0, metadata={"help": "seed of the prior draws, the torsion noise and mirror-symmetric reflections"}
    )
    device: str = field(default="auto", metadata={"help": "auto, cpu, cuda or cuda:N"})
    precision: str = field(default="auto", metadata={"help": PRECISION_HELP, "choices": PRECISIONS})
    sampler: SamplerOptions = field(default_factory=SamplerOptions, metadata={"prefix": ""})
    pdb: bool = field(default=True, metadata={"help": "also write the .pdb file"})
    compile: bool = field(
        default=True,
        metadata={"help": "torch.compile the decoder when more than one batch is decoded (faster for many samples)"},
    )


def given_latents(
    config: SampleConfig, model: MolecularVAEMSE, topology: Topology, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(K, latent_dim) latents that the configuration names instead of prior draws: a file's (``--latents``) or
    an interpolation's; and for an interpolation the (N, 3) frame it starts from (else None)."""
    if config.latents is not None:
        if not config.latents.is_file():
            raise DataError(f"{config.latents}: file not found")
        try:
            latents = np.load(config.latents, allow_pickle=False)
        except (OSError, ValueError, EOFError) as error:
            raise DataError(f"{config.latents}: not a readable .npy array ({error})") from None
        if latents.ndim != 2 or latents.shape[1] != model.latent_dim or not np.isfinite(latents).all():
            raise DataError(
                f"{config.latents}: latents must be finite with shape (K, {model.latent_dim}), got {latents.shape}"
            )
        return torch.from_numpy(latents.astype(np.float32)).to(device), None
    try:
        first, last = (int(part) for part in config.interpolate.split(","))
    except ValueError:
        raise ConfigError(f"--interpolate takes two frame indices 'I,J', got {config.interpolate!r}") from None
    dataset = load_dataset(config.data)
    if not np.array_equal(dataset.topology.atomic_numbers, topology.atomic_numbers):
        raise DataError(f"{dataset.source}: its atoms differ from the checkpoint's molecule")
    for index in (first, last):
        if not 0 <= index < len(dataset):
            raise ConfigError(f"--interpolate: frame {index} is not in {dataset.source} ({len(dataset)} frames)")
    ends = torch.from_numpy(dataset.coords[[first, last]]).to(device)
    with torch.no_grad():
        mu, _ = model.encode(ends)
    weights = torch.linspace(0.0, 1.0, config.steps, device=device).unsqueeze(1)
    return (1.0 - weights) * mu[0] + weights * mu[1], ends[0]


def sample(checkpoint_path: Path, config: SampleConfig) -> list[Path]:
    """Decode the chosen latents of a checkpoint's model and write the output files."""
    outputs = [config.output.with_suffix(".npz")] + ([config.output.with_suffix(".pdb")] if config.pdb else [])
    check_inference_request(config, outputs, ("num_samples", "steps", "batch_size"))
    options = config.sampler
    options.check()
    checkpoint, model, topology, device = load_for_inference(checkpoint_path, config.device)
    generator = torch.Generator(device=device).manual_seed(config.seed)
    bf16 = uses_bf16(config.precision, device)
    source = "latents" if config.latents else "interpolation" if config.interpolate else "prior"
    given, start = given_latents(config, model, topology, device) if source != "prior" else (None, None)
    if source == "interpolation":  # a path is neither drawn from the prior nor noised: only --relax applies
        options = replace(options, prior="standard", torsion_noise=False)
    sampler = load_sampler(checkpoint, checkpoint_path, model, options, config.batch_size, config.compile, bf16)
    if source == "prior":
        draws = draw_samples(
            model, sampler, options, config.num_samples, generator, config.batch_size, config.compile, bf16
        )
        coords = draws.samples if draws.relaxed is None else draws.relaxed
        prior, noise = draws.prior, draws.torsion_noise
    else:
        decoded = torch.from_numpy(decode_in_batches(model, given, config.batch_size, config.compile, bf16))
        if source == "interpolation":
            coords = orient_path(decoded, start.cpu(), model.parity, model.bonds).numpy()
        else:
            coords = orient_samples(decoded, model.parity, generator).numpy()
        coords, noise = add_torsion_noise(coords, sampler, options, generator)
        if options.relax:
            coords = relax_samples(coords, sampler, options, config.batch_size)
    config.output.parent.mkdir(parents=True, exist_ok=True)
    metadata = {
        "generated_by": f"pairwise_vae {__version__} pairwise-vae-sample",
        "checkpoint": str(checkpoint_path),
        "source": source,
        **({"prior": prior} if source == "prior" else {}),
        "sampler": "none (the raw decoder)" if sampler is None else sampler.origin,
        "seed": config.seed,
        "parity": model.parity.mode,
        "torsion_noise": noise is not None,
        "relaxed": options.relax,
        "precision": "bf16" if bf16 else "fp32",
        "units": "Angstrom",
    }
    written = [write_conformations_npz(outputs[0], coords, topology, metadata)]
    if config.pdb:
        written.append(
            write_pdb(outputs[1], coords, topology, f"pairwise_vae {source} samples from {checkpoint_path.name}")
        )
    return written


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``pairwise-vae-sample``."""
    checkpoint, config = parse_checkpoint_command("pairwise-vae-sample", __doc__, SampleConfig, argv)
    with exit_on_user_error():
        written = sample(checkpoint, config)
    print("wrote " + ", ".join(str(path) for path in written))
