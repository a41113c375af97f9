r"""Batched, differentiable, log-domain Sinkhorn for the EMD under any ground distance.

Kept in one module: it is one solver (the log-domain iteration, its autograd Function, the
public entry point and its argument checks), and about a third of its 550 lines is the
docstrings and comments that explain its design.

This is the math layer behind ``emdloss.functional.ground_emd(..., method="sinkhorn")``: the
entropic approximation of the EMD between *soft* distributions and a general :math:`C \times C`
ground distance, for which no closed form exists.

Design (why it is written this way)

* **Log domain.** The dual potentials are updated with ``logsumexp``; the kernel
  :math:`e^{-D/\varepsilon}` is never formed, so it cannot underflow at small
  :math:`\varepsilon` (that underflow is what makes POT's ``ot.sinkhorn2`` return wrong
  values and NaN gradients there; measured in docs/benchmarks.md).
* **Zero entries.** :math:`\log 0 = -\infty` is produced by a mask (``torch.where`` on a safe
  argument), the potentials themselves stay finite, and the plan entries of empty rows or
  columns are exactly 0. One-hot marginals therefore give finite values and gradients.
* **Relative** :math:`\varepsilon`. The regularisation is ``epsilon * max(cost)``, so one default
  suits costs on any scale (|i - j|, (i - j)^2, metres, ...).
* **Annealing.** The forward pass starts at :math:`\varepsilon = \max D` and halves it until the
  target is reached (two iterations per stage, warm-started potentials), then iterates at the
  target until the L1 marginal error is at most ``tol``.
* **Safeguarded Newton.** Plain Sinkhorn crawls on near-degenerate pairs (|i - j| on the line:
  blocks of classes joined by tiny flows; measured: > 20 000 iterations at ``epsilon = 0.01``).
  Each iteration therefore also tries a Newton step on the concave semi-dual (a batched
  :math:`C \times C` solve per pair, shortened to a few :math:`\varepsilon` along flat
  directions) and keeps, per pair, whichever of the Sinkhorn and Newton candidates increases
  the dual most: never slower than Sinkhorn, quadratic near the solution (Sinkhorn-Newton,
  Brauer, Clason, Lorenz & Wirth 2017); converged pairs leave the batch. Measured: 4 to 47
  iterations after the 14 annealing ones at the default ``epsilon`` (docs/benchmarks.md).
  Above 4096 classes the :math:`C \times C` systems take too much memory, and plain Sinkhorn
  steps are used, with the error checked every 10 iterations (one host sync each).
* **Gradient by implicit differentiation** (not autograd through the iterations, whose memory
  grows with the number of iterations times :math:`M C^2`). At the fixed point :math:`g^*` of
  the Sinkhorn map :math:`\Phi`, the adjoint system :math:`(I - J^\top)\lambda = \partial\ell /
  \partial g` with :math:`J = \partial\Phi/\partial g` (a :math:`C \times C` stochastic matrix per
  pair) is solved directly, so the returned gradient is the exact derivative of the returned
  value at convergence, whatever path the forward pass took.
* **Memory.** Pairs are solved in chunks (they are independent) of about ``CHUNK_BYTES``
  (256 MiB) of :math:`C \times C` buffers, and inside a chunk the large buffers are updated in
  place (an in-place log-sum-exp, the Newton system built from one buffer, candidates scored
  one at a time). The peak is therefore about :math:`\max(256\,\mathrm{MiB}, 128 C^2)` bytes
  whatever the batch size: measured 0.25 GB for 16 pairs at C = 1000 and 0.83 GB for 4 pairs
  at C = 4000 (``benchmarks/sinkhorn_memory.py``; docs/benchmarks.md). The limit is one
  pair's :math:`C \times C` buffers: at most about 2 GB at C = 4000, 8 GB at C = 8000.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import Tensor

from emdloss._validation import values_readable

__all__ = ["DEFAULT_EPSILON", "DEFAULT_MAX_ITER", "DEFAULT_TOL", "TOL_FLOOR_EPS", "sinkhorn_emd"]

#: Default regularisation, relative to ``max(cost)``.
DEFAULT_EPSILON = 0.01
#: Default cap on the iterations at the target epsilon (after the annealing stages).
DEFAULT_MAX_ITER = 1000
#: Default stopping threshold on the L1 marginal error (largest over the batch), by precision.
DEFAULT_TOL = {torch.float32: 1.2e-5, torch.float64: 1e-9}
#: Smallest reachable threshold, in machine epsilons of the working precision: rounding keeps
#: the marginal error of a float32 plan around 1e-6 to 1e-5 (measured), so a smaller ``tol``
#: would only burn ``max_iter`` iterations. Requests below it are raised to it.
TOL_FLOOR_EPS = 100

_CHECK_EVERY = 10  # Sinkhorn-only iterations between convergence checks (one host sync each)
_ANNEAL = 0.5  # factor between successive epsilons of the annealing schedule
_STAGE_STEPS = 2  # iterations per annealing stage
_TRUST = (1e30, 16.0, 4.0, 1.0, 0.25)  # Newton step lengths tried, in units of epsilon
# Newton pays even at C = 1000 (|i - j|, 4 pairs: 38 s converged, against 175 s and still
# unconverged after 1000 plain Sinkhorn iterations); above this, the float64 C x C systems
# (134 MB per pair at C = 4096) are the limit, and plain Sinkhorn steps are used.
_NEWTON_MAX_C = 4096
# Pairs are solved in chunks whose M x C x C working set stays near this many bytes; one pair
# is the smallest chunk, so the peak is about max(this, 128 C^2) bytes whatever the batch size.
CHUNK_BYTES = 256 * 2**20
# C x C buffers of float64 size alive per pair at the peak (the backward: its autograd graph of
# the plan and the float64 adjoint system), measured: 0.48 GB for 4-pair chunks at C = 1000.
_BUFFERS_PER_PAIR = 16


def _chunk_pairs(num_classes: int) -> int:
    """How many pairs one chunk holds (at least 1)."""
    return max(1, CHUNK_BYTES // (_BUFFERS_PER_PAIR * 8 * num_classes * num_classes))


def _masked_log(x: Tensor) -> Tensor:
    """``log(x)`` with ``-inf`` where ``x == 0``, and a zero (not NaN) gradient there."""
    positive = x > 0
    # log of a safe argument: the unused branch of where() must not produce inf * 0 = NaN.
    return torch.where(positive, torch.log(torch.where(positive, x, 1.0)), float("-inf"))


def _recording(*ts: Tensor) -> bool:
    """Whether autograd (or a torch.func transform) records operations on these tensors (then
    nothing is done in place)."""
    if torch._C._are_functorch_transforms_active():
        return True
    return torch.is_grad_enabled() and any(t.requires_grad for t in ts)


def _lse_(t: Tensor, dim: int) -> tuple[Tensor, Tensor, Tensor]:
    """``logsumexp(t, dim)`` that overwrites ``t`` with ``exp(t - max)`` (no second M C C buffer).

    Returns the log-sum-exp (``dim`` kept), the row max and the sums, so that a caller can
    turn ``t`` into the softmax with one division. All ``-inf`` slices give ``-inf``.
    """
    m = t.amax(dim=dim, keepdim=True)
    m = torch.where(torch.isfinite(m), m, 0.0)
    s = t.sub_(m).exp_().sum(dim=dim, keepdim=True)
    return torch.log(s) + m, m, s


def _f_update(g: Tensor, log_b: Tensor, cost: Tensor, eps: Tensor) -> Tensor:
    """:math:`f_i = -\\varepsilon \\log \\sum_j b_j e^{(g_j - D_{ij})/\\varepsilon}`, shape (M, C)."""
    t = g.unsqueeze(-2) - cost
    if _recording(g, log_b, cost, eps):
        return -eps * torch.logsumexp(log_b.unsqueeze(-2) + t / eps, dim=-1)
    lse = _lse_(t.div_(eps).add_(log_b.unsqueeze(-2)), -1)[0]
    return lse.squeeze(-1).mul_(-eps)


def _g_update(f: Tensor, log_a: Tensor, cost: Tensor, eps: Tensor) -> Tensor:
    """:math:`g_j = -\\varepsilon \\log \\sum_i a_i e^{(f_i - D_{ij})/\\varepsilon}`, shape (M, C)."""
    t = f.unsqueeze(2) - cost
    if _recording(f, log_a, cost, eps):
        return -eps * torch.logsumexp(log_a.unsqueeze(2) + t / eps, dim=1)
    lse = _lse_(t.div_(eps).add_(log_a.unsqueeze(2)), 1)[0]
    return lse.squeeze(1).mul_(-eps)


def _log_plan(
    f: Tensor, g: Tensor, log_a: Tensor, log_b: Tensor, cost: Tensor, eps: Tensor
) -> Tensor:
    """Log of the entropic plan :math:`F_{ij}`, shape (M, C, C); ``-inf`` on empty rows/columns."""
    return log_a.unsqueeze(2) + log_b.unsqueeze(1) + (f.unsqueeze(2) + g.unsqueeze(1) - cost) / eps


def _transport_cost(
    f: Tensor, g: Tensor, log_a: Tensor, log_b: Tensor, cost: Tensor, eps: Tensor
) -> Tensor:
    r""":math:`\sum_{ij} F_{ij} D_{ij}` per pair, (M,), with one M x C x C buffer (no autograd)."""
    t = f.unsqueeze(2) + g.unsqueeze(1)
    t.sub_(cost).div_(eps).add_(log_a.unsqueeze(2)).add_(log_b.unsqueeze(1))
    return t.exp_().mul_(cost).sum(dim=(1, 2))


def _epsilon(cost: Tensor, epsilon: float) -> Tensor:
    """Absolute regularisation ``epsilon * max(cost)`` (``epsilon`` when the cost is all zero)."""
    scale = cost.amax()
    return epsilon * torch.where(scale > 0, scale, torch.ones_like(scale))


def _solve_dtype(t: Tensor) -> torch.dtype:
    """Float64 for the small linear systems where the device has it (not on MPS)."""
    return torch.float64 if t.device.type in ("cpu", "cuda") else t.dtype


def _semi_dual(g: Tensor, a: Tensor, b: Tensor, log_b: Tensor, cost: Tensor, eps: Tensor) -> Tensor:
    """Semi-dual objective :math:`\\sum_i a_i f_i(g) + \\sum_j b_j g_j` (concave in g), (..., M)."""
    f = _f_update(g, log_b, cost, eps)
    return torch.where(a > 0, a * f, 0.0).sum(-1) + torch.where(b > 0, b * g, 0.0).sum(-1)


def _step(
    g: Tensor,
    a: Tensor,
    b: Tensor,
    log_a: Tensor,
    log_b: Tensor,
    cost: Tensor,
    eps: Tensor,
    newton: bool,
) -> tuple[Tensor, Tensor]:
    """One safeguarded iteration on ``g``; returns the new ``g`` and the L1 marginal error at ``g``.

    The Sinkhorn step (the exact maximiser of the dual in ``g`` given ``f = f(g)``) always
    increases the concave semi-dual. Near-degenerate pairs (|i - j| costs on the line, blocks of
    classes joined by tiny flows) make it crawl, so with ``newton`` a Newton step on the
    semi-dual is tried as well, at full length and shortened so that no potential moves by more
    than 16, 4, 1 or 1/4 epsilon (the objective is exponential along flat directions); each
    pair keeps whichever candidate has the largest objective (Sinkhorn-Newton, Brauer et al.
    2017). Far from the solution the Sinkhorn step wins; near it the Newton step converges
    quadratically.
    """
    # f and the row-normalised plan p1[i, j] = F_ij / a_i (defined on empty rows too) come
    # from one M x C x C buffer, overwritten in place; then the column sums of the plan.
    p1 = (g.unsqueeze(1) - cost).div_(eps).add_(log_b.unsqueeze(1))
    lse, _, sums = _lse_(p1, 2)
    f = lse.squeeze(2).mul_(-eps)
    p1.div_(sums)
    col = torch.bmm(a.unsqueeze(1), p1).squeeze(1)
    err = (col - b).abs().sum(1)
    g_sinkhorn = _g_update(f, log_a, cost, eps)
    if not newton:
        return g_sinkhorn, err
    # Negative Hessian of the semi-dual times eps: diag(col) - p1^T diag(a) p1 (PSD, null vector
    # 1). Adding 1 1^T picks the step with zero sum; unit diagonal on empty columns (b_j = 0).
    # Built in place from sqrt(a) p1 (p1 is not needed after), in the solve's precision: at most
    # p1, the Gram matrix and the solver's LU copy are alive at once.
    dt = _solve_dtype(g)
    root = p1.mul_(a.sqrt().unsqueeze(2)).to(dt)
    del p1
    hess = torch.bmm(root.transpose(1, 2), root).neg_()
    del root
    hess.diagonal(dim1=1, dim2=2).add_((col + (b == 0).to(col.dtype)).to(dt))
    hess.add_(1.0)
    delta = torch.linalg.solve_ex(hess, (eps * (b - col)).to(dt).unsqueeze(-1))[0]
    del hess
    delta = delta.squeeze(-1).to(g.dtype)
    reach = eps * torch.tensor(_TRUST, dtype=g.dtype, device=g.device).view(-1, 1, 1)
    lengths = (reach / delta.abs().amax(-1, keepdim=True)).clamp(max=1.0)
    candidates = torch.cat([g + lengths * delta, g_sinkhorn.unsqueeze(0)])  # (K, M, C)
    # One candidate at a time: a batched evaluation would hold K M x C x C buffers.
    score = torch.stack([_semi_dual(cand, a, b, log_b, cost, eps) for cand in candidates])
    # A singular Newton system gives NaN/inf candidates: never pick those.
    score = torch.where(torch.isfinite(score), score, float("-inf"))
    score[-1] = torch.where(torch.isfinite(score[-1]), score[-1], float("inf"))
    best = score.argmax(0)
    # Near the solution the gains (~ error^2) drop below the rounding of the objective and the
    # comparison is noise: there, take the full Newton step (else progress stalls at ~1e-8).
    top = score.gather(0, best.unsqueeze(0)).squeeze(0)
    noise = 64 * torch.finfo(score.dtype).eps * (top.abs() + 1.0)
    best = torch.where(score[0] >= top - noise, 0, best)
    return candidates[best, torch.arange(g.shape[0], device=g.device)], err


def _solve(
    log_a: Tensor,
    log_b: Tensor,
    a: Tensor,
    b: Tensor,
    cost: Tensor,
    epsilon: float,
    max_iter: int,
    tol: float,
) -> tuple[Tensor, int, float]:
    """Annealed, safeguarded iterations; return the potential ``g``, iterations and error."""
    eps = _epsilon(cost, epsilon)
    scale = eps / epsilon
    newton = a.shape[1] <= _NEWTON_MAX_C
    g = torch.zeros_like(b)
    # Annealing: from eps = max(cost), halving down to the target, a few steps each (no sync).
    rel = 1.0
    while rel > epsilon:
        for _ in range(_STAGE_STEPS):
            g, _ = _step(g, a, b, log_a, log_b, cost, scale * rel, newton)
        rel *= _ANNEAL
    err = float("inf")
    iters = 0
    every = 1 if newton else _CHECK_EVERY  # Newton steps are few and costly: check each one
    # Active set: pairs that have converged are frozen and leave the batch, so the last
    # iterations (often a few hard pairs) do not pay for the whole batch.
    active = torch.arange(g.shape[0], device=g.device)
    sub = (a, b, log_a, log_b)
    while iters < max_iter:
        g_next, err_t = _step(g[active], *sub, cost, eps, newton)
        iters += 1
        if iters % every == 0 or iters == max_iter:
            err = float(err_t.max())  # the one host sync per check; err_t is the error at g
            if err <= tol:
                break
            moving = err_t > tol  # converged pairs keep the g at which err_t was measured
            g[active[moving]] = g_next[moving]
            active = active[moving]
            sub = tuple(t[active] for t in (a, b, log_a, log_b))  # type: ignore[assignment]
        else:
            g[active] = g_next
    return g, iters, err


def _solve_chunk(
    a: Tensor, b: Tensor, cost: Tensor, epsilon: float, max_iter: int, tol: float
) -> tuple[Tensor, Tensor]:
    """The transport cost (M,) and the converged potential ``g`` (M, C) of one chunk of pairs."""
    log_a, log_b = _masked_log(a), _masked_log(b)
    g, _, err = _solve(log_a, log_b, a, b, cost, epsilon, max_iter, tol)
    if err > tol:
        warnings.warn(
            f"sinkhorn_emd did not converge: marginal error {err:.3g} > tol={tol:g} after "
            f"max_iter={max_iter} iterations (epsilon={epsilon:g}); raise max_iter or epsilon",
            RuntimeWarning,
            stacklevel=2,
        )
    eps = _epsilon(cost, epsilon)
    f = _f_update(g, log_b, cost, eps)
    return _transport_cost(f, g, log_a, log_b, cost, eps), g


# The solver and its gradient are torch.library custom ops: opaque to torch.compile (the
# iterations stop on a data-dependent test, which no graph can hold), with fake
# implementations for tracing and vmap rules; _SinkhornEMD below joins them as forward and
# backward (a custom op's own autograd formula is not usable under torch.func.grad).


@torch.library.custom_op("emdloss::sinkhorn_solve", mutates_args=())
def _solve_op(
    a: Tensor, b: Tensor, cost: Tensor, epsilon: float, max_iter: int, tol: float
) -> tuple[Tensor, Tensor]:
    # Pairs are independent (each has its own potentials, convergence test and frozen state),
    # so solving them in chunks gives the same values and bounds the memory (see CHUNK_BYTES).
    step = _chunk_pairs(a.shape[1])
    parts = [
        _solve_chunk(a_k, b_k, cost, epsilon, max_iter, tol)
        for a_k, b_k in zip(a.split(step), b.split(step), strict=True)
    ]
    if len(parts) == 1:
        return parts[0]
    return torch.cat([v for v, _ in parts]), torch.cat([g for _, g in parts])


@_solve_op.register_fake
def _solve_fake(
    a: Tensor, b: Tensor, cost: Tensor, epsilon: float, max_iter: int, tol: float
) -> tuple[Tensor, Tensor]:
    return a.new_empty(a.shape[0]), torch.empty_like(a)


def _pairs_first(t: Tensor, dim: int | None, size: int) -> Tensor:
    return t.movedim(dim, 0) if dim is not None else t.expand(size, *t.shape)


def _solve_vmap(
    info: Any, in_dims: tuple[int | None, ...], a: Tensor, b: Tensor, cost: Tensor, *options: Any
) -> tuple[tuple[Tensor, Tensor], tuple[int, int]]:
    """``options`` are the op's ``epsilon, max_iter, tol``, passed on unchanged."""
    n = info.batch_size
    a, b = _pairs_first(a, in_dims[0], n), _pairs_first(b, in_dims[1], n)
    m, c = a.shape[1], a.shape[2]
    if in_dims[2] is None:  # one cost for all: the batch is more pairs
        value, g = _solve_op(a.reshape(n * m, c), b.reshape(n * m, c), cost, *options)
        return (value.reshape(n, m), g.reshape(n, m, c)), (0, 0)
    costs = cost.movedim(in_dims[2], 0)
    outs = [_solve_op(a[k], b[k], costs[k], *options) for k in range(n)]
    return (torch.stack([v for v, _ in outs]), torch.stack([g for _, g in outs])), (0, 0)


_solve_op.register_vmap(_solve_vmap)


def _value_and_next(
    g: Tensor, a: Tensor, b: Tensor, cost: Tensor, epsilon: float
) -> tuple[Tensor, Tensor]:
    """The transport cost l(g; theta) of the plan at ``g`` and the Sinkhorn map Phi(g; theta)."""
    eps = _epsilon(cost, epsilon)  # eps depends on max(cost): differentiate it too
    log_a, log_b = _masked_log(a), _masked_log(b)
    f = _f_update(g, log_b, cost, eps)
    value = (torch.exp(_log_plan(f, g, log_a, log_b, cost, eps)) * cost).sum(dim=(1, 2))
    return value, _g_update(f, log_a, cost, eps)


@torch.library.custom_op("emdloss::sinkhorn_grad", mutates_args=())
def _grad_op(
    grad_value: Tensor,
    a: Tensor,
    b: Tensor,
    cost: Tensor,
    g: Tensor,
    epsilon: float,
    need_a: bool,
    need_b: bool,
    need_cost: bool,
) -> tuple[Tensor, Tensor, Tensor]:
    """Gradients of the transport cost for ``a``, ``b`` and ``cost`` (empty where not needed).

    In chunks of pairs, as the forward solve: the peak memory stays that of one chunk.
    """
    needs = (need_a, need_b, need_cost)
    if not any(needs):  # (outputs may not alias each other)
        return a.new_empty(0), a.new_empty(0), a.new_empty(0)
    step = _chunk_pairs(a.shape[1])
    chunks = zip(*(t.split(step) for t in (grad_value, a, b, g)), strict=True)
    parts = [_grad_chunk(gv, a_k, b_k, cost, g_k, epsilon) for gv, a_k, b_k, g_k in chunks]
    grads = (
        torch.cat([p[0] for p in parts]),
        torch.cat([p[1] for p in parts]),
        torch.stack([p[2] for p in parts]).sum(0),
    )
    kept = (t if need else a.new_empty(0) for t, need in zip(grads, needs, strict=True))
    return tuple(kept)  # type: ignore[return-value]


def _grad_chunk(
    grad_value: Tensor, a: Tensor, b: Tensor, cost: Tensor, g: Tensor, epsilon: float
) -> tuple[Tensor, Tensor, Tensor]:
    """The implicit gradients for ``a``, ``b`` and ``cost`` of one chunk of pairs."""
    # v = dl/dg and the direct part dl/dtheta (torch.func: autograd is off inside a custom op).
    pull_value = torch.func.vjp(
        lambda g_, a_, b_, c_: _value_and_next(g_, a_, b_, c_, epsilon)[0], g, a, b, cost
    )[1]
    v, *direct = pull_value(grad_value)
    with torch.no_grad():
        eps = _epsilon(cost, epsilon)
        log_a, log_b = _masked_log(a), _masked_log(b)
        f = _f_update(g, log_b, cost, eps)
        # J = dPhi/dg = P2^T P1, with P1[i, j] = d(-f_i)/dg_j (rows of the plan, normalised)
        # and P2[i, j] = d(-g_j)/df_i (columns, normalised); both finite on empty rows/cols.
        p1 = torch.softmax(log_b.unsqueeze(1) + (g.unsqueeze(1) - cost) / eps, dim=2)
        p2 = torch.softmax(log_a.unsqueeze(2) + (f.unsqueeze(2) - cost) / eps, dim=1)
        jac = p2.transpose(1, 2) @ p1  # (M, C, C), row-stochastic
        # (I - J^T) is singular along the Perron vector; v is orthogonal to 1 (the value is
        # invariant to g -> g + c), so adding 1 1^T picks the solution with sum 0.
        dt = _solve_dtype(v)
        c = jac.shape[-1]
        system = torch.eye(c, dtype=dt, device=v.device) - jac.transpose(1, 2).to(dt) + 1.0
        rhs = v.to(dt).unsqueeze(-1)
        lam, info = torch.linalg.solve_ex(system, rhs)
        if bool((info != 0).any()):  # numerically singular (decoupled blocks): pinv
            bad = info != 0
            lam[bad] = torch.linalg.pinv(system[bad]) @ rhs[bad]
        lam = lam.squeeze(-1).to(g.dtype)
    pull_next = torch.func.vjp(
        lambda a_, b_, c_: _value_and_next(g, a_, b_, c_, epsilon)[1], a, b, cost
    )[1]
    implicit = pull_next(lam)
    return tuple(d + i for d, i in zip(direct, implicit, strict=True))


@_grad_op.register_fake
def _grad_fake(
    grad_value: Tensor, a: Tensor, b: Tensor, cost: Tensor, g: Tensor, epsilon: float, *needs: bool
) -> tuple[Tensor, Tensor, Tensor]:
    like = zip((a, b, cost), needs, strict=True)
    out = (torch.empty_like(t) if n else a.new_empty(0) for t, n in like)
    return tuple(out)  # type: ignore[return-value]


def _grad_vmap(
    info: Any, in_dims: tuple[int | None, ...], *args: Any
) -> tuple[tuple[Tensor, Tensor, Tensor], tuple[int | None, ...]]:
    """``args`` are the op's: ``grad_value, a, b, cost, g, epsilon, need_a, need_b, need_cost``."""
    grad_value, a, b, cost, g, epsilon, *needs = args
    n = info.batch_size
    gv = _pairs_first(grad_value, in_dims[0], n)
    a, b, g = (
        _pairs_first(t, d, n) for t, d in ((a, in_dims[1]), (b, in_dims[2]), (g, in_dims[4]))
    )
    if in_dims[3] is None and not needs[2]:  # one cost, no gradient for it: more pairs
        m, c = a.shape[1], a.shape[2]
        flat = _grad_op(
            gv.reshape(n * m), a.reshape(n * m, c), b.reshape(n * m, c), cost,
            g.reshape(n * m, c), epsilon, *needs,
        )  # fmt: skip
        out = tuple(t.reshape(n, m, c) if t.numel() else t for t in flat)
    else:  # each element has its own cost, or its own gradient of it
        costs = _pairs_first(cost, in_dims[3], n)
        parts = [_grad_op(gv[k], a[k], b[k], costs[k], g[k], epsilon, *needs) for k in range(n)]
        out = tuple(
            torch.stack([p[j] for p in parts]) if needs[j] else a.new_empty(0) for j in range(3)
        )
    return out, tuple(0 if need else None for need in needs)


_grad_op.register_vmap(_grad_vmap)


class _SinkhornEMD(torch.autograd.Function):
    """Autograd for the solver op: returns (value, g); the backward is the implicit gradient.

    ``setup_context`` is split from ``forward`` and the vmap rule is generated (both ops have
    their own vmap rules), so the :mod:`torch.func` transforms run it.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(
        a: Tensor, b: Tensor, cost: Tensor, epsilon: float, max_iter: int, tol: float
    ) -> tuple[Tensor, Tensor]:
        value, g = _solve_op(a, b, cost, epsilon, max_iter, tol)
        return value, g

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: tuple[Tensor, Tensor]) -> None:
        a, b, cost, epsilon, _, _ = inputs
        ctx.mark_non_differentiable(output[1])
        ctx.set_materialize_grads(False)  # no zero gradient built for the output g
        ctx.save_for_backward(a, b, cost, output[1])
        ctx.epsilon = epsilon

    @staticmethod
    def backward(ctx: Any, grad_value: Tensor | None, _grad_g: Any) -> tuple[Tensor | None, ...]:
        if grad_value is None:  # the value itself unused (grads are not materialised)
            return None, None, None, None, None, None
        if torch.is_grad_enabled() and not torch._C._are_functorch_transforms_active():
            # create_graph=True. The implicit gradient treats the converged potential g as
            # fixed; its derivative would need that of the fixed point too. Refuse, not be wrong.
            raise RuntimeError(
                "sinkhorn_emd (ground_emd(method='sinkhorn')) does not support second-order "
                "gradients (backward with create_graph=True): its gradient comes from implicit "
                "differentiation at the converged potentials. Use method='exact' with "
                "class-index or one-hot targets, or a loss on the line (emd, squared_emd)"
            )
        a, b, cost, g = ctx.saved_tensors
        needs = tuple(bool(n) for n in ctx.needs_input_grad[:3])
        with torch.no_grad():  # first order only: the op's autograd is never asked for
            grads = _grad_op(grad_value, a, b, cost, g, ctx.epsilon, *needs)
        kept = (t if need else None for t, need in zip(grads, needs, strict=True))
        return (*kept, None, None, None)


def sinkhorn_emd(
    a: Tensor,
    b: Tensor,
    cost: Tensor,
    *,
    epsilon: float = DEFAULT_EPSILON,
    max_iter: int = DEFAULT_MAX_ITER,
    tol: float | None = None,
) -> Tensor:
    r"""Entropic approximation of the EMD between batches of distributions, any ground distance.

    For each pair :math:`(a, b)` of rows, the log-domain Sinkhorn iterations

    .. math::

        f_i = -\varepsilon \log \sum_j b_j\, e^{(g_j - D_{ij})/\varepsilon}, \qquad
        g_j = -\varepsilon \log \sum_i a_i\, e^{(f_i - D_{ij})/\varepsilon},

    with :math:`\varepsilon = \texttt{epsilon} \cdot \max_{ij} D_{ij}`, converge to the entropic
    optimal plan :math:`F_{ij} = a_i b_j\, e^{(f_i + g_j - D_{ij})/\varepsilon}` (row sums
    :math:`a`, column sums :math:`b`), and the function returns its transport cost

    .. math::

        \widehat{\mathrm{EMD}}(a, b) = \sum_{ij} F_{ij} D_{ij}
        \;\ge\; \mathrm{EMD}(a, b) = \min_{F \ge 0,\ F\mathbf 1 = a,\ F^\top \mathbf 1 = b}
        \sum_{ij} F_{ij} D_{ij},

    not the regularised objective. It is an **approximation** from above of the exact LP; the
    gap shrinks with ``epsilon`` (measured in ``docs/benchmarks.md``: at most 4e-3 ``max(cost)``
    at the default ``epsilon = 0.01`` for C <= 30). When ``a`` or ``b`` is one-hot the only
    feasible plan is :math:`a b^\top`, and the result is exact; when every row of ``b`` is
    one-hot, that closed form is returned directly, without iterations.

    Parameters
    ----------
    a, b : Tensor, shape (M, C)
        Rows are probability vectors (non-negative, equal sums; exact zeros are allowed and are
        kept out of the support). Float16/bfloat16 are computed in float32.
    cost : Tensor, shape (C, C)
        Ground distance :math:`D` (non-negative, finite), on the same device.
    epsilon : float, default 0.01
        Entropic regularisation **relative to** ``max(cost)``; smaller is closer to the exact
        EMD and needs more iterations.
    max_iter : int, default 1000
        Cap on the iterations at the target ``epsilon`` (after the annealing stages). A
        ``RuntimeWarning`` reports the marginal error if ``tol`` was not reached.
    tol : float, optional
        Stop once the largest L1 error of the plan's marginals over the batch is at most
        ``tol`` (default 1.2e-5 when computing in float32, 1e-9 in float64; values below 100
        machine epsilons of the working precision are raised to that floor, which rounding
        makes the smallest reachable error). The returned value then lies within about
        ``tol * max(cost)`` of the converged entropic transport cost.

    Returns
    -------
    Tensor, shape (M,)
        Transport cost of the entropic plan for each pair, in the dtype of ``a``.

    Raises
    ------
    TypeError
        If ``a``, ``b`` or ``cost`` is not a floating-point tensor.
    ValueError
        If the shapes or devices do not match; ``epsilon``, ``max_iter`` or ``tol`` are out of
        range; ``a``, ``b`` or ``cost`` hold negative or non-finite values; or a row of ``a``
        and of ``b`` differ in mass by more than 1e-3 (relative; smaller gaps, the rounding of
        the inputs, are removed by rescaling ``b`` to the mass of ``a``). The value checks
        cost one host synchronisation.

    Notes
    -----
    Gradients with respect to ``a``, ``b`` and ``cost`` come from implicit differentiation at
    the fixed point (exact for the returned value once converged). The gradient with respect
    to ``a`` or ``b`` is defined up to an additive constant per row (only perturbations that
    keep the rows summing to one are meaningful; a softmax in front removes the constant), and
    it is 0 on entries that are exactly 0 (there, the derivative of a softmax is 0 as well).
    ``max(cost)`` enters through :math:`\varepsilon` and is differentiated too. Double
    backward is not supported.

    Examples
    --------
    >>> import torch
    >>> cost = torch.tensor([[0.0, 1.0, 2.0], [1.0, 0.0, 1.0], [2.0, 1.0, 0.0]])
    >>> a = torch.tensor([[0.5, 0.5, 0.0], [0.2, 0.3, 0.5]])
    >>> b = torch.tensor([[0.0, 0.5, 0.5], [0.0, 0.0, 1.0]])
    >>> sinkhorn_emd(a, b, cost)  # exact EMDs: 1.0 and 0.7 (the second target is one-hot)
    tensor([1.0000, 0.7000])
    """
    _check(a, b, cost, epsilon, max_iter, tol)
    out_dtype = a.dtype
    work = torch.promote_types(torch.promote_types(a.dtype, b.dtype), cost.dtype)
    if work in (torch.float16, torch.bfloat16):
        work = torch.float32  # half inputs: compute in float32
    if tol is None:
        tol = DEFAULT_TOL.get(work, DEFAULT_TOL[torch.float32])
    tol = max(tol, TOL_FLOOR_EPS * torch.finfo(work).eps)
    if a.shape[0] == 0:
        return (a * 0).sum(dim=1)
    if values_readable() and bool(((b > 0).sum(1) == 1).all()):  # one host sync
        # All targets one-hot: the only feasible plan is a e_y^T, so the EMD is exactly
        # sum_i a_i D[i, y] (what the iterations converge to), with no iterations at all.
        y = b.argmax(1)
        return (a.to(work) * cost.to(work)[:, y].T).sum(1).to(out_dtype)
    a, b = a.to(work), b.to(work)
    # Rescale b to the mass of a: the iterations need equal masses exactly, and the rounding of
    # the inputs (float32 softmax, half precision) would otherwise stall them at that gap.
    b = b * (a.sum(1, keepdim=True) / b.sum(1, keepdim=True))
    cost = cost.to(work)
    value = _SinkhornEMD.apply(a, b, cost, float(epsilon), int(max_iter), float(tol))[0]
    return value.to(out_dtype)


def _check(
    a: Tensor, b: Tensor, cost: Tensor, epsilon: float, max_iter: int, tol: float | None
) -> None:
    """Shape and parameter checks (free), then one synchronising check of the values."""
    for name, t in (("a", a), ("b", b), ("cost", cost)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if not t.is_floating_point():
            raise TypeError(f"{name} must be a floating-point tensor, got dtype {t.dtype}")
    if a.dim() != 2 or a.shape != b.shape:
        raise ValueError(
            f"a and b must both have shape (M, C); got a {tuple(a.shape)} and b {tuple(b.shape)}"
        )
    c = a.shape[1]
    if c < 1:
        raise ValueError(f"a and b need at least one class, got shape {tuple(a.shape)}")
    if cost.shape != (c, c):
        raise ValueError(
            f"cost must have shape ({c}, {c}) to match a and b, got {tuple(cost.shape)}"
        )
    if not a.device == b.device == cost.device:
        raise ValueError(
            f"a, b and cost must be on one device, got {a.device}, {b.device}, {cost.device}"
        )
    if not (isinstance(epsilon, (int, float)) and 0 < epsilon < float("inf")):
        raise ValueError(f"epsilon must be a positive finite float, got {epsilon!r}")
    if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1:
        raise ValueError(f"max_iter must be a positive int, got {max_iter!r}")
    if tol is not None and not (isinstance(tol, (int, float)) and tol >= 0):
        raise ValueError(f"tol must be a non-negative float, got {tol!r}")
    if a.numel() == 0 or not values_readable():  # traced or vmapped: values cannot be read
        return
    with torch.no_grad():
        # One host sync for all value checks: per tensor (finite?, min), and the mass gap.
        af, bf, cf = a.double(), b.double(), cost.double()
        mass_a, mass_b = af.sum(1), bf.sum(1)
        gap = (mass_a - mass_b).abs() / mass_a.clamp_min(1e-30)
        stats = torch.stack(
            [
                torch.isfinite(af).all().double(),
                af.amin(),
                torch.isfinite(bf).all().double(),
                bf.amin(),
                torch.isfinite(cf).all().double(),
                cf.amin(),
                gap.max(),
                gap.argmax().double(),
                mass_a.amin(),
            ]
        ).tolist()
    for k, name in enumerate(("a", "b", "cost")):
        finite, low = stats[2 * k], stats[2 * k + 1]
        if not finite or low < 0:
            found = "non-finite values" if not finite else f"minimum {low:g}"
            raise ValueError(f"{name} must be finite and non-negative, found {found}")
    if stats[8] <= 0:
        raise ValueError(
            f"every row of a must have positive mass, found a row summing to {stats[8]:g}"
        )
    # Rounding of the inputs is tolerated (b is rescaled to the mass of a), real mismatches not.
    mass_tol = max(
        1e-3, a.shape[1] * torch.finfo(a.dtype).eps, b.shape[1] * torch.finfo(b.dtype).eps
    )
    if stats[6] > mass_tol:
        row = int(stats[7])
        raise ValueError(
            f"each row of a must carry the same mass as the row of b (e.g. both sum to 1); row "
            f"{row}: a sums to {float(mass_a[row]):.6g}, b to {float(mass_b[row]):.6g}"
        )
