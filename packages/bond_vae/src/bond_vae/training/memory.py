"""Memory a training run needs, estimated before it starts: a run that would not fit is refused (exit code 2).

The decoder works on the complete graph of the molecule: each of its L EGNN layers holds (B, N, N, C) pair
tensors (C = ``--decoder-pair-channels``) and (B, N, N, 16) distance features, and autograd keeps several
of them per layer for the backward pass; the steric term (``--steric-weight`` above 0) adds (B, N (N - 1) / 2)
tensors, the bonded terms none. One training step of B molecules of N atoms needs about

    4 bytes x B x N^2 x (L x (STEP_FLOATS_PER_CHANNEL x C + STEP_FLOATS_PER_PAIR) [+ LOSS_FLOATS_PER_PAIR])
    + ENCODER_BYTES_PER_ATOM x B x N + OVERHEAD_BYTES

(the encoder works on a radius graph, linear in N; the overhead holds the parameters, their gradients and
AdamW moments and the allocator's slack). Without autograd (the validation pass, the sampler's fit, the
evaluation report, the sample command) a molecule needs about
4 bytes x N^2 x (DECODE_FLOATS_PER_CHANNEL x C + DECODE_FLOATS_PER_PAIR) + NO_GRAD_ENCODER_BYTES_PER_ATOM x N,
and :func:`molecules_at_once` encodes and decodes as many at once as fit (at most the caller's batch of 256 to
1,024), so only the training step can refuse a molecule. (The run's set-up, the starting conformation from at
most 4000 frames, needs less.)

The constants were fitted, with some room, to the peak resident memory (``VmHWM`` of ``/proc/self/status``
less the resident memory before the steps) of three eager fp32 training steps on the CPU, one process per
case (atoms of the capped alanine, AIB9, adenylate kinase residues 1-20 and neopetrosiamide), and of one
decode of 32 and 128 prior samples:

    atoms  batch  C, L                    measured MiB  estimate MiB
       10      2  32, 4                             17            74
       10      8  32, 4                             26           104
       58      2  32, 4                             92           155
       58      8  32, 4                            293           428
       58     32  32, 4                           1258          1520
      142      2  32, 4                            322           429
      142      8  32, 4                           1233          1526
      142      8  16, 4                            837          1290
      142      8  64, 4                           1397          1998
      142      8  32, 2 (a smaller encoder)        564          1043
      210      2  32, 4                            641           775
       58      8  16, 4 (the defaults)             176           389
       58     16  16, 4                            336           713
       58     32  16, 4                            632          1362
      142     32 samples decoded, C 32             375           478
      142    128 samples decoded, C 32            1467          1718
      142     32 samples decoded, C 16             199           281

bfloat16 autocast and torch.compile (fused element-wise kernels) should need less (not measured). The
check compares the estimates with the memory available: ``MemAvailable`` of ``/proc/meminfo`` on the CPU
(the processes of a ``--devices N`` run share it), the free memory of the GPU on CUDA; where neither can be
read it checks nothing.
"""

from __future__ import annotations

from pathlib import Path

import torch

from bond_vae.config import ConfigError
from bond_vae.data.records import ConformationDataset
from bond_vae.model.decoder import DecoderConfig
from bond_vae.model.vae import ModelConfig, between_count
from bond_vae.training.config import TrainConfig

BYTES_PER_FLOAT = 4
GIB = 2**30
# float32 values per (molecule, atom pair) of a training step: per decoder layer, this many per pair channel
# and this many more (distance features, relative vectors, coordinate weights); then the steric term, if on
STEP_FLOATS_PER_CHANNEL = 6
STEP_FLOATS_PER_PAIR = 200
LOSS_FLOATS_PER_PAIR = 12
# bytes per (molecule, atom) of a training step: the encoder's radius graph (about ten neighbours an atom)
ENCODER_BYTES_PER_ATOM = 448 * 2**10
# float32 values per (molecule, atom pair) of a decode without autograd (one layer's tensors at a time)
DECODE_FLOATS_PER_CHANNEL = 5
DECODE_FLOATS_PER_PAIR = 8
# bytes per (molecule, atom) of an encode without autograd (measured: 31 KiB in fp32, 25 in bf16, 522 atoms)
NO_GRAD_ENCODER_BYTES_PER_ATOM = 64 * 2**10
OVERHEAD_BYTES = 64 * 2**20
# the batch size suggested after a refusal, and the molecules encoded or decoded at once, leave this fraction of
# the available memory unused
MARGIN = 0.2


class MemoryShortage(ConfigError):
    """A run that needs more memory than is available: refused before it starts, with exit code 2."""

    exit_code = 2


def pair_channels(decoder: DecoderConfig) -> int:
    """C of the decoder's (B, N, N, C) pair tensors."""
    return decoder.pair_channels or decoder.hidden_channels


def decoded_molecules(batch: int, model: ModelConfig) -> int:
    """Molecules the decoder runs on in a training step of ``batch``: those of the batch, and where the
    stereocentre term is on, the latents between their posterior means that a chiral molecule's step decodes
    (:func:`~bond_vae.model.vae.between_count`; counted for any molecule: chirality is decided later, from the
    training frames)."""
    return batch + (between_count(batch) if model.stereocentre_weight > 0 else 0)


def training_step_bytes(n_atoms: int, batch: int, model: ModelConfig) -> int:
    """Bytes one training step of ``batch`` molecules of ``n_atoms`` atoms needs beyond the model itself."""
    per_layer = STEP_FLOATS_PER_CHANNEL * pair_channels(model.decoder) + STEP_FLOATS_PER_PAIR
    loss = LOSS_FLOATS_PER_PAIR if model.steric_weight > 0 else 0
    decoder = decoded_molecules(batch, model) * model.decoder.num_layers * per_layer
    pairs = BYTES_PER_FLOAT * n_atoms**2 * (decoder + batch * loss)
    return pairs + ENCODER_BYTES_PER_ATOM * batch * n_atoms + OVERHEAD_BYTES


def no_grad_bytes(n_atoms: int, model: ModelConfig) -> int:
    """Bytes one molecule of ``n_atoms`` atoms needs in an encode or a decode without autograd."""
    per_pair = DECODE_FLOATS_PER_CHANNEL * pair_channels(model.decoder) + DECODE_FLOATS_PER_PAIR
    return BYTES_PER_FLOAT * n_atoms**2 * per_pair + NO_GRAD_ENCODER_BYTES_PER_ATOM * n_atoms


def molecules_at_once(n_atoms: int, model: ModelConfig, device: torch.device, most: int) -> int:
    """How many molecules to encode or decode at once without autograd: ``most``, or fewer (at least one) where
    ``most`` would need more than (1 - MARGIN) of the free memory of ``device`` (:func:`available_bytes`; on CUDA
    with what PyTorch's allocator holds unused, which a training run's cache keeps from the free memory)."""
    available = available_bytes(device)
    if available is None:
        return most
    if device.type == "cuda":
        available += torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    fits = int(((1 - MARGIN) * available - OVERHEAD_BYTES) // no_grad_bytes(n_atoms, model))
    return max(1, min(most, fits))


def available_bytes(device: torch.device, meminfo: Path = Path("/proc/meminfo")) -> int | None:
    """Free memory of ``device``: the GPU's free memory on CUDA, ``MemAvailable`` of ``meminfo`` on the CPU;
    None where it cannot be read (not Linux)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        lines = meminfo.read_text().splitlines()
        return next(int(line.split()[1]) * 1024 for line in lines if line.startswith("MemAvailable:"))
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def largest_batch(n_atoms: int, model: ModelConfig, budget: float) -> int:
    """The largest batch whose training step fits in ``budget`` bytes; 0 when even one molecule does not."""
    low, high = 0, int(max(0.0, budget - OVERHEAD_BYTES) // (training_step_bytes(n_atoms, 1, model) - OVERHEAD_BYTES))
    # a molecule of a larger batch needs at least what the one of a batch of 1 needs: the answer is at most `high`
    while low < high:  # bisection: the need grows with the batch
        middle = (low + high + 1) // 2
        low, high = (middle, high) if training_step_bytes(n_atoms, middle, model) <= budget else (low, middle - 1)
    return low


def check_memory(config: TrainConfig, dataset: ConformationDataset, device: torch.device, processes: int = 1) -> None:
    """Refuse, before anything is allocated, a run whose training step would not fit (passes without autograd
    take as many molecules at once as fit, :func:`molecules_at_once`).

    Args:
        config: the run's settings (``--batch-size``, the decoder's pair channels and layers).
        dataset: its data (the file named in the message, the atom count N).
        device: the training device (of the first process).
        processes: data-parallel processes; on the CPU their training steps share its memory (on CUDA each has
            a GPU).

    Raises:
        MemoryShortage: one line naming the file, the need, the memory available and what to do.
    """
    available = available_bytes(device)
    if available is None:
        return
    n_atoms, batch, model = dataset.topology.n_atoms, config.batch_size, config.model
    sharing = processes if device.type == "cpu" else 1
    each = f" in each of {sharing} processes" if sharing > 1 else ""
    more = f"more than the {available / GIB:.1f} GiB available"
    step = sharing * training_step_bytes(n_atoms, batch, model)
    if step > available:
        fits = largest_batch(n_atoms, model, (1 - MARGIN) * available / sharing)
        advice = (
            f"use --batch-size {fits} or fewer atoms (--select)"
            if fits > 0
            else "even --batch-size 1 does not fit: use fewer atoms (--select)"
        )
        raise MemoryShortage(
            f"{dataset.source}: {n_atoms} atoms at --batch-size {batch}{each} need about {step / GIB:.1f} GiB "
            f"per training step, {more}; {advice}"
        )
