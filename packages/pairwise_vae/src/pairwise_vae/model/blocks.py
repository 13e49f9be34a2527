"""Generic building blocks of equivariant message passing: gathers and sums over edges, radial
bases, cutoffs, norms and gates.

Nothing here knows about ViSNet's layers (``encoder.py``); these are the pieces such models
share (as torchmd-net's ``models/utils.py`` and MACE's ``modules/blocks.py`` hold them).
Lengths are in Angstrom. Vector features are (n_nodes, S, H): S spherical-harmonic
components of degree 1..lmax, H channels.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from pairwise_vae.model.graph import EdgeIndex


def gathers_through_tables() -> bool:
    """Whether sums over edges and their gradients run as gathers through the graph's tables:
    in compiled code, where they replace scatters with atomic additions; eager code uses
    ATen's indexing and ``index_add``, which are faster uncompiled. Both give the same sums."""
    return torch.compiler.is_compiling()


def _summation_dtype(dtype: torch.dtype) -> torch.dtype:
    """Sums over edges run in at least float32 (bfloat16 messages under autocast included)."""
    return torch.promote_types(dtype, torch.float32)


def _sum_over_table(values: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """Sum the rows of ``values`` listed in each row of ``table`` (entries equal to len(values)
    add nothing), in at least float32: (E, ...) and (n, k) -> (n, ...)."""
    dtype = _summation_dtype(values.dtype)
    padded = torch.cat([values.to(dtype), values.new_zeros((1, *values.shape[1:]), dtype=dtype)])
    return padded[table].sum(dim=1)


class _GatherNodes(torch.autograd.Function):
    """``features[nodes]`` whose gradient sums over each node's edges with a gather, not a scatter."""

    @staticmethod
    def forward(ctx, features: torch.Tensor, nodes: torch.Tensor, edges_at_node: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(edges_at_node)
        ctx.features_dtype = features.dtype
        return features[nodes]

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        (edges_at_node,) = ctx.saved_tensors
        return _sum_over_table(grad, edges_at_node).to(ctx.features_dtype), None, None


class _SumIntoNodes(torch.autograd.Function):
    """Sum of edge messages at each node by a gather; its gradient is a gather too."""

    @staticmethod
    def forward(ctx, messages: torch.Tensor, edges_at_node: torch.Tensor, nodes: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(nodes)
        ctx.messages_dtype = messages.dtype
        return _sum_over_table(messages, edges_at_node)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        (nodes,) = ctx.saved_tensors
        return grad[nodes].to(ctx.messages_dtype), None, None


def gather_sources(features: torch.Tensor, graph: EdgeIndex) -> torch.Tensor:
    """(n_nodes, ...) node features -> (E, ...) the features of each edge's source node."""
    if not gathers_through_tables():
        return features[graph.source]
    return _GatherNodes.apply(features, graph.source, graph.outgoing)


def gather_targets(features: torch.Tensor, graph: EdgeIndex) -> torch.Tensor:
    """(n_nodes, ...) node features -> (E, ...) the features of each edge's target node."""
    if not gathers_through_tables():
        return features[graph.target]
    return _GatherNodes.apply(features, graph.target, graph.incoming)


def sum_into_targets(messages: torch.Tensor, graph: EdgeIndex) -> torch.Tensor:
    """Sum edge messages into their target nodes, in at least float32 precision.

    Under autocast the messages may be bfloat16; they are summed in float32. Float64
    messages stay float64. In compiled code forward and backward are gathers through the
    graph's tables (see :class:`~pairwise_vae.model.graph.EdgeIndex`).

    Args:
        messages: (E, ...) per-edge features.
        graph: the edges, with each node's incoming edges.

    Returns:
        (n_nodes, ...) sums, float32 or float64.
    """
    if not gathers_through_tables():
        dtype = _summation_dtype(messages.dtype)
        sums = messages.new_zeros((graph.incoming.shape[0], *messages.shape[1:]), dtype=dtype)
        return sums.index_add_(0, graph.target, messages.to(dtype))
    return _SumIntoNodes.apply(messages, graph.incoming, graph.target)


class CosineCutoff(nn.Module):
    """Smooth switch 0.5 (cos(pi r / r_c) + 1) that reaches zero at ``cutoff``."""

    def __init__(self, cutoff: float) -> None:
        super().__init__()
        self.cutoff = cutoff

    def forward(self, distances: torch.Tensor) -> torch.Tensor:
        """(E,) distances in Angstrom -> (E,) weights in [0, 1]."""
        weights = 0.5 * (torch.cos(distances * math.pi / self.cutoff) + 1.0)
        return weights * (distances < self.cutoff)


class ExpNormalSmearing(nn.Module):
    """Exponential-normal radial basis functions (PhysNet), with trainable centres and widths."""

    def __init__(self, cutoff: float, num_rbf: int) -> None:
        super().__init__()
        self.cutoff_fn = CosineCutoff(cutoff)
        self.alpha = 5.0 / cutoff
        start = math.exp(-cutoff)
        self.means = nn.Parameter(torch.linspace(start, 1.0, num_rbf))
        self.betas = nn.Parameter(torch.full((num_rbf,), (2.0 / num_rbf * (1.0 - start)) ** -2))

    def forward(self, distances: torch.Tensor) -> torch.Tensor:
        """(E,) distances in Angstrom -> (E, num_rbf) features."""
        distances = distances.unsqueeze(-1)
        return self.cutoff_fn(distances) * torch.exp(
            -self.betas * (torch.exp(-self.alpha * distances) - self.means) ** 2
        )


class VectorLayerNorm(nn.Module):
    """Scale-only normalisation of vector features by their RMS norm over channels.

    Dividing every component by one invariant number keeps the features equivariant.
    """

    def __init__(self, hidden_channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_channels))
        self.eps = eps

    def forward(self, vec: torch.Tensor) -> torch.Tensor:
        """(n_nodes, S, H) -> (n_nodes, S, H)."""
        norm = vec.pow(2).sum(dim=1).mean(dim=-1, keepdim=True).add(self.eps).sqrt()
        return vec / norm.unsqueeze(1) * self.weight


class GatedEquivariantBlock(nn.Module):
    """Gated equivariant block (Schuett et al. 2021): mixes vector norms into scalars and
    gates the vectors with scalars.

    Vector channels default to the scalar channels (in and out). With ``scalar_only`` (the last
    block of a readout) it returns only the scalars, and has no weights that would produce the
    unused vectors.
    """

    def __init__(
        self,
        hidden_channels: int,
        out_channels: int,
        vector_channels: int | None = None,
        out_vector_channels: int | None = None,
        scalar_only: bool = False,
    ) -> None:
        super().__init__()
        vector_channels = vector_channels or hidden_channels
        self.out_channels = out_channels
        self.out_vector_channels = out_vector_channels or out_channels
        self.vec1_proj = nn.Linear(vector_channels, vector_channels, bias=False)
        self.vec2_proj = None if scalar_only else nn.Linear(vector_channels, self.out_vector_channels, bias=False)
        self.update_net = nn.Sequential(
            nn.Linear(hidden_channels + vector_channels, hidden_channels),
            nn.SiLU(),
            nn.Linear(hidden_channels, out_channels + (0 if scalar_only else self.out_vector_channels)),
        )

    def forward(self, x: torch.Tensor, vec: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(n_nodes, H) scalars and (n_nodes, S, V) vectors -> (n_nodes, out) scalars and
        (n_nodes, S, out_vector) vectors (None when ``scalar_only``)."""
        vec_norm = (self.vec1_proj(vec).pow(2).sum(dim=1) + 1e-8).sqrt()
        update = self.update_net(torch.cat([x, vec_norm], dim=-1))
        if self.vec2_proj is None:
            return update, None
        scalars, gates = update.split([self.out_channels, self.out_vector_channels], dim=-1)
        return scalars, gates.unsqueeze(1) * self.vec2_proj(vec)


# variance added before the square root: far below that of freshly initialised posterior means (about 1e-8)
STANDARDIZATION_EPS = 1e-12


class BatchStandardization(nn.BatchNorm1d):
    """Batch normalisation without a learned scale or shift: (B, D) -> (B, D), in at least float32.

    In training each of the D dimensions is standardised over the batch; in evaluation, and in
    training on a batch of a single molecule, with the statistics that :meth:`set_statistics`
    last set, so that an output depends on its own input alone. Training batches do not update
    them (momentum 0): running averages lag behind weights that change fast, and would differ
    between data-parallel processes.
    """

    def __init__(self, num_features: int) -> None:
        super().__init__(num_features, eps=STANDARDIZATION_EPS, momentum=0.0, affine=False)

    @torch.no_grad()
    def set_statistics(self, values: torch.Tensor) -> None:
        """Standardise by the mean and variance over the F rows of (F, D) ``values`` (the variance divided by F,
        as a training batch is standardised)."""
        self.running_mean.copy_(values.mean(dim=0))
        self.running_var.copy_(values.var(dim=0, unbiased=False))

    def forward(self, values: torch.Tensor) -> torch.Tensor:
        batch_statistics = self.training and values.shape[0] > 1
        return nn.functional.batch_norm(
            values.to(_summation_dtype(values.dtype)),
            self.running_mean,
            self.running_var,
            None,
            None,
            batch_statistics,
            self.momentum,
            self.eps,
        )
