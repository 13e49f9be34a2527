"""L-BFGS over a batch of independent problems, each minimised on its own.

One optimiser over the summed objective of a batch (``torch.optim.LBFGS`` on the sum) couples
the problems: they share the step length, the curvature history and the stopping test, so each
result depends on which others were in its batch. Here every problem has its own history,
Hessian scale, backtracking (Armijo) line search and stopping test, and the batch only
vectorises the arithmetic: a problem's result is the same alone or among thousands (to
rounding), at the cost of one objective evaluation per problem and line-search trial. Step
lengths and stopping tests use Euclidean norms, so for an objective invariant under rotations the
minimiser commutes with them.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

HISTORY = 10  # curvature pairs kept per problem
GRADIENT_TOLERANCE = 1e-7  # a problem stops when the norm of its gradient is at most this
CHANGE_TOLERANCE = 1e-9  # ... or when the norm of its step or its change of objective is at most this
ARMIJO = 1e-4  # sufficient-decrease constant of the line search
HALVINGS = 30  # step halvings a line search may try before the problem stops where it is

Objective = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def value_and_gradient(objective: Objective, x: torch.Tensor, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Objective values (b,) and gradients (b, *x.shape[1:]) of problems ``rows`` at ``x``. The problems are
    independent, so the gradient of the sum of their values is each one's own gradient."""
    with torch.enable_grad():
        variable = x.detach().requires_grad_()
        values = objective(variable, rows)
        (gradient,) = torch.autograd.grad(values.sum(), variable)
    return values.detach(), gradient


def two_loop_direction(
    gradient: torch.Tensor,
    steps: torch.Tensor,
    changes: torch.Tensor,
    rho: torch.Tensor,
    scale: torch.Tensor,
    newest: int,
) -> torch.Tensor:
    """-H g by the L-BFGS two-loop recursion, per problem.

    Args:
        gradient: (b, D).
        steps, changes: (HISTORY, b, D) curvature pairs s and y (zero where a problem has none).
        rho: (HISTORY, b), 1 / (y . s), zero for an empty pair (which then changes nothing).
        scale: (b,) initial inverse-Hessian scale (y . s / y . y of the newest pair).
        newest: slot of the newest pair.
    """
    order = [(newest - k) % HISTORY for k in range(HISTORY)]
    q = gradient.clone()
    alphas = {}
    for slot in order:
        alphas[slot] = rho[slot] * (steps[slot] * q).sum(dim=1)
        q -= alphas[slot].unsqueeze(1) * changes[slot]
    r = scale.unsqueeze(1) * q
    for slot in reversed(order):
        beta = rho[slot] * (changes[slot] * r).sum(dim=1)
        r += (alphas[slot] - beta).unsqueeze(1) * steps[slot]
    return -r


def minimise(objective: Objective, start: torch.Tensor, iterations: int) -> torch.Tensor:
    """Minimise each problem of a batch from its start, with at most ``iterations`` L-BFGS iterations.

    Args:
        objective: ``(x, rows) -> values``: x (b, *shape) points of the problems ``rows`` (b,) (indices into
            the batch), values (b,), each problem's objective at its point alone.
        start: (B, *shape) starting points.
        iterations: the most iterations any problem takes.

    Returns:
        (B, *shape) minimisers (where each problem stopped), dtype and device of ``start``.
    """
    shape, batch = start.shape[1:], start.shape[0]

    def evaluate(flat: torch.Tensor, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        values, gradient = value_and_gradient(objective, flat.view(len(rows), *shape), rows)
        return values, gradient.reshape(len(rows), -1)

    x = start.detach().reshape(batch, -1).clone()
    f, g = evaluate(x, torch.arange(batch, device=x.device))
    active = g.norm(dim=1) > GRADIENT_TOLERANCE
    steps = x.new_zeros(HISTORY, *x.shape)
    changes = x.new_zeros(HISTORY, *x.shape)
    rho = x.new_zeros(HISTORY, batch)
    scale = x.new_ones(batch)
    curved = torch.zeros(batch, dtype=torch.bool, device=x.device)  # holds a curvature pair
    for iteration in range(iterations):
        rows = active.nonzero().squeeze(1)
        if len(rows) == 0:
            break
        x_now, f_now, g_now = x[rows], f[rows], g[rows]
        direction = two_loop_direction(
            g_now, steps[:, rows], changes[:, rows], rho[:, rows], scale[rows], (iteration - 1) % HISTORY
        )
        slope = (g_now * direction).sum(dim=1)
        uphill = slope >= 0  # rounding can spoil a direction: fall back to steepest descent
        direction = torch.where(uphill.unsqueeze(1), -g_now, direction)
        slope = torch.where(uphill, -(g_now * g_now).sum(dim=1), slope)
        # without curvature information a problem's first trial step is a steepest-descent step at most 1 long
        length = torch.where(curved[rows], 1.0, (1.0 / g_now.norm(dim=1)).clamp(max=1.0))
        f_new, g_new = evaluate(x_now + length.unsqueeze(1) * direction, rows)
        accepted = f_new <= f_now + ARMIJO * length * slope
        for _ in range(HALVINGS):
            pending = (~accepted).nonzero().squeeze(1)
            if len(pending) == 0:
                break
            length[pending] *= 0.5
            trial = x_now[pending] + length[pending].unsqueeze(1) * direction[pending]
            f_new[pending], g_new[pending] = evaluate(trial, rows[pending])
            accepted[pending] = f_new[pending] <= f_now[pending] + ARMIJO * length[pending] * slope[pending]
        step = length.unsqueeze(1) * direction
        change = g_new - g_now
        curvature = (step * change).sum(dim=1)
        kept = accepted & (curvature > 1e-10)
        slot = iteration % HISTORY
        steps[slot, rows] = torch.where(kept.unsqueeze(1), step, 0.0)
        changes[slot, rows] = torch.where(kept.unsqueeze(1), change, 0.0)
        rho[slot, rows] = torch.where(kept, 1.0 / curvature.where(kept, 1.0), 0.0)
        scale[rows] = torch.where(kept, curvature / (change * change).sum(dim=1).where(kept, 1.0), scale[rows])
        curved[rows] |= kept
        x[rows] = torch.where(accepted.unsqueeze(1), x_now + step, x_now)
        f[rows] = torch.where(accepted, f_new, f_now)
        g[rows] = torch.where(accepted.unsqueeze(1), g_new, g_now)
        finished = (
            ~accepted
            | (g_new.norm(dim=1) <= GRADIENT_TOLERANCE)
            | (step.norm(dim=1) <= CHANGE_TOLERANCE)
            | ((f_new - f_now).abs() <= CHANGE_TOLERANCE)
        )
        active[rows[finished]] = False
    return x.view(batch, *shape)
