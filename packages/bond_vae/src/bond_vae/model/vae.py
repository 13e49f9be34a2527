"""The bond-length VAE: ViSNet encoder, EGNN decoder, and its loss.

Loss = mean squared error of the covalent bond lengths of the reconstruction against the
input (Angstrom^2) + beta * KL(q(z | x) || N(0, I)) with the KL summed over latent
dimensions and averaged over molecules. Both terms are invariant under rotations,
translations and reflections of the input.

Bond lengths alone barely vary between conformations: that loss is minimised by a
z-independent output with the mean bond lengths, and the latent collapses unless the encoder
reads the bond lengths directly (``EncoderConfig.bond_length_features``, on by default). Two optional
terms, also E(3)-invariant, add the bonded geometry: ``angle_weight`` x the MSE of the 1-3
distances (atoms two bonds apart; they fix the bond angles) and ``torsion_weight`` x the MSE
of the 1-4 distances (three bonds apart; they fix the torsions up to sign), both Angstrom^2.
A third, ``steric_weight`` x :func:`steric_loss`, keeps atoms at least 4 bonds apart from
overlapping, which no bonded term sees. The 1-4 distances leave each torsion's sign open;
``relative_chirality_weight`` x :func:`relative_chirality_loss` asks which torsions twist the
same way and which the opposite way (a helix or a mixed chain), still blind to the overall hand;
for a chiral molecule ``stereocentre_weight`` x :func:`stereocentre_loss` keeps each stereocentre in
the configuration of the others.
Local terms fix the chain's shape only through the sum of many small torsion errors, and their
minima include chains with part of the helix flipped (measured; see the README);
``aligned_weight`` x :func:`aligned_coordinate_loss`, the mean squared atom displacement after
the best rotation or reflection, pulls every atom towards its place in the whole molecule.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import nn

from bond_vae.bond_graph import pairs_bonds_apart, torsion_quadruplets
from bond_vae.config import Retired
from bond_vae.model.decoder import DecoderConfig, EGNNDecoder
from bond_vae.model.encoder import EncoderConfig, ViSNetEncoder
from bond_vae.model.losses import (
    LossTerms,
    aligned_coordinate_loss,
    kl_divergence,
    pair_distance_loss,
    relative_chirality_loss,
    stereocentre_loss,
    steric_loss,
    steric_pairs,
)
from bond_vae.model.parity import ParityRule, orient_reconstructions, orient_samples


@dataclass
class ModelConfig:
    """Model: latent space"""

    latent_dim: int = field(default=64, metadata={"help": "dimension of the latent space"})
    relative_chirality_weight: float = field(
        default=0.0,
        metadata={
            "help": "weight of a parity-even loss term: squared error of the products of every two normalised "
            "signed volumes of bonded atom chains (volume / product of the 3 bond lengths, in [-1, 1]), that is of "
            "their relative signs (a helix has all its backbone torsions of one sign, a mixed chain of both). A "
            "structure and its mirror image have the same products, so the loss stays E(3)-invariant. For a chiral "
            "molecule see also --stereocentre-weight; 0: off"
        },
    )
    stereocentre_weight: float = field(
        default=0.0,
        metadata={
            "help": "weight of a term for chiral molecules (--parity chiral) only: a squared hinge on each "
            "stereocentre's normalised signed volume in the hand of the other centres (an inverted centre costs "
            "about 0.2), so that each keeps its configuration, on the reconstructions and on the decodes of a "
            "quarter of a batch of latents on the lines through its posterior means, where samples are drawn. An "
            "alanine CA inverted through the plane of its three heavy neighbours keeps its bond lengths and angles, "
            "so the bond and angle terms cannot see it (A4GA4, conformations recipe, 30 minutes: samples with a "
            "D-alanine 0.7 %% at weight 10, 0.4 %% at 30, the recipe's); even under reflection; 0: off"
        },
    )
    angle_weight: float = field(
        default=0.0,
        metadata={
            "help": "weight of the MSE of 1-3 distances (atoms two bonds apart: bond angles), Angstrom^2; "
            "0 leaves the loss as bond lengths only"
        },
    )
    torsion_weight: float = field(
        default=0.0,
        metadata={
            "help": "weight of the MSE of 1-4 distances (atoms three bonds apart: torsions up to sign), Angstrom^2; "
            "0 leaves them out of the loss"
        },
    )
    steric_weight: float = field(
        default=0.0,
        metadata={
            "help": "weight of a repulsion term: the squared shortfall below --steric-distance of every distance "
            "between atoms at least 4 bonds apart, summed over the pairs of a molecule (Angstrom^2). Bonded terms "
            "do not see atoms far apart along the chain; this term is zero for any conformation without such "
            "contacts and E(3)-invariant; 0: off"
        },
    )
    aligned_weight: float = field(
        default=0.0,
        metadata={
            "help": "weight of an aligned-coordinate term: the mean squared displacement of the atoms (Angstrom^2) "
            "after superposing the reconstruction on its input by the best rotation or reflection (Kabsch), so "
            "E(3)-invariant like the bonded terms, which fix the shape of the whole chain only through many small "
            "torsion errors and have minima with part of the helix flipped (see README); 0: off"
        },
    )
    steric_distance: float = field(
        default=2.6,
        metadata={
            "help": "closest approach (Angstrom) of atoms at least 4 bonds apart that --steric-weight allows; "
            "0.2 percent of the embedded AIB9 frames come closer, by at most 0.11 A"
        },
    )
    encoder: EncoderConfig = field(default_factory=EncoderConfig, metadata={"prefix": "encoder_"})
    decoder: DecoderConfig = field(default_factory=DecoderConfig, metadata={"prefix": "decoder_"})

    RETIRED: ClassVar[dict[str, Retired]] = {
        "free_bits": Retired("--free-bits", 0.0),
        "chirality_weight": Retired("--chirality-weight", 0.0),
    }


def reference_conformation(coords: torch.Tensor) -> torch.Tensor:
    """The decoder's starting conformation: the frame whose interatomic distances are closest to
    the mean distances (over at most about 2000 evenly spaced frames).

    Args:
        coords: (F, N, 3) training frames, Angstrom.

    Returns:
        (N, 3) a copy of one of the frames.
    """
    sample = coords[:: max(1, len(coords) // 2000)]
    distances = torch.cdist(sample, sample)
    deviation = (distances - distances.mean(dim=0)).pow(2).mean(dim=(1, 2))
    return sample[deviation.argmin()].clone()


# how far beyond the two posterior means, in units of the segment between them, the latents of
# latents_between reach (A4GA4, conformations recipe, 30 minutes: samples with a D-alanine 1.6 % at 0, 0.55 % at 0.5)
BETWEEN_REACH = 0.5


def between_count(batch: int) -> int:
    """How many latents between posterior means a training step of ``batch`` molecules decodes: a quarter (none in
    batches of fewer than 4, so that a molecule too large for more does not need twice the memory)."""
    return batch // 4


def latents_between(mu: torch.Tensor, count: int) -> torch.Tensor:
    """``count`` latents on the lines through random pairs of the (B, D) posterior means ``mu`` (two different ones
    where B > 1), reaching ``BETWEEN_REACH`` of the segment beyond each end: mu_a + u (mu_b - mu_a) with
    u ~ U(-BETWEEN_REACH, 1 + BETWEEN_REACH); returns (count, D).

    Samples are drawn from a density fitted to the training frames' posterior means (Gaussians with full
    covariances, whose tails reach past the means), between them, where no reconstruction is trained: a
    stereocentre may come out inverted there although every reconstruction keeps it. The stereocentre term of
    these decodes reaches there.
    """
    first = torch.randint(len(mu), (count,), device=mu.device)
    second = (first + torch.randint(1, max(2, len(mu)), (count,), device=mu.device)) % len(mu)
    u = (1 + 2 * BETWEEN_REACH) * torch.rand(count, 1, device=mu.device, dtype=mu.dtype) - BETWEEN_REACH
    return mu[first] + u * (mu[second] - mu[first])


class MolecularVAE(nn.Module):
    """Variational autoencoder of conformations of one molecule.

    Args:
        config: architecture.
        atomic_numbers: (N,) atomic numbers.
        bonds: (n_bonds, 2) covalent bonds.
        reference_positions: (N, 3) the decoder's starting conformation, Angstrom.
        parity: how :meth:`sample` and :meth:`reconstruct` orient their output (see
            :mod:`bond_vae.model.parity`); None: ``none``, the decoder's raw output.

    Buffers ``angle_pairs`` and ``torsion_pairs`` ((P, 2) atoms two and three bonds apart),
    ``steric_pairs`` and ``quadruplets`` ((Q, 4) bonded chains) are rebuilt from the bonds and not
    saved, so checkpoints written without them load.
    """

    def __init__(
        self,
        config: ModelConfig,
        atomic_numbers: torch.Tensor,
        bonds: torch.Tensor,
        reference_positions: torch.Tensor,
        parity: ParityRule | None = None,
    ) -> None:
        super().__init__()
        self.config = config
        self.parity = parity if parity is not None else ParityRule()
        self.register_buffer("atomic_numbers", atomic_numbers.long().clone())
        self.register_buffer("bonds", bonds.long().clone())
        n_atoms = len(atomic_numbers)
        for name, hops in (("angle_pairs", 2), ("torsion_pairs", 3)):
            pairs = pairs_bonds_apart(bonds.long().cpu().numpy(), n_atoms, hops)
            self.register_buffer(name, torch.from_numpy(pairs), persistent=False)
        self.register_buffer("steric_pairs", steric_pairs(bonds, n_atoms), persistent=False)
        self.register_buffer("quadruplets", torsion_quadruplets(bonds.long().cpu(), n_atoms), persistent=False)
        self.encoder = ViSNetEncoder(config.encoder, config.latent_dim, bonds, n_atoms)
        chiral = (self.parity.centres, self.parity.signs) if self.parity.mode == "chiral" else None
        self.decoder = EGNNDecoder(
            config.decoder, config.latent_dim, atomic_numbers, bonds, reference_positions, stereocentres=chiral
        )

    @property
    def latent_dim(self) -> int:
        return self.config.latent_dim

    def encode(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, N, 3) Angstrom -> mu, log_var, each (B, latent_dim)."""
        return self.encoder(self.atomic_numbers, positions)

    @staticmethod
    def reparameterize(
        mu: torch.Tensor, log_var: torch.Tensor, noise_scale: torch.Tensor | float = 1.0
    ) -> torch.Tensor:
        """Draw z = mu + noise_scale * sigma * eps with eps ~ N(0, I); (B, D) -> (B, D). ``noise_scale`` (a 0-dim
        tensor in training, so that a compiled forward is not recompiled as it changes) is below 1 only while the
        KL weight warms up (:meth:`~bond_vae.training.schedule.Schedule.posterior_noise`)."""
        return mu + noise_scale * torch.exp(0.5 * log_var) * torch.randn_like(mu)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """(B, latent_dim) -> (B, N, 3) centred coordinates in Angstrom."""
        return self.decoder(z)

    @property
    def stereocentres_on(self) -> bool:
        """Whether the stereocentre term applies (a weight above 0 and a chiral molecule); a training forward then
        also decodes latents between the batch's posterior means (:func:`latents_between`)."""
        return self.config.stereocentre_weight > 0 and self.parity.mode == "chiral"

    def forward(
        self, positions: torch.Tensor, noise_scale: torch.Tensor | float = 1.0
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Encode, sample z (:meth:`reparameterize`), decode. Returns (decoded (B + K, N, 3), mu, log_var): the B
        reconstructions, then, in training when :attr:`stereocentres_on`, K = :func:`between_count` (B) decodes of
        latents between the batch's posterior means."""
        mu, log_var = self.encode(positions)
        z = self.reparameterize(mu, log_var, noise_scale)
        count = between_count(len(mu)) if self.training and self.stereocentres_on else 0
        if count > 0:
            z = torch.cat([z, latents_between(mu.detach(), count)])
        return self.decode(z), mu, log_var

    def loss(self, positions: torch.Tensor, beta: float) -> LossTerms:
        """Bond-length MSE + beta * KL (+ the weighted optional terms) for (B, N, 3) conformations in Angstrom."""
        return self.criterion(positions, *self(positions), beta=beta)

    def criterion(
        self,
        positions: torch.Tensor,
        reconstruction: torch.Tensor,
        mu: torch.Tensor,
        log_var: torch.Tensor,
        beta: float,
    ) -> LossTerms:
        """Loss terms of a batch from the outputs of :meth:`forward` (which the trainer may run
        compiled or data-parallel).

        Args:
            positions: (B, N, 3) input conformations in Angstrom.
            reconstruction: (B + K, N, 3) decoded conformations in Angstrom: the B reconstructions, then K >= 0
                decodes of latents between posterior means, which only the stereocentre term sees (against the
                configuration of the first K inputs).
            mu, log_var: (B, latent_dim) posterior parameters.
            beta: weight of the KL term.

        The terms are computed in the dtype of ``positions`` (float32 under bf16 autocast,
        whose outputs are bfloat16).
        """
        reconstruction, mu, log_var = (tensor.to(positions.dtype) for tensor in (reconstruction, mu, log_var))
        reconstruction, between = reconstruction[: len(positions)], reconstruction[len(positions) :]
        reconstruction_loss = pair_distance_loss(reconstruction, positions, self.bonds)
        kl = kl_divergence(mu, log_var).mean()
        relative_chirality = stereocentres = steric = aligned = reconstruction_loss.new_zeros(())
        if self.config.relative_chirality_weight > 0:
            relative_chirality = relative_chirality_loss(reconstruction, positions, self.quadruplets)
        if self.stereocentres_on:
            centres = self.parity.centres.to(positions.device)
            stereocentres = stereocentre_loss(reconstruction, positions, centres)
            if len(between) > 0:
                stereocentres = stereocentres + stereocentre_loss(between, positions[: len(between)], centres)
        angle, torsion = (
            pair_distance_loss(reconstruction, positions, pairs) if len(pairs) else reconstruction_loss.new_zeros(())
            for pairs in (self.angle_pairs, self.torsion_pairs)
        )
        if self.config.steric_weight > 0:
            steric = steric_loss(reconstruction, self.steric_pairs, self.config.steric_distance)
        if self.config.aligned_weight > 0:
            aligned = aligned_coordinate_loss(reconstruction, positions)
        total = reconstruction_loss + beta * kl
        weighted = (
            (self.config.relative_chirality_weight, relative_chirality),
            (self.config.stereocentre_weight, stereocentres),
            (self.config.angle_weight, angle),
            (self.config.torsion_weight, torsion),
            (self.config.steric_weight, steric),
            (self.config.aligned_weight, aligned),
        )
        for weight, term in weighted:
            if weight > 0:
                total = total + weight * term
        return LossTerms(
            total=total,
            reconstruction=reconstruction_loss,
            kl=kl,
            relative_chirality=relative_chirality,
            stereocentres=stereocentres,
            angle=angle,
            torsion=torsion,
            steric=steric,
            aligned=aligned,
        )

    @torch.no_grad()
    def reconstruct(self, positions: torch.Tensor) -> torch.Tensor:
        """Decode the posterior mean: (B, N, 3) -> (B, N, 3), deterministic, in the handedness of the input
        (unless the parity rule is ``none``)."""
        mu, _ = self.encode(positions)
        return orient_reconstructions(self.decode(mu), positions, self.parity, self.bonds)

    @torch.no_grad()
    def sample(self, n_samples: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Draw z ~ N(0, I), decode and orient by the parity rule: returns (n_samples, N, 3) coordinates in
        Angstrom. ``generator`` draws the latents, then (``mirror-symmetric``) the reflections."""
        device = self.atomic_numbers.device
        z = torch.randn(n_samples, self.latent_dim, device=device, generator=generator)
        return orient_samples(self.decode(z), self.parity, generator)
