"""The molecule as a graph: bond hop counts, atom pairs some bonds apart, and edge lists for batches of
molecules that share one topology.

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


def repeat_edge_index(molecule: EdgeIndex, n_molecules: int, n_atoms: int) -> EdgeIndex:
    """One molecule's graph repeated for each molecule of a batch: node ``b * n_atoms + i`` is
    atom ``i`` of molecule ``b``, and edge ``b * E + e`` is edge ``e`` of molecule ``b``. Its
    shapes depend on the batch size only, so compiled code does not recompile for new frames.
    """
    n_edges = molecule.source.numel()
    molecules = torch.arange(n_molecules, device=molecule.source.device).view(-1, 1)

    def repeat_nodes(nodes: torch.Tensor) -> torch.Tensor:
        return (nodes.unsqueeze(0) + molecules * n_atoms).reshape(-1)

    def repeat_table(table: torch.Tensor) -> torch.Tensor:
        shifted = table.unsqueeze(0) + molecules.unsqueeze(-1) * n_edges
        padded = torch.where(table == n_edges, n_molecules * n_edges, shifted)
        return padded.reshape(n_molecules * n_atoms, table.shape[1])

    return EdgeIndex(
        repeat_nodes(molecule.source),
        repeat_nodes(molecule.target),
        repeat_table(molecule.incoming),
        repeat_table(molecule.outgoing),
    )


def bond_edges(bonds: torch.Tensor, n_molecules: int, n_atoms: int) -> torch.Tensor:
    """Both directions of every covalent bond, repeated for each molecule of a batch.

    Args:
        bonds: (n_bonds, 2) atom indices of one molecule.
        n_molecules: batch size B.
        n_atoms: atoms per molecule N.

    Returns:
        (2, B * 2 * n_bonds) long tensor of flat node indices.
    """
    both_directions = torch.cat([bonds, bonds.flip(1)], dim=0).T
    offsets = torch.arange(n_molecules, device=bonds.device) * n_atoms
    return (both_directions.unsqueeze(1) + offsets.view(1, -1, 1)).reshape(2, -1)


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


def merge_edges(*edge_sets: torch.Tensor, n_nodes: int) -> torch.Tensor:
    """Union of edge lists without duplicates, sorted by target then source.

    Args:
        edge_sets: (2, E_k) long tensors of flat node indices.
        n_nodes: total number of nodes, used to key the pairs.

    Returns:
        (2, E) long tensor.
    """
    edges = torch.cat(edge_sets, dim=1)
    keys = torch.unique(edges[1] * n_nodes + edges[0])
    return torch.stack([keys % n_nodes, keys // n_nodes])


@torch.compiler.disable  # its size depends on the data; compiled code runs around it
def bonds_and_radius_graph(bonds: torch.Tensor, positions: torch.Tensor, cutoff: float) -> EdgeIndex:
    """Both directions of every covalent bond plus all pairs closer than ``cutoff``, per molecule.

    Args:
        bonds: (n_bonds, 2) atom indices of one molecule.
        positions: (B, N, 3) coordinates in Angstrom.
        cutoff: radius in Angstrom.

    Returns:
        The union of the two edge sets on the B * N flat nodes, sorted by target then source.
    """
    n_molecules, n_atoms, _ = positions.shape
    n_nodes = n_molecules * n_atoms
    edges = merge_edges(bond_edges(bonds, n_molecules, n_atoms), radius_edges(positions, cutoff), n_nodes=n_nodes)
    return edge_index(edges, n_nodes)
