"""Generic building blocks of equivariant message passing: radial bases, cutoffs, norms and gates.

Nothing here knows about ViSNet's layers (``encoder.py``); these are the pieces such models
share (as torchmd-net's ``models/utils.py`` and MACE's ``modules/blocks.py`` hold them).
Lengths are in Angstrom. Vector features are (n_nodes, S, H): S spherical-harmonic
components of degree 1..lmax, H channels.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def sum_into_targets(messages: torch.Tensor, target: torch.Tensor, n_nodes: int) -> torch.Tensor:
    """Sum edge messages into their target nodes, in at least float32 precision.

    Under autocast the messages may be bfloat16; they are summed in float32. Float64
    messages stay float64.

    Args:
        messages: (E, ...) per-edge features.
        target: (E,) target node of each edge.
        n_nodes: number of nodes.

    Returns:
        (n_nodes, ...) sums, float32 or float64.
    """
    dtype = torch.promote_types(messages.dtype, torch.float32)
    sums = messages.new_zeros((n_nodes, *messages.shape[1:]), dtype=dtype)
    return sums.index_add_(0, target, messages.to(dtype))


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

    With ``scalar_only`` (the last block of a readout) it returns only the scalars, and has no
    weights that would produce the unused vectors.
    """

    def __init__(self, hidden_channels: int, out_channels: int, scalar_only: bool = False) -> None:
        super().__init__()
        self.out_channels = out_channels
        self.vec1_proj = nn.Linear(hidden_channels, hidden_channels, bias=False)
        self.vec2_proj = None if scalar_only else nn.Linear(hidden_channels, out_channels, bias=False)
        self.update_net = nn.Sequential(
            nn.Linear(2 * hidden_channels, hidden_channels),
            nn.SiLU(),
            nn.Linear(hidden_channels, out_channels if scalar_only else 2 * out_channels),
        )

    def forward(self, x: torch.Tensor, vec: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(n_nodes, H) scalars and (n_nodes, S, H) vectors -> (n_nodes, out) scalars and
        (n_nodes, S, out) vectors (None when ``scalar_only``)."""
        vec_norm = (self.vec1_proj(vec).pow(2).sum(dim=1) + 1e-8).sqrt()
        update = self.update_net(torch.cat([x, vec_norm], dim=-1))
        if self.vec2_proj is None:
            return update, None
        scalars, gates = update.split(self.out_channels, dim=-1)
        return scalars, gates.unsqueeze(1) * self.vec2_proj(vec)
