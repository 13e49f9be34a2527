"""ViSNet encoder: conformations to a Gaussian posterior over the latent space.

Vector-scalar interactive message passing (ViS-MP) after Wang et al., "Enhancing geometric
representations for molecules with equivariant vector-scalar interactive message passing",
Nat. Commun. 15, 313 (2024). Each atom carries scalar features ``x`` (H channels) and vector
features ``vec`` (V channels, each a copy of the real spherical harmonics of degree 1..lmax;
V = H as in the paper unless ``vector_channels`` sets fewer, whose inner products then reach
the H scalar channels through a linear widening).
The runtime geometry terms of the paper enter as the inner products ``<vec1, vec2>`` of an
atom's own vectors (angular information) and of vectors rejected from the bond direction on
both ends of an edge (dihedral information). All outputs are built from inner products, so
``mu`` and ``log_var`` are invariant under rotations, translations and reflections.

The posterior means are standardised over each training batch (:class:`BatchStandardization`;
BN-VAE, Zhu et al., "A batch normalized inference network keeps the KL vanishing away", ACL
2020). Without it the means of different frames start about 1e-4 apart against a posterior
standard deviation near 0.6: z is noise, and the decoder learns the mean structure and ignores
it until the encoder's differences have grown by orders of magnitude (AIB9, 30 minutes: for
1,350 steps in one run; a 90-minute run did not leave the mean structure in 4,320). Standardised,
the means differ at order one from the first step.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from e3nn import o3
from torch import nn

from pairwise_vae.config import Retired
from pairwise_vae.model.blocks import (
    BatchStandardization,
    CosineCutoff,
    ExpNormalSmearing,
    GatedEquivariantBlock,
    VectorLayerNorm,
    gather_sources,
    gather_targets,
    sum_into_targets,
)
from pairwise_vae.model.graph import EdgeIndex, radius_graph

ENCODER_READOUTS = ("atoms", "mean")
LOG_VAR_INIT_BIAS = -1.0
LOG_VAR_INIT_WEIGHT_SCALE = 0.1


@dataclass
class EncoderConfig:
    """Encoder: ViSNet on the radius graph (lengths in Angstrom)"""

    hidden_channels: int = field(default=64, metadata={"help": "scalar channels"})
    vector_channels: int | None = field(
        default=16,
        metadata={
            "help": "vector channels (each a copy of the spherical harmonics of degree 1..lmax); fewer than the "
            "scalar channels make the encoder cheaper (the vector terms are about half its work); "
            "none: as --encoder-hidden-channels",
            "older_records": None,  # checkpoints from before the flag had as many as scalar channels
        },
    )
    num_layers: int = field(default=3, metadata={"help": "ViS-MP layers"})
    num_heads: int = field(default=8, metadata={"help": "attention heads (must divide the channels)"})
    num_rbf: int = field(default=32, metadata={"help": "exp-normal radial basis functions"})
    lmax: int = field(default=1, metadata={"help": "highest degree of the spherical harmonics", "choices": (1, 2, 3)})
    cutoff: float = field(default=4.0, metadata={"help": "radial cutoff in Angstrom"})
    # settings without a flag: the values of the checkpoints that still rebuild their models with them
    max_atomic_number: int = field(default=100, metadata={"help": "size of the element embedding table", "flag": False})
    readout: str = field(
        default="atoms",
        metadata={
            "help": "how atom features become the latent: atoms (each atom's features through their own weights, "
            "so the latent knows which residue is in which state) or mean (the mean over atoms, blind to where "
            "along the chain a feature sits; measured worse, kept for checkpoints trained with it)",
            "flag": False,
        },
    )

    standardize_means: bool = field(
        default=True,
        metadata={
            "help": "standardise the posterior means over each training batch (in evaluation by the statistics of "
            "training frames that the trainer sets)",
            "flag": False,
            "older_records": False,  # checkpoints from before it encoded without it
        },
    )

    RETIRED: ClassVar[dict[str, Retired]] = {"chiral_features": Retired("--encoder-chiral-features", False)}


class NeighborEmbedding(nn.Module):
    """Atom embedding refined by a distance-weighted sum of its neighbours' embeddings."""

    def __init__(self, hidden_channels: int, num_rbf: int, cutoff: float, max_atomic_number: int) -> None:
        super().__init__()
        self.neighbor_embedding = nn.Embedding(max_atomic_number + 1, hidden_channels)
        self.distance_projection = nn.Linear(num_rbf, hidden_channels)
        self.combine = nn.Linear(2 * hidden_channels, hidden_channels)
        self.cutoff_fn = CosineCutoff(cutoff)

    def forward(
        self,
        atomic_numbers: torch.Tensor,
        x: torch.Tensor,
        graph: EdgeIndex,
        distances: torch.Tensor,
        rbf: torch.Tensor,
    ) -> torch.Tensor:
        """Return updated (n_nodes, H) scalar features."""
        weights = self.distance_projection(rbf) * self.cutoff_fn(distances).unsqueeze(-1)
        messages = weights * gather_sources(self.neighbor_embedding(atomic_numbers), graph)
        aggregated = sum_into_targets(messages, graph)
        return self.combine(torch.cat([x, aggregated], dim=-1))


class EdgeEmbedding(nn.Module):
    """Initial edge features f_ij = (x_i + x_j) * W rbf(r_ij)."""

    def __init__(self, num_rbf: int, hidden_channels: int) -> None:
        super().__init__()
        self.rbf_projection = nn.Linear(num_rbf, hidden_channels)

    def forward(self, graph: EdgeIndex, rbf: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Return (E, H) edge features."""
        return (gather_sources(x, graph) + gather_targets(x, graph)) * self.rbf_projection(rbf)


def rejection_dot(target_vec: torch.Tensor, source_vec: torch.Tensor, direction: torch.Tensor) -> torch.Tensor:
    """Inner product of two vector features after rejecting their components along an edge.

    With u the unit edge direction, rej(a) . rej(b) = a . b - (a . u)(b . u); rejecting along
    -u gives the same vectors, so this is ViSNet's dihedral term without materialising them.

    Args:
        target_vec: (E, S, H) features of the edges' target atoms.
        source_vec: (E, S, H) features of the edges' source atoms.
        direction: (E, S) edge spherical harmonics.

    Returns:
        (E, H) invariant products.
    """
    unit = (direction / direction.norm(dim=1, keepdim=True).clamp_min(1e-9)).unsqueeze(-1)
    along_target = (target_vec * unit).sum(dim=1)
    along_source = (source_vec * unit).sum(dim=1)
    return (target_vec * source_vec).sum(dim=1) - along_target * along_source


def widening(in_channels: int, out_channels: int) -> nn.Module:
    """A linear map (no bias) from the vector channels to the scalar or edge channels, or the identity
    where their numbers are equal."""
    return nn.Identity() if in_channels == out_channels else nn.Linear(in_channels, out_channels, bias=False)


class ViSMPLayer(nn.Module):
    """One vector-scalar interactive message-passing layer.

    Scalars are updated by multi-head attention over neighbours (keys modulated by edge
    features), vectors by gated copies of neighbour vectors plus the edge direction; the
    inner products of vectors feed back into scalars and edge features.

    The first layer of an encoder receives no vector features (they start at zero), so every
    term that multiplies them vanishes: built with ``receives_vectors=False`` the layer leaves
    those terms out and has no weights for them (its vector output is the gated edge
    directions alone). It computes what the general layer computes on zero vectors.
    """

    def __init__(
        self,
        hidden_channels: int,
        num_heads: int,
        cutoff: float,
        receives_vectors: bool,
        update_edges: bool,
        vector_channels: int | None = None,
    ) -> None:
        super().__init__()
        if hidden_channels % num_heads:
            raise ValueError(f"hidden_channels={hidden_channels} is not divisible by num_heads={num_heads}")
        if update_edges and not receives_vectors:
            raise ValueError("a layer without incoming vector features has no edge update (it would be zero)")
        self.hidden_channels = hidden_channels
        self.vector_channels = vector = vector_channels or hidden_channels
        self.num_heads = num_heads
        self.head_dim = hidden_channels // num_heads
        self.receives_vectors = receives_vectors
        self.update_edges = update_edges
        self.layernorm = nn.LayerNorm(hidden_channels)
        self.act = nn.SiLU()
        self.cutoff_fn = CosineCutoff(cutoff)
        self.q_proj = nn.Linear(hidden_channels, hidden_channels)
        self.k_proj = nn.Linear(hidden_channels, hidden_channels)
        self.v_proj = nn.Linear(hidden_channels, hidden_channels)
        self.dk_proj = nn.Linear(hidden_channels, hidden_channels)
        self.dv_proj = nn.Linear(hidden_channels, hidden_channels)
        # gates of the neighbour vectors and of the edge direction; without vectors, the latter only
        self.s_proj = nn.Linear(hidden_channels, (2 if receives_vectors else 1) * vector)
        # o1 (gate of vec3), o2 (weight of <vec1, vec2>), o3; without vectors, o3 only
        self.o_proj = nn.Linear(hidden_channels, (2 * vector if receives_vectors else 0) + hidden_channels)
        if receives_vectors:
            self.vec_layernorm = VectorLayerNorm(vector)
            self.vec_proj = nn.Linear(vector, 3 * vector, bias=False)
            # vector inner products (V channels) into scalar increments (H); none when V = H
            self.dot_to_scalar = widening(vector, hidden_channels)
        if update_edges:
            self.f_proj = nn.Linear(hidden_channels, vector)
            self.w_src_proj = nn.Linear(vector, vector, bias=False)
            self.w_trg_proj = nn.Linear(vector, vector, bias=False)
            self.dot_to_edge = widening(vector, hidden_channels)

    def forward(
        self,
        x: torch.Tensor,
        vec: torch.Tensor | None,
        graph: EdgeIndex,
        distances: torch.Tensor,
        edge_sh: torch.Tensor,
        edge_features: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Return the increments (dx, dvec, df) of scalar, vector and edge features.

        Args:
            x: (n_nodes, H) scalar features.
            vec: (n_nodes, S, V) vector features, S = (lmax + 1)^2 - 1; None (zero) for a layer
                built without ``receives_vectors``.
            graph: the E edges (source and target node indices, each node's edges).
            distances: (E,) edge lengths in Angstrom.
            edge_sh: (E, S) spherical harmonics of the unit vectors from target to source.
            edge_features: (E, H) edge features.

        Returns:
            dx (n_nodes, H), dvec (n_nodes, S, V), and df (E, H), or None without ``update_edges``.
        """
        n_edges = graph.source.shape[0]
        x = self.layernorm(x)
        heads = (-1, self.num_heads, self.head_dim)

        q = self.q_proj(x).view(heads)
        k = self.k_proj(x).view(heads)
        v = self.v_proj(x).view(heads)
        dk = self.act(self.dk_proj(edge_features)).view(heads)
        dv = self.act(self.dv_proj(edge_features)).view(heads)

        attention = (gather_targets(q, graph) * gather_sources(k, graph) * dk).sum(dim=-1)
        attention = self.act(attention) * self.cutoff_fn(distances).unsqueeze(-1)
        scalar_messages = (gather_sources(v, graph) * dv * attention.unsqueeze(-1)).reshape(
            n_edges, self.hidden_channels
        )
        aggregated_x = sum_into_targets(scalar_messages, graph)
        gates = self.act(self.s_proj(scalar_messages))
        if not self.receives_vectors:
            vector_messages = gates.unsqueeze(1) * edge_sh.unsqueeze(-1)
            return self.o_proj(aggregated_x), sum_into_targets(vector_messages, graph), None

        vec = self.vec_layernorm(vec)
        vec1, vec2, vec3 = self.vec_proj(vec).split(self.vector_channels, dim=-1)
        gate_vec, gate_dir = gates.split(self.vector_channels, dim=-1)
        gated_neighbours = gather_sources(vec, graph) * gate_vec.unsqueeze(1)
        vector_messages = gated_neighbours + gate_dir.unsqueeze(1) * edge_sh.unsqueeze(-1)
        aggregated_vec = sum_into_targets(vector_messages, graph)

        o1, o2, o3 = self.o_proj(aggregated_x).split(
            [self.vector_channels, self.vector_channels, self.hidden_channels], dim=-1
        )
        dx = self.dot_to_scalar((vec1 * vec2).sum(dim=1) * o2) + o3
        dvec = vec3 * o1.unsqueeze(1) + aggregated_vec
        if not self.update_edges:
            return dx, dvec, None

        w_dot = rejection_dot(
            gather_targets(self.w_trg_proj(vec), graph), gather_sources(self.w_src_proj(vec), graph), edge_sh
        )
        df = self.dot_to_edge(self.act(self.f_proj(edge_features)) * w_dot)
        return dx, dvec, df


class ViSNetEncoderMSE(nn.Module):
    """ViSNet encoder of one molecule's conformations to a diagonal Gaussian posterior.

    Messages pass between all atoms closer than the cutoff. The log-variance head starts
    with bias -1.0 and weights scaled by 0.1, so the posterior variance starts near
    exp(-1) and does not explode early in training.

    Args:
        config: hyper-parameters.
        latent_dim: dimension D of the latent space.
        n_atoms: atoms N of the molecule (the ``atoms`` readout has weights for each).
    """

    def __init__(self, config: EncoderConfig, latent_dim: int, n_atoms: int) -> None:
        super().__init__()
        if config.readout not in ENCODER_READOUTS:
            raise ValueError(f"encoder readout must be one of {ENCODER_READOUTS}, got {config.readout!r}")
        self.config = config
        hidden = config.hidden_channels
        vector = config.vector_channels or hidden
        irreps_sh = o3.Irreps.spherical_harmonics(config.lmax)[1:]
        self.spherical_harmonics = o3.SphericalHarmonics(irreps_sh, normalize=True, normalization="component")
        self.embedding = nn.Embedding(config.max_atomic_number + 1, hidden)
        self.rbf = ExpNormalSmearing(config.cutoff, config.num_rbf)
        self.neighbor_embedding = NeighborEmbedding(hidden, config.num_rbf, config.cutoff, config.max_atomic_number)
        self.edge_embedding = EdgeEmbedding(config.num_rbf, hidden)
        self.layers = nn.ModuleList(
            ViSMPLayer(
                hidden,
                config.num_heads,
                config.cutoff,
                receives_vectors=i > 0,
                update_edges=0 < i < config.num_layers - 1,
                vector_channels=vector,
            )
            for i in range(config.num_layers)
        )
        self.out_norm = nn.LayerNorm(hidden)
        self.vec_out_norm = VectorLayerNorm(vector)
        self.output_block = GatedEquivariantBlock(hidden, hidden // 2, vector, max(vector // 2, 1))
        self.readout_block = GatedEquivariantBlock(hidden // 2, hidden, max(vector // 2, 1), scalar_only=True)
        self.atom_readout = nn.Linear(n_atoms * hidden, hidden) if config.readout == "atoms" else None
        self.mu_head = nn.Linear(hidden, latent_dim)
        self.mu_norm = BatchStandardization(latent_dim) if config.standardize_means else None
        self.log_var_head = nn.Linear(hidden, latent_dim)
        with torch.no_grad():
            self.log_var_head.weight.mul_(LOG_VAR_INIT_WEIGHT_SCALE)
            self.log_var_head.bias.fill_(LOG_VAR_INIT_BIAS)

    def forward(self, atomic_numbers: torch.Tensor, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode a batch.

        Args:
            atomic_numbers: (N,) atomic numbers shared by all molecules.
            positions: (B, N, 3) coordinates in Angstrom.

        Returns:
            mu and log_var, each (B, latent_dim), in at least float32.
        """
        pooled = self.pool(atomic_numbers, positions)
        with torch.autocast(positions.device.type, enabled=False):
            mu = self.mu_head(pooled)
            if self.mu_norm is not None:
                mu = self.mu_norm(mu)
            return mu, self.log_var_head(pooled)

    @torch.no_grad()
    def set_mean_statistics(self, atomic_numbers: torch.Tensor, batches: Iterable[torch.Tensor]) -> None:
        """Standardise the posterior means in evaluation by the statistics of the current weights' means of the
        (b, N, 3) frames of ``batches`` (Angstrom); nothing without the standardisation."""
        if self.mu_norm is not None:
            self.mu_norm.set_statistics(torch.cat([self.mu_head(self.pool(atomic_numbers, b)) for b in batches]))

    def pool(self, atomic_numbers: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """(N,) atomic numbers and (B, N, 3) Angstrom -> (B, H) invariant features of each molecule, in at least
        float32: freshly initialised, the features of different frames differ by about 1e-4 of their size, below
        bfloat16's resolution (4e-3), so the readout runs outside autocast."""
        n_molecules, n_atoms, _ = positions.shape
        graph = radius_graph(positions, self.config.cutoff)
        flat_positions = positions.reshape(-1, 3)
        flat_numbers = atomic_numbers.repeat(n_molecules)
        edge_vectors = flat_positions[graph.source] - flat_positions[graph.target]
        distances = edge_vectors.norm(dim=-1)
        edge_sh = self.spherical_harmonics(edge_vectors)
        rbf = self.rbf(distances)

        x = self.embedding(flat_numbers)
        x = self.neighbor_embedding(flat_numbers, x, graph, distances, rbf)
        edge_features = self.edge_embedding(graph, rbf, x)
        vec = None  # zero: the first layer is built without the terms that read it
        for layer in self.layers:
            dx, dvec, df = layer(x, vec, graph, distances, edge_sh, edge_features)
            x, vec = x + dx, dvec if vec is None else vec + dvec
            if df is not None:
                edge_features = edge_features + df

        x, vec = self.output_block(self.out_norm(x), self.vec_out_norm(vec))
        x, _ = self.readout_block(nn.functional.silu(x), vec)
        with torch.autocast(positions.device.type, enabled=False):
            x = x.to(torch.promote_types(x.dtype, torch.float32))
            if self.atom_readout is None:
                return x.view(n_molecules, n_atoms, -1).mean(dim=1)
            return self.atom_readout(x.view(n_molecules, -1))
