"""EGNN decoder: a latent vector to 3D coordinates of all atoms.

E(n)-equivariant graph neural network layers (Satorras, Hoogeboom & Welling, ICML 2021) on
the complete graph of one molecule, written densely: every molecule of a batch has the same
N atoms, so features are (B, N, H) and pair features (B, N, N, C), with C pair channels
(narrower than H to save time and memory). Decoding starts from one
fixed reference conformation (a buffer of the model, chosen from the training data), so it
is deterministic for a given z. A small MLP first moves every atom by a displacement computed
from z alone (the coarse shape: a helix of the other hand or an unfolded chain is several
Angstrom away from the starting frame), then the EGNN layers refine the structure
equivariantly; each atom's starting features are its embeddings plus a linear map of z, by
default a map of its own for each atom (``latent_input``), so that every atom reads from z
what concerns it. A generic 3D starting geometry matters: EGNN moves atoms
only along inter-atomic vectors, so a planar or linear start could never leave its plane
or line, and identical start positions would never separate. For a chiral molecule a last,
parameter-free layer gives each stereocentre of the output the configuration that the training
data give it (:func:`~bond_vae.model.parity.place_stereocentres`).

Features stay of order one through the layers (so bfloat16 autocast keeps their precision):
node features are layer-normalised before each layer reads them, distances enter as Gaussian
basis functions of d (not raw d^2, which reaches hundreds of A^2), and messages are averaged
over the N - 1 neighbours rather than summed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from bond_vae.bond_graph import hop_counts
from bond_vae.model.parity import place_stereocentres, stereocentre_moves

LATENT_INPUTS = ("atoms", "shared")


@dataclass
class DecoderConfig:
    """Decoder: EGNN"""

    hidden_channels: int = field(default=64, metadata={"help": "node channels"})
    pair_channels: int | None = field(
        default=16,
        metadata={
            "help": "channels of the pair messages (the (B, N, N, C) tensors that dominate the decoder's time "
            "and memory; at the original's settings 16 trains 1.4x as fast as 32 on a 2-core Xeon, and the "
            "bond-length defaults keep their quality, docs/results.md); none: as --decoder-hidden-channels"
        },
    )
    num_layers: int = field(default=4, metadata={"help": "EGNN layers"})
    # settings without a flag: internal sizes nobody tunes, and the values of the checkpoints that still
    # rebuild their models with them
    distance_features: int = field(
        default=16,
        metadata={"help": "Gaussian basis functions of the interatomic distance in the messages", "flag": False},
    )
    distance_range: float = field(
        default=20.0,
        metadata={"help": "the distance basis is spread over 0 to this distance (Angstrom)", "flag": False},
    )
    coarse_channels: int = field(
        default=256,
        metadata={
            "help": "width of the MLP that maps z to a coarse displacement of every atom from the starting "
            "conformation, which the EGNN layers then refine; 0: none (the layers move the atoms alone)",
            "flag": False,
        },
    )
    max_topological_distance: int = field(
        default=8, metadata={"help": "bond-path lengths above this share one pair embedding", "flag": False}
    )
    coordinate_range: float = field(
        default=5.0, metadata={"help": "bound of the per-pair coordinate weight (tanh x range)", "flag": False}
    )
    latent_input: str = field(
        default="atoms",
        metadata={
            "help": "how z enters the atom features: atoms (a linear map of z of its own for each atom, so each "
            "atom reads from z what concerns it) or shared (one map for all atoms, added to their embeddings; "
            "measured worse, kept for checkpoints trained with it)",
            "flag": False,
        },
    )
    max_atomic_number: int = field(default=100, metadata={"help": "size of the element embedding table", "flag": False})
    place_stereocentres: bool = field(
        default=True,
        metadata={
            "help": "for a chiral molecule (--parity chiral), a last layer of the decoder's output (samples, "
            "reconstructions; not the training steps, whose losses teach the EGNN itself to keep each centre) "
            "inverts each stereocentre that the EGNN gave the other configuration than the training data (in the "
            "hand of most centres) by turning its small branches (an alanine's CB) to the other side, keeping "
            "every bond and the backbone: no output then holds an inverted centre (A4GA4: about 0.5 %% of the "
            "EGNN's samples hold one; the report shows them before the layer)",
            "older_records": False,  # checkpoints from before the layer decoded without it
        },
    )


class DistanceBasis(nn.Module):
    """Gaussian functions of a distance, centred evenly on [0, ``distance_range``] Angstrom, each as
    wide as the spacing of the centres: (..., 1) distances -> (..., K) features in [0, 1]."""

    def __init__(self, num_features: int, distance_range: float) -> None:
        super().__init__()
        self.register_buffer("centres", torch.linspace(0.0, distance_range, num_features), persistent=False)
        self.inverse_width = (num_features - 1) / distance_range

    def forward(self, distance: torch.Tensor) -> torch.Tensor:
        return torch.exp(-0.5 * ((distance - self.centres) * self.inverse_width).pow(2))


class EGNNLayer(nn.Module):
    """One E(n)-equivariant layer on the complete graph of each molecule.

    g_i = LayerNorm(h_i)
    m_ij = phi_e(g_i, g_j, rbf(|x_i - x_j|), a_ij)
    x_i <- x_i + mean_j (x_i - x_j) / (|x_i - x_j| + 1) * phi_x(m_ij)
    h_i <- h_i + phi_h(g_i, mean_j m_ij)

    ``rbf`` are the decoder's Gaussian distance features and ``a_ij`` a per-pair edge attribute
    (the embedded bond hop count). The coordinate weight is bounded by ``coordinate_range *
    tanh``, and the last layer of phi_x starts near zero so that early training does not fling
    atoms apart. The last layer of a decoder has no node update (``update_nodes=False``):
    nothing would read its output.
    """

    def __init__(
        self,
        hidden_channels: int,
        pair_channels: int,
        distance_features: int,
        coordinate_range: float,
        update_nodes: bool = True,
    ) -> None:
        super().__init__()
        self.coordinate_range = coordinate_range
        self.node_norm = nn.LayerNorm(hidden_channels)
        self.target_proj = nn.Linear(hidden_channels, pair_channels)
        self.source_proj = nn.Linear(hidden_channels, pair_channels, bias=False)
        self.distance_proj = nn.Linear(distance_features, pair_channels, bias=False)
        self.edge_mlp = nn.Sequential(nn.SiLU(), nn.Linear(pair_channels, pair_channels), nn.SiLU())
        last = nn.Linear(pair_channels, 1, bias=False)
        nn.init.xavier_uniform_(last.weight, gain=0.001)
        self.coordinate_mlp = nn.Sequential(nn.Linear(pair_channels, pair_channels), nn.SiLU(), last)
        self.node_mlp = (
            nn.Sequential(
                nn.Linear(hidden_channels + pair_channels, hidden_channels),
                nn.SiLU(),
                nn.Linear(hidden_channels, hidden_channels),
            )
            if update_nodes
            else None
        )

    def forward(
        self,
        h: torch.Tensor,
        x: torch.Tensor,
        pair_attributes: torch.Tensor,
        pair_mask: torch.Tensor,
        distance_basis: DistanceBasis,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Update node features and coordinates.

        Args:
            h: (B, N, H) node features.
            x: (B, N, 3) coordinates in Angstrom.
            pair_attributes: (N, N, C) edge attributes shared by the batch.
            pair_mask: (N, N) 1.0 for edges (i != j), 0.0 on the diagonal.
            distance_basis: expands (B, N, N, 1) distances into (B, N, N, K) features.

        Returns:
            h and x of the same shapes.
        """
        g = self.node_norm(h)
        relative = x.unsqueeze(2) - x.unsqueeze(1)
        distance = (relative.pow(2).sum(dim=-1, keepdim=True) + 1e-8).sqrt()
        pre_activation = (
            self.target_proj(g).unsqueeze(2)
            + self.source_proj(g).unsqueeze(1)
            + self.distance_proj(distance_basis(distance))
            + pair_attributes
        )
        messages = self.edge_mlp(pre_activation) * pair_mask.unsqueeze(-1)
        n_neighbours = pair_mask.sum(dim=-1).clamp_min(1.0).view(1, -1, 1)

        weights = self.coordinate_range * torch.tanh(self.coordinate_mlp(messages)) * pair_mask.unsqueeze(-1)
        x = x + (relative / (distance + 1.0) * weights).sum(dim=2) / n_neighbours

        if self.node_mlp is not None:
            h = h + self.node_mlp(torch.cat([g, messages.sum(dim=2) / n_neighbours], dim=-1))
        return h, x


class EGNNDecoder(nn.Module):
    """Decode latent vectors into coordinates of one molecule with a fixed topology.

    Args:
        config: hyper-parameters.
        latent_dim: dimension D of the latent space.
        atomic_numbers: (N,) atomic numbers.
        bonds: (n_bonds, 2) covalent bonds; their hop counts are the pair attribute.
        reference_positions: (N, 3) starting conformation in Angstrom (centred here).
        stereocentres: a chiral molecule's (S, 4) centres and (S,) signs (:class:`~bond_vae.model.parity.
            ParityRule`), which the last layer places (``config.place_stereocentres``); None: no such layer.
    """

    def __init__(
        self,
        config: DecoderConfig,
        latent_dim: int,
        atomic_numbers: torch.Tensor,
        bonds: torch.Tensor,
        reference_positions: torch.Tensor,
        stereocentres: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> None:
        super().__init__()
        if config.latent_input not in LATENT_INPUTS:
            raise ValueError(f"decoder latent input must be one of {LATENT_INPUTS}, got {config.latent_input!r}")
        self.config = config
        n_atoms = atomic_numbers.shape[0]
        hidden = config.hidden_channels
        pair = config.pair_channels or hidden
        self.register_buffer("atomic_numbers", atomic_numbers.long().clone())
        self.register_buffer("reference_positions", reference_positions - reference_positions.mean(dim=0))
        hops = hop_counts(bonds.long().cpu().numpy(), n_atoms).clip(max=config.max_topological_distance)
        self.register_buffer("hop_counts", torch.from_numpy(hops))  # (N, N) bonds between atoms, clipped
        self.register_buffer("pair_mask", 1.0 - torch.eye(n_atoms))
        # derived from the parity rule, which the checkpoint records, so not stored with the weights
        placed = config.place_stereocentres and stereocentres is not None and len(stereocentres[0]) > 0
        centres, signs = (stereocentres[0].long().clone(), stereocentres[1].float().clone()) if placed else (None, None)
        axes, branches = stereocentre_moves(bonds.long().cpu().numpy(), n_atoms, centres) if placed else (None, None)
        self.register_buffer("centres", centres, persistent=False)  # (S, 4) or None: no stereocentre layer
        self.register_buffer("centre_signs", signs, persistent=False)  # (S,)
        self.register_buffer("centre_axes", axes, persistent=False)  # (S, 2)
        self.register_buffer("centre_branches", branches, persistent=False)  # (S, N)
        self.element_embedding = nn.Embedding(config.max_atomic_number + 1, hidden)
        self.atom_embedding = nn.Embedding(n_atoms, hidden)
        self.latent_proj = nn.Linear(latent_dim, (n_atoms if config.latent_input == "atoms" else 1) * hidden)
        self.coarse_displacement = None
        if config.coarse_channels > 0:
            last = nn.Linear(config.coarse_channels, 3 * n_atoms)
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)  # starts as the fixed starting conformation
            self.coarse_displacement = nn.Sequential(
                nn.Linear(latent_dim, config.coarse_channels),
                nn.SiLU(),
                nn.Linear(config.coarse_channels, config.coarse_channels),
                nn.SiLU(),
                last,
            )
        self.topology_embedding = nn.Embedding(config.max_topological_distance + 1, pair)
        self.distance_basis = DistanceBasis(config.distance_features, config.distance_range)
        self.layers = nn.ModuleList(
            EGNNLayer(
                hidden, pair, config.distance_features, config.coordinate_range, update_nodes=i < config.num_layers - 1
            )
            for i in range(config.num_layers)
        )

    @property
    def n_atoms(self) -> int:
        return self.atomic_numbers.shape[0]

    def forward(self, z: torch.Tensor, stereocentre_layer: bool = True) -> torch.Tensor:
        """(B, D) latent vectors -> (B, N, 3) centred coordinates in Angstrom. The stereocentre layer acts in
        evaluation mode only (``stereocentre_layer=False`` skips it there too, to see how often it acts): trained
        through it, the EGNN stops keeping the centres itself, so that the hand the layer reads off them is
        noise, and learns slower (A4GA4, conformations recipe, 30 minutes: validation Kabsch RMSD 1.59 against
        1.42 A)."""
        atom_features = self.element_embedding(self.atomic_numbers) + self.atom_embedding.weight
        # (B, N, H) with a map per atom, (B, 1, H) shared by all atoms
        latent_features = self.latent_proj(z).view(z.shape[0], -1, self.config.hidden_channels)
        h = atom_features.unsqueeze(0) + latent_features
        x = self.reference_positions.expand(z.shape[0], -1, -1)
        if self.coarse_displacement is not None:
            x = x + self.coarse_displacement(z).view(z.shape[0], self.n_atoms, 3).float()
        pair_attributes = self.topology_embedding(self.hop_counts)
        for layer in self.layers:
            h, x = layer(h, x, pair_attributes, self.pair_mask, self.distance_basis)
        if self.centres is not None and stereocentre_layer and not self.training:
            x = place_stereocentres(x, self.centres, self.centre_signs, self.centre_axes, self.centre_branches)
        return x - x.mean(dim=1, keepdim=True)
