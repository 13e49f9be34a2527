"""Free bits: the KL term charges max(F, KL_i) per latent dimension; metrics keep the plain KL."""

from __future__ import annotations

import torch
from bond_helpers import make_model
from bond_vae.model.losses import free_bits_kl, kl_divergence


def test_free_bits_kl_against_hand_computation():
    # two molecules, two dimensions, unit variances: KL_i = mu_i^2 / 2, batch means 0.25 and 0
    mu = torch.tensor([[1.0, 0.0], [0.0, 0.0]], requires_grad=True)
    log_var = torch.zeros(2, 2)
    assert kl_divergence(mu, log_var).mean().item() == 0.25
    assert free_bits_kl(mu, log_var, 0.1).item() == torch.tensor(0.25 + 0.1).item()
    charged = free_bits_kl(mu, log_var, 0.5)
    assert charged.item() == 1.0
    charged.backward()
    assert mu.grad.abs().max() == 0, "below the free bits a dimension's KL has no gradient"
    mu.grad = None
    free_bits_kl(mu, log_var, 0.1).backward()
    # d/dmu of mean_b(mu_b0^2 / 2) is mu / 2 for dimension 0, nothing for dimension 1 (below 0.1)
    torch.testing.assert_close(mu.grad, torch.tensor([[0.5, 0.0], [0.0, 0.0]]))


def test_the_loss_charges_free_bits_and_reports_the_plain_kl(aib9, positions):
    model = make_model(aib9).double()
    plain = model.loss(positions, beta=1.0)
    model.config.free_bits = 100.0  # far above any dimension's KL at initialisation
    free = model.loss(positions, beta=1.0)
    torch.testing.assert_close(free.kl, plain.kl)
    torch.testing.assert_close(free.total, plain.reconstruction + 100.0 * model.latent_dim)
    assert plain.total.item() != free.total.item()
