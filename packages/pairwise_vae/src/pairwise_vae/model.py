"""The pairwise-distance VAE: ViSNet encoder, EGNN decoder, and its loss.

Loss = mean squared error of all N (N - 1) / 2 interatomic distances of the reconstruction
against the input (Angstrom^2; 1,653 distances for AIB9's 58 atoms), computed per molecule
and averaged over molecules, + beta * KL(q(z | x) || N(0, I)) with the KL summed over latent
dimensions and averaged over molecules. Both terms are invariant under rotations,
translations and reflections of the input.

By default each distance's squared error is weighted by the inverse of its variance in the
training data (plus a floor of 0.3 A in quadrature; weights of mean 1, see
:func:`distance_weights`): a Gaussian likelihood with one width per distance instead of one
for all. Bonds (3 % of the pairs) then carry 13 % of the weight and bond angles 20 %, so the
decoder learns local geometry along with the global shape (``--distance-sigma-floor none``:
the plain mean).

Optional terms, each off at weight 0 (:class:`ModelConfig`): signed-volume terms (parity-odd
and parity-even), a steric repulsion, and an aligned-coordinate MSE after the best rotation or
reflection, which frees the decoder from local minima of the distance loss.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from pairwise_vae.decoder import DecoderConfig, EGNNDecoderMSE
from pairwise_vae.encoder import EncoderConfig, ViSNetEncoderMSE
from pairwise_vae.graph import hop_counts
from pairwise_vae.parity import ParityRule, orient_reconstructions, orient_samples
from pairwise_vae.utils import normalized_volumes, pairwise_distances, superposed_squared_deviation


@dataclass
class ModelConfig:
    """Model: latent space"""

    latent_dim: int = field(default=32, metadata={"help": "dimension of the latent space"})
    chirality_weight: float = field(
        default=0.0,
        metadata={
            "help": "weight of a parity-odd loss term: MSE of the normalised signed volumes of bonded atom chains "
            "(volume / product of the 3 bond lengths = sin(angle) sin(angle) sin(dihedral), in [-1, 1]); at weight "
            "1 an error of 0.1 in them costs as much as a 0.1 Angstrom error of every interatomic distance; "
            "0 keeps the loss mirror-blind; needs --encoder-chiral-features"
        },
    )
    relative_chirality_weight: float = field(
        default=0.0,
        metadata={
            "help": "weight of a parity-even loss term: squared error of the products of every two normalised "
            "signed volumes of bonded atom chains, that is of their relative signs (a helix has all its backbone "
            "torsions of one sign, a mixed chain of both). A structure and its mirror image have the same "
            "products, so the loss stays E(3)-invariant and needs no chiral encoder features; near a match it "
            "weighs about like --chirality-weight; 0: off"
        },
    )
    steric_weight: float = field(
        default=0.0,
        metadata={
            "help": "weight of a repulsion term: the squared shortfall below --steric-distance of every distance "
            "between atoms at least 4 bonds apart, summed over the pairs of a molecule (Angstrom^2). The distance "
            "MSE penalises overlapping atoms only on average; this term is zero for any conformation without such "
            "contacts and E(3)-invariant; 0: off"
        },
    )
    steric_distance: float = field(
        default=2.6,
        metadata={
            "help": "closest approach (Angstrom) of atoms at least 4 bonds apart that --steric-weight allows; "
            "0.2 percent of the embedded AIB9 frames come closer, by at most 0.11 A"
        },
    )
    aligned_weight: float = field(
        default=0.0,
        metadata={
            "help": "weight of an aligned-coordinate term: the mean squared displacement of the atoms (Angstrom^2) "
            "after superposing the reconstruction on its input by the best rotation or reflection (Kabsch), so "
            "E(3)-invariant like the distance loss. A distance loss has local minima where part of the chain sits "
            "on the wrong side of the rest (AIB9's mixed helices, see README); this term pulls every atom straight "
            "to its place (as AlphaFold 3 pairs an aligned MSE with a distance loss); 0: off"
        },
    )
    distance_sigma_floor: float | None = field(
        default=0.3,
        metadata={
            "help": "weigh each distance's squared error by 1 / (its variance in the training data + F^2), "
            "scaled to mean 1 (Angstrom): stiff pairs (bonds, angles) count more; none: all distances alike",
            "metavar": "F",
        },
    )
    encoder: EncoderConfig = field(default_factory=EncoderConfig, metadata={"prefix": "encoder_"})
    decoder: DecoderConfig = field(default_factory=DecoderConfig, metadata={"prefix": "decoder_"})


@dataclass
class LossTerms:
    """Scalar loss tensors of one batch.

    ``total``; ``reconstruction``: pairwise-distance MSE (Angstrom^2); ``kl``: KL per molecule
    (nats); ``chirality``: MSE of normalised signed volumes and ``relative_chirality``: MSE of
    their pairwise products (both dimensionless); ``steric``: summed squared shortfall of
    distant pairs (Angstrom^2, :func:`steric_loss`); ``aligned``: mean squared displacement
    after superposition (Angstrom^2, :func:`aligned_coordinate_loss`); each of the last four
    zero when its weight is 0.
    """

    total: torch.Tensor
    reconstruction: torch.Tensor
    kl: torch.Tensor
    chirality: torch.Tensor
    relative_chirality: torch.Tensor
    steric: torch.Tensor
    aligned: torch.Tensor


STERIC_MIN_BONDS_APART = 4  # the clash criterion of the evaluation report


def kl_divergence(mu: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(log_var)) || N(0, I)) per molecule: (B, D) -> (B,) in nats."""
    return 0.5 * (mu.pow(2) + log_var.exp() - 1.0 - log_var).sum(dim=-1)


def pairwise_distance_loss(
    predicted: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean squared error of all interatomic distances, molecule by molecule (Angstrom^2).

    Distances are taken only between atoms of the same molecule, batched without a loop.

    Args:
        predicted: (B, N, 3) coordinates in Angstrom.
        target: (B, N, 3) coordinates in Angstrom.
        weights: (N (N - 1) / 2,) weight of each pair's squared error (mean 1), in the order of
            :func:`~pairwise_vae.utils.pairwise_distances`; None: all 1.
    """
    squared_errors = (pairwise_distances(predicted) - pairwise_distances(target)).pow(2)
    return (squared_errors if weights is None else squared_errors * weights).mean()


def distance_weights(coords: torch.Tensor, sigma_floor: float) -> torch.Tensor:
    """Inverse-variance weights of the pairwise distances, 1 / (var_ij + floor^2), scaled to mean 1.

    A Gaussian likelihood of each distance with its own spread in the data: bonded pairs,
    which barely vary, weigh more than pairs at opposite ends of the molecule.

    Args:
        coords: (F, N, 3) training frames in Angstrom (at most about 2000, evenly spaced, are used).
        sigma_floor: Angstrom added in quadrature to each distance's standard deviation.

    Returns:
        (N (N - 1) / 2,) weights in the order of :func:`~pairwise_vae.utils.pairwise_distances`.
    """
    sample = coords[:: max(1, len(coords) // 2000)].double()
    weights = 1.0 / (pairwise_distances(sample).var(dim=0) + sigma_floor**2)
    return (weights / weights.mean()).float()


def chirality_loss(predicted: torch.Tensor, target: torch.Tensor, quadruplets: torch.Tensor) -> torch.Tensor:
    """Mean squared error of the normalised signed volumes of bonded atom chains; odd under reflection.

    Each volume is divided by the product of its chain's three bond lengths
    (:func:`~pairwise_vae.utils.normalized_volumes`, in [-1, 1]), so the term is dimensionless: with
    weight 1, an error of 0.1 in every normalised volume (about 7 degrees of dihedral near 0)
    adds as much as an error of 0.1 Angstrom in every interatomic distance (0.01).

    Args:
        predicted: (B, N, 3) coordinates in Angstrom.
        target: (B, N, 3) coordinates in Angstrom.
        quadruplets: (Q, 4) atom chains i-j-k-l.
    """
    return (normalized_volumes(predicted, quadruplets) - normalized_volumes(target, quadruplets)).pow(2).mean()


def relative_chirality_loss(predicted: torch.Tensor, target: torch.Tensor, quadruplets: torch.Tensor) -> torch.Tensor:
    """Mean squared error of the products s_a s_b of every two normalised signed volumes; even under reflection.

    With s and t the (Q,) normalised volumes of a prediction and its target, the mean over all
    Q^2 pairs (a, b) of (s_a s_b - t_a t_b)^2 is (|s|^4 + |t|^4 - 2 (s . t)^2) / Q^2, computed in
    O(Q). It is zero exactly when s = t or s = -t (the target or its mirror image), so it sees
    which chains twist the same way and which the opposite way, not the overall hand. For a
    small error e = s - t it is about 2 |e|^2 |t|^2 / Q^2 (twice the mean squared volume times
    the chirality MSE), so its weight means about what ``--chirality-weight`` means.

    Args:
        predicted: (B, N, 3) coordinates in Angstrom.
        target: (B, N, 3) coordinates in Angstrom.
        quadruplets: (Q, 4) atom chains i-j-k-l.

    Returns:
        Scalar mean over the batch (dimensionless).
    """
    s = normalized_volumes(predicted, quadruplets)
    t = normalized_volumes(target, quadruplets)
    s_norm, t_norm, overlap = s.pow(2).sum(dim=-1), t.pow(2).sum(dim=-1), (s * t).sum(dim=-1)
    return ((s_norm.pow(2) + t_norm.pow(2) - 2.0 * overlap.pow(2)) / quadruplets.shape[0] ** 2).mean()


def steric_pairs(bonds: torch.Tensor, n_atoms: int) -> torch.Tensor:
    """(P,) int64 positions, in the order of :func:`~pairwise_vae.utils.pairwise_distances`, of the pairs
    at least ``STERIC_MIN_BONDS_APART`` bonds apart (indices, not a mask: a fixed shape for torch.compile)."""
    far = torch.from_numpy(hop_counts(bonds.long().cpu().numpy(), n_atoms) >= STERIC_MIN_BONDS_APART)
    i, j = torch.triu_indices(n_atoms, n_atoms, offset=1)
    return torch.nonzero(far[i, j]).squeeze(1)


def steric_loss(predicted: torch.Tensor, pairs: torch.Tensor, distance: float) -> torch.Tensor:
    """Squared shortfall below ``distance`` of the distances of the chosen pairs, summed per molecule.

    sum over pairs of max(0, distance - d_ij)^2, averaged over molecules (Angstrom^2): zero
    when no chosen pair is closer than ``distance``; an overlap of 0.3 A costs 0.09.

    Args:
        predicted: (B, N, 3) coordinates in Angstrom.
        pairs: (P,) positions of the chosen pairs among all N (N - 1) / 2 (:func:`steric_pairs`).
        distance: Angstrom.
    """
    return (distance - pairwise_distances(predicted)[:, pairs]).clamp(min=0.0).pow(2).sum(dim=-1).mean()


def aligned_coordinate_loss(predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared atom displacement after the best superposition by a rotation or a reflection
    (:func:`~pairwise_vae.utils.superposed_squared_deviation`), averaged over molecules (Angstrom^2).

    Invariant under rotations, reflections and translations of either argument, like the distance
    loss; unlike it, without local minima where a segment sits on the wrong side of the rest of
    the chain.

    Args:
        predicted: (B, N, 3) coordinates in Angstrom.
        target: (B, N, 3) coordinates in Angstrom.
    """
    return superposed_squared_deviation(predicted, target, allow_reflection=True).mean().to(target.dtype)


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


class MolecularVAEMSE(nn.Module):
    """Variational autoencoder of conformations of one molecule, trained on all pairwise distances.

    Args:
        config: architecture.
        atomic_numbers: (N,) atomic numbers.
        bonds: (n_bonds, 2) covalent bonds (decoder pair attributes and metrics).
        reference_positions: (N, 3) the decoder's starting conformation, Angstrom.
        parity: how :meth:`sample` and :meth:`reconstruct` orient their output (see
            :mod:`pairwise_vae.parity`); None: ``none``, the decoder's raw output.
        pair_weights: (N (N - 1) / 2,) weights of the pairs' squared errors in the loss (see
            :func:`distance_weights`); None: all 1, the plain mean squared error.
    """

    def __init__(
        self,
        config: ModelConfig,
        atomic_numbers: torch.Tensor,
        bonds: torch.Tensor,
        reference_positions: torch.Tensor,
        parity: ParityRule | None = None,
        pair_weights: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        self.config = config
        self.parity = parity if parity is not None else ParityRule()
        self.register_buffer("atomic_numbers", atomic_numbers.long().clone())
        self.register_buffer("bonds", bonds.long().clone())
        n_pairs = atomic_numbers.shape[0] * (atomic_numbers.shape[0] - 1) // 2
        pair_weights = torch.ones(n_pairs) if pair_weights is None else pair_weights
        self.register_buffer("distance_weights", pair_weights.float().clone())
        # derived from the bonds, so not stored in checkpoints
        self.register_buffer("steric_pairs", steric_pairs(bonds, atomic_numbers.shape[0]), persistent=False)
        self.encoder = ViSNetEncoderMSE(config.encoder, config.latent_dim, bonds, atomic_numbers.shape[0])
        self.decoder = EGNNDecoderMSE(config.decoder, config.latent_dim, atomic_numbers, bonds, reference_positions)

    @property
    def latent_dim(self) -> int:
        return self.config.latent_dim

    def encode(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, N, 3) Angstrom -> mu, log_var, each (B, latent_dim)."""
        return self.encoder(self.atomic_numbers, positions)

    @staticmethod
    def reparameterize(
        mu: torch.Tensor, log_var: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Draw z = mu + sigma * eps with eps ~ N(0, I); (B, D) -> (B, D)."""
        noise = torch.randn(mu.shape, device=mu.device, dtype=mu.dtype, generator=generator)
        return mu + torch.exp(0.5 * log_var) * noise

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """(B, latent_dim) -> (B, N, 3) centred coordinates in Angstrom."""
        return self.decoder(z)

    def forward(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Encode, sample z, decode. Returns (reconstruction (B, N, 3), mu, log_var)."""
        mu, log_var = self.encode(positions)
        return self.decode(self.reparameterize(mu, log_var)), mu, log_var

    def loss(self, positions: torch.Tensor, beta: float) -> LossTerms:
        """Pairwise-distance MSE + beta * KL for a batch of (B, N, 3) conformations in Angstrom."""
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
            reconstruction: (B, N, 3) decoded conformations in Angstrom.
            mu, log_var: (B, latent_dim) posterior parameters.
            beta: weight of the KL term.

        The terms are computed in the dtype of ``positions`` (float32 under bf16 autocast,
        whose outputs are bfloat16).
        """
        reconstruction, mu, log_var = (tensor.to(positions.dtype) for tensor in (reconstruction, mu, log_var))
        reconstruction_loss = pairwise_distance_loss(reconstruction, positions, self.distance_weights)
        kl = kl_divergence(mu, log_var).mean()
        chirality = relative_chirality = steric = aligned = reconstruction_loss.new_zeros(())
        if self.config.chirality_weight > 0:
            chirality = chirality_loss(reconstruction, positions, self.encoder.quadruplets)
        if self.config.relative_chirality_weight > 0:
            relative_chirality = relative_chirality_loss(reconstruction, positions, self.encoder.quadruplets)
        if self.config.steric_weight > 0:
            steric = steric_loss(reconstruction, self.steric_pairs, self.config.steric_distance)
        if self.config.aligned_weight > 0:
            aligned = aligned_coordinate_loss(reconstruction, positions)
        total = (
            reconstruction_loss
            + beta * kl
            + self.config.chirality_weight * chirality
            + self.config.relative_chirality_weight * relative_chirality
            + self.config.steric_weight * steric
            + self.config.aligned_weight * aligned
        )
        return LossTerms(
            total=total,
            reconstruction=reconstruction_loss,
            kl=kl,
            chirality=chirality,
            relative_chirality=relative_chirality,
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
