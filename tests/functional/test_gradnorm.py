"""Tests of the IGNITE gradient-norm penalty (lightning_mbo.functional.gradnorm; Dao et al., NeurIPS 2024).

The double-backward gradient of the norm (:func:`norm_gradient_exact`, defined here) is the
reference the package's one-backward exact mode and its finite difference are checked against.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import pytest
import torch
from torch import Tensor, nn
from torch.func import functional_call

from lightning_mbo.functional.gradnorm import (
    Reduce,
    constraint_violation,
    grad_h,
    member_norms,
    norm_gradient_finite_difference,
    norm_penalty_term,
)
from lightning_mbo.methods.ignite import GradNormConstraint, Ignite
from lightning_mbo.nn import StackedMLP


def norm_gradient_exact(
    h: Tensor, params: Sequence[Tensor], reduce: Reduce | None = None
) -> tuple[Tensor, list[Tensor]]:
    """The double-backward reference: exact ``∇_ω ||∇_ω h||`` per member.

    Training's exact mode (:func:`norm_penalty_term`, one backward) is proven equal to it here.

    Computes ``g = ∇_ω h`` with ``create_graph=True``, the norms ``||g_m||`` and then the
    gradient of ``Σ_m ||g_m||``; slice ``[m]`` of the result is
    ``∇_{ω_m} ||∇h_m|| = H_m ∇h_m / ||∇h_m||``. A member with ``||∇h_m|| = 0`` gets a zero
    gradient (no NaN).

    Args:
        h: ``(M,)`` per-member mean predictions, built from ``params`` with grad enabled.
        params: tensors of shapes ``(M, ...)``.
        reduce: data-parallel average. With it, ``h`` is this rank's share of the global batch;
            ``g = reduce(∇h_local)`` is the global gradient, ``u = g/||g||``, and the result is
            ``reduce(H_local u)`` = ``H u``, the exact gradient of the global norm, computed as a
            Hessian-vector product of each rank's own graph.

    Returns:
        ``(norms, grads)``: detached ``(M,)`` norms ``||∇h_m||`` and one detached tensor per
        parameter, same shapes as ``params``.
    """
    params = list(params)
    grads = grad_h(h, params, create_graph=True)
    if reduce is not None:
        dot, norms = norm_penalty_term(grads, torch.ones(len(h), dtype=h.dtype, device=h.device), reduce)
        if not dot.requires_grad:
            return norms, [torch.zeros_like(p) for p in params]
        hvp = torch.autograd.grad(dot, params, allow_unused=True)
        return norms, reduce([torch.zeros_like(p) if v is None else v.detach() for p, v in zip(params, hvp,
                                                                                           strict=True)])
    norms = member_norms(grads)
    total = norms.sum()
    if not total.requires_grad:  # e.g. h affine in ω: ∇h is constant, so ∇||∇h|| = 0
        return norms.detach(), [torch.zeros_like(p) for p in params]
    out = torch.autograd.grad(total, params, allow_unused=True)
    return norms.detach(), [
        torch.zeros_like(p) if g is None else g.detach() for p, g in zip(params, out, strict=True)
    ]


def _model(members: int, seed: int = 0, dtype: torch.dtype = torch.float64, activation: str = "tanh"):
    torch.manual_seed(seed)
    return StackedMLP(members, 3, hidden=(5, 5), activation=activation).to(dtype)


def _batch(dtype: torch.dtype = torch.float64, seed: int = 1) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(7, 3, generator=g, dtype=dtype)


def _h_fn(model: nn.Module, x: Tensor):
    return lambda: model(x).mean(dim=(1, 2))


def _rel_err(a: list[Tensor], b: list[Tensor]) -> float:
    diff = torch.cat([(x - y).flatten() for x, y in zip(a, b, strict=True)]).norm()
    return (diff / torch.cat([y.flatten() for y in b]).norm()).item()


def _reference_single_member(
    model: StackedMLP, m: int, x: Tensor
) -> tuple[Tensor, list[Tensor], list[Tensor]]:
    """Norm, ∇h and ∇||∇h|| of member m, computed on a separate one-member copy with flat vectors."""
    single = StackedMLP(1, 3, hidden=(5, 5), activation=model.activation).to(x.dtype)
    with torch.no_grad():
        for ps, p in zip(single.parameters(), model.parameters(), strict=True):
            ps.copy_(p[m : m + 1])
    params = list(single.parameters())
    h = single(x).mean()
    g = torch.autograd.grad(h, params, create_graph=True)
    norm = torch.cat([t.flatten() for t in g]).norm()
    dnorm = torch.autograd.grad(norm, params, allow_unused=True)
    dnorm = [torch.zeros_like(p) if d is None else d for p, d in zip(params, dnorm, strict=True)]
    return norm.detach(), [t.detach() for t in g], dnorm


# --------------------------------------------------------------------------- exact gradient


class _NormWithExactGrad(torch.autograd.Function):
    """norms(ω) as forward; backward uses ONLY norm_gradient_exact (slice m scaled by grad_out[m])."""

    @staticmethod
    def forward(ctx, x, model, names, *flat):
        with torch.enable_grad():
            leaves = [t.detach().requires_grad_() for t in flat]
            h = functional_call(model, dict(zip(names, leaves, strict=True)), (x,)).mean(dim=(1, 2))
            norms, grads = norm_gradient_exact(h, leaves)
        ctx.save_for_backward(*grads)
        return norms

    @staticmethod
    def backward(ctx, grad_out):
        grads = [grad_out.reshape(-1, *([1] * (g.dim() - 1))) * g for g in ctx.saved_tensors]
        return (None, None, None, *grads)


def test_exact_norm_gradient_passes_gradcheck():
    model = _model(2)
    x = _batch()
    names = [n for n, _ in model.named_parameters()]
    flat = tuple(p.detach().clone().requires_grad_() for p in model.parameters())

    def fn(*ps):
        return _NormWithExactGrad.apply(x, model, names, *ps)

    # The backward is norm_gradient_exact's result; gradcheck compares it with central
    # differences of the norms, member by member (full (M, n_params) Jacobian).
    assert torch.autograd.gradcheck(fn, flat, eps=1e-6, atol=1e-6, rtol=1e-4)


def test_norms_double_backward_passes_gradcheck():
    model = _model(2, seed=3)
    x = _batch()
    names = [n for n, _ in model.named_parameters()]
    flat = tuple(p.detach().clone().requires_grad_() for p in model.parameters())

    def fn(*ps):
        h = functional_call(model, dict(zip(names, ps, strict=True)), (x,)).mean(dim=(1, 2))
        return member_norms(grad_h(h, ps, create_graph=True))

    assert torch.autograd.gradcheck(fn, flat, eps=1e-6, atol=1e-6, rtol=1e-4)


# --------------------------------------------------------------------------- per-member independence


def test_members_match_separate_single_member_problems():
    model = _model(3, seed=5)
    x = _batch()
    params = list(model.parameters())
    h_fn = _h_fn(model, x)

    g = grad_h(h_fn(), params)
    norms, dnorm = norm_gradient_exact(h_fn(), params)
    fd_norms, fd = norm_gradient_finite_difference(h_fn, params, r=1e-2)
    assert torch.allclose(member_norms(g), norms)
    assert torch.equal(norms, fd_norms)
    for m in range(3):
        ref_norm, ref_g, ref_dnorm = _reference_single_member(model, m, x)
        assert torch.allclose(norms[m], ref_norm, rtol=1e-10, atol=0)
        for a, b in zip(g, ref_g, strict=True):
            assert torch.allclose(a[m : m + 1], b, rtol=1e-10, atol=1e-12)
        for a, b in zip(dnorm, ref_dnorm, strict=True):
            assert torch.allclose(a[m : m + 1], b, rtol=1e-9, atol=1e-12)
        # the finite difference of member m is close to the single-member exact gradient
        assert _rel_err([t[m : m + 1] for t in fd], ref_dnorm) < 5e-2
    assert len({round(v, 6) for v in norms.tolist()}) == 3  # members genuinely differ


def test_member_norms_is_l2_over_all_parameters_together():
    a = torch.tensor([[3.0, 0.0], [1.0, 1.0]])  # (M=2, 2)
    b = torch.tensor([[[4.0]], [[1.0]]])  # (M=2, 1, 1)
    norms = member_norms([a, b])
    assert torch.allclose(norms, torch.tensor([5.0, 3.0**0.5]))


def test_member_norms_has_finite_zero_derivative_at_zero():
    g = torch.tensor([[0.0, 0.0, 0.0], [1.0, -2.0, 2.0]], requires_grad=True)
    member_norms([g]).sum().backward()
    assert torch.isfinite(g.grad).all()
    assert torch.equal(g.grad[0], torch.zeros(3))
    assert torch.allclose(g.grad[1], torch.tensor([1.0, -2.0, 2.0]) / 3.0)


def test_grad_h_gives_zeros_for_unused_params():
    model = _model(2)
    x = _batch()
    unused = nn.Parameter(torch.ones(2, 4, dtype=torch.float64))
    g = grad_h(_h_fn(model, x)(), [*model.parameters(), unused])
    assert torch.equal(g[-1], torch.zeros_like(unused))
    # the last-layer bias gets ∇_b mean(out) = 1 per member
    assert torch.allclose(g[-2], torch.ones_like(g[-2]))


# --------------------------------------------------------------------------- finite difference


def test_finite_difference_converges_linearly_to_exact():
    model = _model(2, seed=11)
    x = _batch()
    params = list(model.parameters())
    h_fn = _h_fn(model, x)
    _, exact = norm_gradient_exact(h_fn(), params)
    errors = []
    for r in (1e-1, 1e-2, 1e-3):
        _, fd = norm_gradient_finite_difference(h_fn, params, r=r)
        errors.append(_rel_err(fd, exact))
    assert errors[2] < 1e-2
    for coarse, fine in itertools.pairwise(errors):
        assert 3.0 < coarse / fine < 30.0, errors


def test_finite_difference_accepts_precomputed_grads():
    model = _model(2, seed=2)
    x = _batch()
    params = list(model.parameters())
    h_fn = _h_fn(model, x)
    calls = []

    def counting_h_fn():
        calls.append(1)
        return h_fn()

    norms_a, est_a = norm_gradient_finite_difference(h_fn, params, r=1e-2)
    norms_b, est_b = norm_gradient_finite_difference(
        counting_h_fn, params, r=1e-2, grads=grad_h(h_fn(), params)
    )
    assert len(calls) == 1  # only the shifted forward
    assert torch.equal(norms_a, norms_b)
    for a, b in zip(est_a, est_b, strict=True):
        assert torch.equal(a, b)


def test_finite_difference_restores_parameters_bit_for_bit():
    model = _model(2, seed=4, dtype=torch.float32, activation="relu")
    x = _batch(torch.float32)
    params = list(model.parameters())
    before = [p.detach().clone() for p in params]
    seen = []

    def h_fn():
        seen.append([p.detach().clone() for p in params])
        return model(x).mean(dim=(1, 2))

    norm_gradient_finite_difference(h_fn, params, r=0.05)
    # the second forward really ran at a shifted point: ω + r·u, ||r·u_m|| = r per member
    shift = (
        torch.stack([(s - b).reshape(2, -1).pow(2).sum(1) for s, b in zip(seen[1], before, strict=True)])
        .sum(0)
        .sqrt()
    )
    assert torch.allclose(shift, torch.full((2,), 0.05), rtol=1e-3)
    for p, b in zip(params, before, strict=True):
        assert torch.equal(p, b)
        assert p.grad is None


def test_finite_difference_keeps_earlier_graphs_valid():
    model = _model(2, seed=6, dtype=torch.float32, activation="relu")
    x = _batch(torch.float32)
    params = list(model.parameters())
    ref = torch.autograd.grad(model(x).pow(2).mean(), params)
    loss = model(x).pow(2).mean()  # graph built before the shift/restore
    norm_gradient_finite_difference(_h_fn(model, x), params, r=0.05)
    loss.backward()
    for p, g in zip(params, ref, strict=True):
        assert torch.equal(p.grad, g)


def test_finite_difference_restores_parameters_when_h_fn_raises():
    model = _model(2, seed=4, dtype=torch.float32)
    x = _batch(torch.float32)
    params = list(model.parameters())
    before = [p.detach().clone() for p in params]
    g = grad_h(_h_fn(model, x)(), params)

    def failing():
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        norm_gradient_finite_difference(failing, params, grads=g)
    for p, b in zip(params, before, strict=True):
        assert torch.equal(p, b)


# --------------------------------------------------------------------------- zero gradient norm


def _model_with_dead_member(dtype: torch.dtype = torch.float64):
    """Member 0 has all-zero weights and biases: with the final bias excluded, ∇h_0 = 0.

    tanh, not ReLU: a dead ReLU's backward would mask a NaN from an unguarded sqrt.
    """
    model = _model(2, seed=8, dtype=dtype, activation="tanh")
    with torch.no_grad():
        for p in model.parameters():
            p[0].zero_()
    params = list(model.parameters())[:-1]  # the last bias always has ∇_b h = 1
    return model, params


def test_zero_gradient_norm_gives_finite_zeros():
    model, params = _model_with_dead_member()
    x = _batch()
    h_fn = _h_fn(model, x)
    assert member_norms(grad_h(h_fn(), params))[0] == 0

    before = [p.detach().clone() for p in params]
    for norms, grads in (
        norm_gradient_exact(h_fn(), params),
        norm_gradient_finite_difference(h_fn, params, r=0.05),
    ):
        assert norms[0] == 0 and norms[1] > 0
        for g in grads:
            assert torch.isfinite(g).all()
            assert torch.equal(g[0], torch.zeros_like(g[0]))
        assert sum(g[1].abs().sum() for g in grads) > 0  # the live member is unaffected
    for p, b in zip(params, before, strict=True):
        assert torch.equal(p, b)

    pen, norms = penalty_gradients(h_fn, params, torch.tensor([1.0, 1.0]), 0.05, "exact")
    assert all(torch.isfinite(g).all() for g in pen)


def test_zero_norm_member_is_not_shifted():
    model, params = _model_with_dead_member()
    x = _batch()
    seen = []

    def h_fn():
        seen.append([p.detach().clone() for p in params])
        return model(x).mean(dim=(1, 2))

    norm_gradient_finite_difference(h_fn, params, r=0.05)
    for s in seen[1]:
        assert torch.equal(s[0], torch.zeros_like(s[0]))


# --------------------------------------------------------------------------- dual update / penalty


def test_constraint_violation():
    v = constraint_violation(torch.tensor([1.0, 2.0, 4.0]), rho=0.05, eps=0.1)
    assert torch.allclose(v, torch.tensor([-0.05, 0.0, 0.1]))


def penalty_gradients(h_fn, params, lmbda, rho, mode, r=0.05):
    """``λ_m ρ ∇_{ω_m} ||∇h_m||`` as training computes it: what
    :meth:`GradNormConstraint.backward` leaves in ``.grad`` for a zero data loss."""
    params = list(params)
    members = params[0].shape[0]
    constraint = GradNormConstraint(Ignite(rho=rho, r=r, grad_mode=mode), members).to(params[0].dtype)
    constraint.lmbda.copy_(torch.as_tensor(lmbda, dtype=params[0].dtype).expand(members))
    saved = [p.grad for p in params]
    for p in params:
        p.grad = None
    h = h_fn()
    norms = constraint.backward(0.0 * h.sum(), h, h_fn, params, lambda loss: loss.backward())
    pen = [p.grad.detach().clone() for p in params]
    for p, g in zip(params, saved, strict=True):
        p.grad = g
    return pen, norms


@pytest.mark.parametrize("mode", ["exact", "finite_difference"])
def test_penalty_gradients_scale_each_member_by_its_lambda(mode):
    model = _model(3, seed=9)
    x = _batch()
    params = list(model.parameters())
    h_fn = _h_fn(model, x)
    if mode == "exact":
        ref_norms, ref = norm_gradient_exact(h_fn(), params)
    else:
        ref_norms, ref = norm_gradient_finite_difference(h_fn, params, r=0.03)
    lmbda = torch.tensor([0.5, -1.0, 2.0])
    rho = 0.05
    pen, norms = penalty_gradients(h_fn, params, lmbda, rho, mode, r=0.03)
    assert torch.allclose(norms, ref_norms)
    for p, r_, g in zip(params, ref, pen, strict=True):
        assert g.shape == p.shape
        for m in range(3):
            assert torch.allclose(g[m], lmbda[m].double() * rho * r_[m])
        assert p.grad is None  # the helper leaves .grad as it found it
    # a scalar λ is shared by every member
    pen_s, _ = penalty_gradients(h_fn, params, 2.0, rho, mode, r=0.03)
    for g_s, r_ in zip(pen_s, ref, strict=True):
        assert torch.allclose(g_s, 2.0 * rho * r_)


def test_penalty_rejects_bad_inputs():
    model = _model(3)
    x = _batch()
    with pytest.raises(ValueError, match="grad_mode"):
        penalty_gradients(_h_fn(model, x), list(model.parameters()), 1.0, 0.05, "other")
    with pytest.raises(ValueError, match="shape"):
        grad_h(model(x).mean(), list(model.parameters()))


def test_descending_the_penalty_reduces_the_gradient_norm():
    model = _model(2, seed=12)
    x = _batch()
    params = list(model.parameters())
    h_fn = _h_fn(model, x)
    opt = torch.optim.SGD(params, lr=0.5)
    _, start = penalty_gradients(h_fn, params, 1.0, 1.0, "finite_difference", r=1e-3)
    for _ in range(20):
        pen, _ = penalty_gradients(h_fn, params, 1.0, 1.0, "finite_difference", r=1e-3)
        for p, g in zip(params, pen, strict=True):
            p.grad = g
        opt.step()
    end = member_norms(grad_h(h_fn(), params))
    assert (end < 0.9 * start).all(), (start, end)


def test_one_backward_penalty_term_equals_double_backward():
    """The fused term used by training (one backward with the data loss) and the DDP Hessian-vector
    path both give exactly the double-backward gradient of Σ_m scale_m ||∇h_m||."""
    model = _model(3)
    x = _batch()
    params = list(model.parameters())
    scale = torch.tensor([0.5, -2.0, 3.0], dtype=torch.float64)
    norms_ref, grads_ref = norm_gradient_exact(_h_fn(model, x)(), params)
    term, norms = norm_penalty_term(grad_h(_h_fn(model, x)(), params, create_graph=True), scale)
    fused = [torch.zeros_like(p) if f is None else f for p, f in
             zip(params, torch.autograd.grad(term, params, allow_unused=True), strict=True)]
    torch.testing.assert_close(norms, norms_ref)
    for f, g in zip(fused, grads_ref, strict=True):
        torch.testing.assert_close(f, g * scale.view(-1, *([1] * (g.dim() - 1))), rtol=1e-10, atol=1e-12)
    # The data-parallel path with a one-process "reduce" is the same Hessian-vector product.
    norms_r, grads_r = norm_gradient_exact(_h_fn(model, x)(), params, reduce=lambda ts: [t.clone() for t in ts])
    torch.testing.assert_close(norms_r, norms_ref)
    for a, b in zip(grads_r, grads_ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_finite_difference_with_a_workspace_is_bit_for_bit_the_same():
    """The reused shifted-point buffers change nothing: same norms, estimate and restored weights."""
    model = _model(2, seed=5, dtype=torch.float32, activation="relu")
    x = _batch(torch.float32)
    params = list(model.parameters())
    before = [p.detach().clone() for p in params]
    norms_a, est_a = norm_gradient_finite_difference(_h_fn(model, x), params, r=0.05)
    workspace = [torch.full_like(p, float("nan")) for p in params]
    for _ in range(2):  # a second call reuses the buffers as they were left
        norms_b, est_b = norm_gradient_finite_difference(_h_fn(model, x), params, r=0.05, workspace=workspace)
        assert torch.equal(norms_a, norms_b)
        for a, b in zip(est_a, est_b, strict=True):
            assert torch.equal(a, b)
        for p, b in zip(params, before, strict=True):
            assert torch.equal(p, b)
    with pytest.raises(ValueError, match="workspace"):
        norm_gradient_finite_difference(_h_fn(model, x), params, workspace=workspace[:-1])
