"""The settings of a training run: :class:`TrainConfig`, whose fields are the flags of ``bond-vae-train``."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from bond_vae.config import ConfigError
from bond_vae.model.parity import PARITY_CHOICES
from bond_vae.model.vae import ModelConfig
from bond_vae.runtime import PRECISION_HELP, PRECISIONS

WANDB_MODES = ("offline", "online", "disabled")
# settings that --resume may change; the others are the run's own
RESUME_OVERRIDABLE = (
    "epochs",
    "max_minutes",
    "device",
    "wandb",
    "log_checkpoints",
    "checkpoint_every",
    "evaluate_every",
    "compile",
    "precision",
)
# the host reads step metrics (progress bar, W&B, non-finite steps, stop requests of a
# data-parallel run) every this many steps; in between it never waits for the device
SYNC_INTERVAL = 10


@dataclass
class TrainConfig:
    """Training run"""

    data: list[Path] | None = field(
        default=None,
        metadata={
            "help": "dataset .npz, .npy coordinates with --topology, or MD trajectories (.xtc, .dcd, .trr, .nc, "
            "multi-model .pdb, ...; needs the 'md' extra), one or more files of one molecule, each a trajectory; "
            "none: the embedded AIB9 ensemble",
            "metavar": "FILE",
        },
    )
    topology: Path | None = field(
        default=None,
        metadata={
            "help": "topology of .npy coordinates (a PDB file or an atom-table .npy of [atom_name, residue_index] "
            "rows) or of a trajectory (PDB, PSF, PRMTOP, GRO, ... read by MDTraj)",
            "metavar": "FILE",
        },
    )
    select: str | None = field(
        default=None,
        metadata={
            "help": "atoms of a trajectory to model, in MDTraj's selection language (e.g. 'resname AIB and not "
            "element H'); none: the heavy atoms of the first molecule that is not solvent or ions",
            "metavar": "SELECTION",
        },
    )
    stride: int = field(default=1, metadata={"help": "read every N-th frame of the data"})
    output_dir: Path = field(
        default=Path("runs/bond_vae"), metadata={"help": "parent folder of the run folders", "metavar": "DIR"}
    )
    run_name: str | None = field(default=None, metadata={"help": "run folder name; none: the start time"})
    epochs: int = field(
        default=50,
        metadata={
            "help": "passes over the training split; the cosine learning-rate schedule ends with the last (on "
            "--resume: train on to epoch N, the cosine laid out anew over the whole run to end there)"
        },
    )
    max_minutes: float | None = field(
        default=None,
        metadata={
            "help": "stop after N minutes of training (compiling and validation included) with a validated last "
            "epoch and checkpoint; once 20 steps are timed (after the first, compiling, ones) the learning-rate "
            "and beta schedules are laid out, once, for the steps that fit (--epochs stays an upper bound). A "
            "resumed run keeps its N: each --resume trains N more minutes, and the cosine is laid out anew over "
            "the whole run, the steps done and those that fit; the warm-ups never lengthen",
            "metavar": "N",
        },
    )
    batch_size: int = field(
        default=32,
        metadata={"help": "molecules per optimiser step and device (with --devices N a step sees N times as many)"},
    )
    learning_rate: float = field(default=1e-3, metadata={"help": "peak AdamW learning rate"})
    weight_decay: float = field(default=1e-4, metadata={"help": "AdamW weight decay"})
    warmup_steps: int = field(default=300, metadata={"help": "linear learning-rate warm-up steps, then cosine decay"})
    grad_clip: float = field(default=1.0, metadata={"help": "gradient-norm clipping threshold"})
    beta: float = field(default=1e-5, metadata={"help": "weight of the KL term"})
    beta_warmup_epochs: float = field(
        default=5.0,
        metadata={
            "help": "epochs over which beta, and with it the posterior noise of z in training, rise linearly from 0 "
            "(full noise from the first step lets the decoder learn to ignore z)"
        },
    )
    test_trajectories: int = field(
        default=1,
        metadata={
            "help": "trajectories held out whole from training, the test set that evaluate judges the model on: "
            "the last ones in file order (several --data files, or the replica labels of an .npz); with a single "
            "trajectory its last 10%%, after a gap of 2%%; 0: none (evaluate then scores half of the validation "
            "split). The embedded AIB9 data has test trajectories of its own and ignores this",
            "older_records": 0,
        },
    )
    validation_fraction: float = field(
        default=0.1, metadata={"help": "fraction of frames held out, in contiguous blocks"}
    )
    max_frames: int | None = field(
        default=None, metadata={"help": "use only N frames, evenly spaced over the data (quick runs)"}
    )
    seed: int = field(default=0, metadata={"help": "seed of the initialisation, data order and noise"})
    split_seed: int = field(
        default=0,
        metadata={
            "help": "seed of the train/validation split alone: runs with other --seed values and the same "
            "--split-seed validate on the same frames",
            "older_records_use": "seed",  # runs before --split-seed split with --seed
        },
    )
    parity: str = field(
        default="auto",
        metadata={
            "help": "handedness of the output, a rule decided from the training split and kept in the checkpoint: "
            "mirror-symmetric (each prior sample mirrored with probability 1/2), chiral (prior samples keep the "
            "data's stereocentres), auto (chiral when the data have stereocentres, else mirror-symmetric), none "
            "(the decoder's raw output); but for none, reconstructions take the handedness of their input",
            "choices": PARITY_CHOICES,
        },
    )
    device: str = field(default="auto", metadata={"help": "auto, cpu, cuda or cuda:N"})
    devices: int = field(
        default=1,
        metadata={
            "help": "data-parallel processes (DDP), started on this machine: one per GPU, or gloo processes on the CPU"
        },
    )
    precision: str = field(
        default="auto",
        metadata={
            "help": PRECISION_HELP,
            "choices": PRECISIONS,
        },
    )
    compile: bool = field(
        default=True,
        metadata={
            "help": "torch.compile the model for training (a minute of compiling first; off without a C compiler)"
        },
    )
    wandb: str = field(
        default="offline",
        metadata={
            "help": "Weights & Biases mode (offline: files under the run folder, no account)",
            "choices": WANDB_MODES,
        },
    )
    log_checkpoints: bool = field(
        default=False,
        metadata={"help": "with --wandb online: upload best.pt and last.pt as a W&B model artifact when the run ends"},
    )
    checkpoint_every: int = field(default=500, metadata={"help": "also save last.pt every N optimiser steps"})
    evaluate_every: int = field(
        default=5,
        metadata={"help": "every N epochs (and at the end): structural metrics of the validation split and plots"},
    )
    max_bad_steps: int = field(
        default=20,
        metadata={"help": f"stop after this many consecutive non-finite steps (checked every {SYNC_INTERVAL} steps)"},
    )
    resume: Path | None = field(
        default=None,
        metadata={
            "help": "continue the run of this checkpoint (its folder and settings); a run that has done its --epochs "
            "needs a larger --epochs (else: an error, exit code 1)",
            "metavar": "CKPT",
        },
    )
    model: ModelConfig = field(default_factory=ModelConfig)

    def trajectories_held_out(self) -> int:
        """Trajectories held out as the test set: ``test_trajectories``, but none for the embedded AIB9 data,
        whose test trajectories are a file of their own."""
        return 0 if self.data is None else self.test_trajectories

    def validate(self) -> None:
        """Raise :class:`ConfigError` for values no run can use."""
        positive = ("epochs", "batch_size", "devices", "checkpoint_every", "evaluate_every", "max_bad_steps", "stride")
        for name in positive:
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.test_trajectories < 0:
            raise ConfigError(f"--test-trajectories must be 0 or more, got {self.test_trajectories}")
        if not 0.0 < self.validation_fraction < 1.0:
            raise ConfigError(
                f"--validation-fraction must be in (0, 1), got {self.validation_fraction}: "
                "the validation split picks best.pt"
            )
        if self.learning_rate <= 0 or self.beta < 0 or self.grad_clip <= 0:
            raise ConfigError("--learning-rate and --grad-clip must be positive and --beta non-negative")
        weights = (
            "relative_chirality_weight",
            "stereocentre_weight",
            "angle_weight",
            "torsion_weight",
            "steric_weight",
            "aligned_weight",
        )
        for name in weights:
            if getattr(self.model, name) < 0:
                raise ConfigError(f"--{name.replace('_', '-')} must be non-negative, got {getattr(self.model, name):g}")
        if self.model.steric_distance <= 0:
            raise ConfigError(f"--steric-distance must be positive, got {self.model.steric_distance:g}")
        for flag, channels in (
            ("--decoder-pair-channels", self.model.decoder.pair_channels),
            ("--encoder-vector-channels", self.model.encoder.vector_channels),
        ):
            if channels is not None and channels < 1:
                raise ConfigError(f"{flag} must be at least 1, got {channels}")
        if self.max_minutes is not None and self.max_minutes <= 0:
            raise ConfigError(f"--max-minutes must be positive, got {self.max_minutes:g}")
        if self.max_frames is not None and self.max_frames < 2:
            raise ConfigError(f"--max-frames must be at least 2, got {self.max_frames}")
        if self.model.latent_dim < 1 or self.model.encoder.hidden_channels % self.model.encoder.num_heads:
            raise ConfigError(
                "--latent-dim must be positive and --encoder-hidden-channels divisible by --encoder-num-heads"
            )
        if self.log_checkpoints and self.wandb != "online":
            raise ConfigError(
                f"--log-checkpoints uploads to W&B and needs --wandb online, got --wandb {self.wandb} "
                "(the checkpoints stay in the run folder either way)"
            )
