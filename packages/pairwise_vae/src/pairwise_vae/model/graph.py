"""The molecule as a graph: bond hop counts, and radius-graph edge lists for batches of molecules
that share one topology.

Every molecule in a batch has the same ``n_atoms`` atoms, so a batch of ``B`` molecules is a
graph of ``B * n_atoms`` nodes: node ``b * n_atoms + i`` is atom ``i`` of molecule ``b``.
Edges are directed pairs ``(source, target)``; messages flow from source to target.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

try:
    import torch_cluster
except ImportError:  # pragma: no cover - torch-cluster is a declared dependency
    torch_cluster = None


class EdgeIndex(NamedTuple):
    """Directed edges of a graph, with each node's incoming and outgoing edges listed.

    ``incoming[n]`` holds the indices of the edges whose target is node ``n`` and ``outgoing[n]``
    those whose source is ``n``, each row padded with E (one past the last edge) to the largest
    degree. With them a sum over a node's edges is a gather (``blocks.sum_into_targets``), which
    compiled CPU code runs much faster than a scatter with atomic additions, in both directions.
    """

    source: torch.Tensor  # (E,) long
    target: torch.Tensor  # (E,) long
    incoming: torch.Tensor  # (n_nodes, largest in-degree) long, padded with E
    outgoing: torch.Tensor  # (n_nodes, largest out-degree) long, padded with E


def node_edge_table(nodes: torch.Tensor, n_nodes: int) -> torch.Tensor:
    """The edges at each node, as rows of a table padded with E.

    Args:
        nodes: (E,) long, the node at one end of each edge (its source or its target).
        n_nodes: number of nodes.

    Returns:
        (n_nodes, largest degree) long tensor: the indices of the edges at each node, in
        increasing order, then E.
    """
    n_edges = nodes.numel()
    order = torch.argsort(nodes, stable=True)
    degree = torch.bincount(nodes, minlength=n_nodes)
    first_slot = torch.cumsum(degree, dim=0) - degree
    sorted_nodes = nodes[order]
    slots = torch.arange(n_edges, device=nodes.device) - first_slot[sorted_nodes]
    width = int(degree.max()) if n_edges else 0
    table = torch.full((n_nodes, width), n_edges, dtype=torch.long, device=nodes.device)
    table[sorted_nodes, slots] = order
    return table


def edge_index(edges: torch.Tensor, n_nodes: int) -> EdgeIndex:
    """(2, E) source and target node indices -> their :class:`EdgeIndex` on ``n_nodes`` nodes."""
    source, target = edges
    return EdgeIndex(source, target, node_edge_table(target, n_nodes), node_edge_table(source, n_nodes))


def _torch_cluster_supports(device: torch.device) -> bool:
    if torch_cluster is None:
        return False
    if device.type == "cpu":
        return True
    return device.type == "cuda" and torch.ops.torch_cluster.cuda_version() != -1


@torch.compiler.disable  # its output size depends on the data; compiled code runs around it
def radius_edges(positions: torch.Tensor, cutoff: float) -> torch.Tensor:
    """All ordered pairs of distinct atoms of the same molecule closer than ``cutoff``.

    Uses torch-cluster's ``radius_graph`` where it was built for the tensor's device, and an
    exact dense search otherwise (a torch-cluster built without CUDA cannot handle CUDA
    tensors). The neighbour cap is lifted, so no neighbour is ever dropped silently.

    Args:
        positions: (B, N, 3) coordinates in Angstrom.
        cutoff: radius in Angstrom.

    Returns:
        (2, E) long tensor of flat node indices, sorted by target then source.
    """
    n_molecules, n_atoms, _ = positions.shape
    if _torch_cluster_supports(positions.device):
        batch = torch.arange(n_molecules, device=positions.device).repeat_interleave(n_atoms)
        edges = torch_cluster.radius_graph(
            positions.reshape(-1, 3), r=cutoff, batch=batch, loop=False, max_num_neighbors=n_atoms
        )
    else:
        distances = torch.cdist(positions, positions)
        close = distances < cutoff
        close &= ~torch.eye(n_atoms, dtype=torch.bool, device=positions.device)
        molecule, target, source = close.nonzero(as_tuple=True)
        edges = torch.stack([molecule * n_atoms + source, molecule * n_atoms + target])
    order = torch.argsort(edges[1] * (n_molecules * n_atoms) + edges[0])
    return edges[:, order]


@torch.compiler.disable  # its size depends on the data; compiled code runs around it
def radius_graph(positions: torch.Tensor, cutoff: float) -> EdgeIndex:
    """:func:`radius_edges` as an :class:`EdgeIndex` on the B * N flat nodes.

    Args:
        positions: (B, N, 3) coordinates in Angstrom.
        cutoff: radius in Angstrom.
    """
    n_molecules, n_atoms, _ = positions.shape
    return edge_index(radius_edges(positions, cutoff), n_molecules * n_atoms)
