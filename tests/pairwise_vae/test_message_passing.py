"""Message passing through an EdgeIndex: each node's edge tables, and gathers and sums over edges
that must equal plain indexing and index_add, values and gradients, on either path."""

from __future__ import annotations

import pytest
import torch
from pairwise_vae.model.blocks import gather_sources, gather_targets, sum_into_targets
from pairwise_vae.model.graph import edge_index, radius_edges


def random_edges(n_nodes: int, n_edges: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    # node n_nodes - 1 is left without edges: its rows hold padding only
    return torch.randint(0, n_nodes - 1, (2, n_edges), generator=generator)


def test_edge_tables_list_each_nodes_edges_then_padding():
    edges = random_edges(n_nodes=7, n_edges=30, seed=0)
    graph = edge_index(edges, n_nodes=7)
    for table, ends in ((graph.incoming, edges[1]), (graph.outgoing, edges[0])):
        assert table.shape[0] == 7
        assert table.shape[1] == int(torch.bincount(ends, minlength=7).max())
        for node in range(7):
            listed = table[node][table[node] != 30].tolist()
            assert listed == torch.nonzero(ends == node).flatten().tolist()
        assert (table[6] == 30).all()


@pytest.mark.parametrize("through_tables", [True, False], ids=["tables (compiled code)", "indexing (eager)"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_gathers_and_sums_equal_indexing_and_index_add_with_gradients(dtype, through_tables, monkeypatch):
    monkeypatch.setattr("pairwise_vae.model.blocks.gathers_through_tables", lambda: through_tables)
    edges = random_edges(n_nodes=9, n_edges=40, seed=1)
    graph = edge_index(edges, n_nodes=9)
    generator = torch.Generator().manual_seed(2)
    features = torch.randn(9, 3, 5, generator=generator).requires_grad_()
    weights = torch.randn(40, 3, 5, generator=generator)

    def messages_by_graph():
        return gather_sources(features, graph) * gather_targets(features, graph).to(dtype) * weights

    def messages_by_indexing():
        return features[edges[0]] * features[edges[1]].to(dtype) * weights

    outputs, gradients = [], []
    for messages, total in (
        (messages_by_graph, lambda m: sum_into_targets(m, graph)),
        (messages_by_indexing, lambda m: torch.zeros(9, 3, 5).index_add_(0, edges[1], m.float())),
    ):
        features.grad = None
        summed = total(messages())
        summed.pow(2).sum().backward()
        outputs.append(summed)
        gradients.append(features.grad)
    assert outputs[0].dtype == torch.float32, "sums are float32 also for bfloat16 messages"
    assert torch.allclose(outputs[0], outputs[1], atol=1e-5, rtol=1e-5)
    assert torch.allclose(gradients[0], gradients[1], atol=1e-4, rtol=1e-3)


def test_radius_graph_tables_cover_every_edge_once(aib9):
    positions = torch.from_numpy(aib9.coords[:2])
    edges = radius_edges(positions, cutoff=5.0)
    graph = edge_index(edges, n_nodes=2 * 58)
    listed = graph.incoming[graph.incoming != edges.shape[1]]
    assert sorted(listed.tolist()) == list(range(edges.shape[1]))
