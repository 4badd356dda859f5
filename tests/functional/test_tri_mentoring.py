"""Tri-mentoring's math: functional.tri_mentoring, outer_dot and tri_mentoring_higher (Chen et al., NeurIPS 2023)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn
from torch.func import functional_call

from lightning_mbo.functional.outer_dot import OuterMSE, auto_chunk, outer_dot
from lightning_mbo.functional.tri_mentoring import (
    EPS,
    disagreement_mask,
    majority_vote,
    mentor_batched,
    neighbourhood,
    pair_indices,
    pair_loss,
    pairwise_labels,
    predict_stacked,
    soft_label_grad_batched,
    summed_rank_labels,
)
from lightning_mbo.functional.tri_mentoring_higher import mentor_proxy_higher, soft_label_grad_higher
from lightning_mbo.nn import StackedMLP, member_forward, member_module, member_params

F64 = torch.float64

# ----------------------------------------------------------------------------------------------
# Hand-computed examples
# ----------------------------------------------------------------------------------------------


def test_pair_indices_row_major() -> None:
    i, j = pair_indices(3)
    assert i.dtype == torch.long and j.dtype == torch.long
    assert i.tolist() == [0, 0, 1] and j.tolist() == [1, 2, 2]
    i, j = pair_indices(4)
    assert i.tolist() == [0, 0, 0, 1, 1, 2]
    assert j.tolist() == [1, 2, 3, 2, 3, 3]
    i, j = pair_indices(10)
    assert i.numel() == 45 and bool((i < j).all())


def test_neighbourhood_shape_scale_and_seed() -> None:
    x = torch.randn(2, 3, 50, dtype=F64)
    gen = torch.Generator().manual_seed(0)
    nb = neighbourhood(x, 400, 0.1, generator=gen)
    assert nb.shape == (2, 3, 400, 50) and nb.dtype == F64
    noise = (nb - x.unsqueeze(-2)) / 0.1
    assert abs(noise.mean().item()) < 0.02
    assert abs(noise.std().item() - 1.0) < 0.02  # standard deviation delta, not delta**2 or 1
    again = neighbourhood(x, 400, 0.1, generator=torch.Generator().manual_seed(0))
    other = neighbourhood(x, 400, 0.1, generator=torch.Generator().manual_seed(1))
    assert torch.equal(nb, again) and not torch.equal(nb, other)
    assert torch.equal(neighbourhood(x, 5, 0.0), x.unsqueeze(-2).expand(2, 3, 5, 50))


def test_pairwise_labels_hand() -> None:
    pred = torch.tensor([[3.0, 1.0, 2.0], [1.0, 1.0, 1.0], [0.0, 2.0, 1.0]])
    # pairs (0,1), (0,2), (1,2)
    expected = torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    assert torch.equal(pairwise_labels(pred), expected)
    batched = pairwise_labels(pred.expand(2, 3, 3))
    assert batched.shape == (2, 3, 3) and torch.equal(batched[1], expected)


# Three proxies at K = 3 points: they pairwise disagree, and their sum ranks differently.
PRED3 = torch.tensor([[0.0, 1.0, 5.0], [0.0, 1.0, -5.0], [3.0, 0.0, 0.0]])
LABELS3 = torch.tensor([[0.0, 0.0, 0.0], [0.0, 1.0, 1.0], [1.0, 1.0, 0.0]])


def test_majority_vote_three_proxies() -> None:
    assert torch.equal(pairwise_labels(PRED3), LABELS3)
    # votes for "i > j": 1, 2, 1 of 3 -> the 2-vs-1 majorities are 0, 1, 0
    assert torch.equal(majority_vote(LABELS3), torch.tensor([0.0, 1.0, 0.0]))
    unanimous = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]])
    assert torch.equal(majority_vote(unanimous), torch.tensor([1.0, 0.0]))
    batched = torch.stack([LABELS3, 1 - LABELS3])
    assert torch.equal(majority_vote(batched), torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 1.0]]))


def test_majority_vote_even_tie_is_zero() -> None:
    labels = torch.tensor([[1.0, 1.0, 0.0], [0.0, 1.0, 0.0]])
    assert torch.equal(majority_vote(labels), torch.tensor([0.0, 1.0, 0.0]))


def test_summed_rank_labels() -> None:
    # sums 3, 2, 0 -> all three pairs 1, unlike the majority vote (0, 1, 0)
    assert torch.equal(summed_rank_labels(PRED3), torch.tensor([1.0, 1.0, 1.0]))
    assert torch.equal(summed_rank_labels(PRED3.expand(4, 3, 3)), torch.ones(4, 3))


def test_disagreement_mask() -> None:
    consensus = majority_vote(LABELS3)
    mask = disagreement_mask(LABELS3, consensus)
    expected = torch.tensor([[False, True, False], [False, False, True], [True, False, False]])
    assert mask.dtype == torch.bool and torch.equal(mask, expected)
    batched = disagreement_mask(torch.stack([LABELS3, LABELS3]), torch.stack([consensus, 1 - consensus]))
    assert torch.equal(batched[0], expected) and torch.equal(batched[1], ~expected)


def test_pair_loss_hand_value() -> None:
    diff = torch.tensor([0.0, math.log(3.0), 5.0], dtype=F64)  # p = 1/2, 3/4, σ(5)
    soft = torch.tensor([1.0, 0.5, 0.0], dtype=F64)
    bce0 = -math.log(0.5 + EPS)
    bce1 = -(0.5 * math.log(0.75 + EPS) + 0.5 * math.log(0.25 + EPS))
    mask = torch.tensor([True, True, False])
    assert pair_loss(diff, soft, mask).item() == pytest.approx((bce0 + bce1) / 2, rel=1e-12)
    assert pair_loss(diff, soft, torch.tensor([False, True, False])).item() == pytest.approx(bce1, rel=1e-12)
    # leading dims reduce independently
    out = pair_loss(diff.expand(2, 3), soft.expand(2, 3), torch.stack([mask, ~mask]))
    bce2 = -math.log(1 - 1 / (1 + math.exp(-5.0)) + EPS)
    assert out.shape == (2,)
    assert out.tolist() == pytest.approx([(bce0 + bce1) / 2, bce2], rel=1e-12)


def test_pair_loss_empty_mask_is_zero_without_nan() -> None:
    diff = torch.tensor([[50.0, -50.0], [0.3, -0.2]], dtype=F64, requires_grad=True)
    soft = torch.tensor([[0.0, 1.0], [1.0, 0.0]], dtype=F64, requires_grad=True)
    mask = torch.tensor([[False, False], [True, False]])
    loss = pair_loss(diff, soft, mask)
    assert loss[0].item() == 0.0 and loss[1].item() > 0
    gd, gs = torch.autograd.grad(loss.sum(), (diff, soft))
    assert torch.isfinite(gd).all() and torch.isfinite(gs).all()
    assert torch.equal(gd[0], torch.zeros(2, dtype=F64)) and torch.equal(gs[0], torch.zeros(2, dtype=F64))
    assert gd[1, 0] != 0 and gd[1, 1] == 0  # only the masked pair gets a gradient


# ----------------------------------------------------------------------------------------------
# Helpers: stacked proxies <-> per-proxy nn.Modules
# ----------------------------------------------------------------------------------------------

D, HIDDEN, P, C, K = 6, (16, 16), 3, 4, 6


def _stacked_params(seed: int, activation: str = "relu") -> dict[str, Tensor]:
    """(C, P, ...) proxy copies; candidates perturbed a little so index mix-ups show.

    Candidate 0: proxy 1 is a copy of proxy 0 (so proxies 0 and 1 never disagree with the
    majority: empty masks). Candidate 1: all three proxies identical (all masks empty).
    """
    torch.manual_seed(seed)
    net = StackedMLP(P, D, HIDDEN, activation=activation).to(F64)
    params = {}
    for name, t in net.named_parameters():
        t = t.detach().unsqueeze(0).expand(C, *t.shape).clone()
        t = t + 0.05 * torch.randn_like(t)
        t[0, 1] = t[0, 0]
        t[1, 1] = t[1, 0]
        t[1, 2] = t[1, 0]
        params[name] = t
    return params


def _data(seed: int, n: int = 40) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, D, generator=g, dtype=F64)
    y = torch.sin(x).sum(-1) + 0.5 * x[:, 0] * x[:, 1]
    return x, y


def _module_pred(module: nn.Module, x: Tensor) -> Tensor:
    return module(x).reshape(x.shape[0])


# ----------------------------------------------------------------------------------------------
# The label gradient: autograd through θ'(s) (higher) == closed form
# ----------------------------------------------------------------------------------------------


def test_higher_label_grad_equals_closed_form() -> None:
    torch.manual_seed(3)
    net = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 1)).to(F64)
    k, beta = 5, 0.1
    x_nb = torch.randn(k, 4, dtype=F64)
    x_data = torch.randn(30, 4, dtype=F64)
    y_data = torch.cos(x_data).sum(-1)
    i, j = pair_indices(k)
    soft = torch.rand(i.numel(), dtype=F64)  # arbitrary soft labels, not only 0/1
    mask = torch.tensor([True, False, True, True, False, True, False, True, True, False])
    before = [p.detach().clone() for p in net.parameters()]

    g_higher = soft_label_grad_higher(net, x_nb, soft, mask, x_data, y_data, beta=beta)

    # The proxy is not touched by the bi-level step.
    assert all(torch.equal(a, b) for a, b in zip(before, net.parameters(), strict=True))

    # Closed form by hand: (β/|P|) <∇_θ' L_data(θ'), ∇_θ d_k(θ)>.
    theta = {n: p.detach().clone().requires_grad_(True) for n, p in net.named_parameters()}
    pred = functional_call(net, theta, (x_nb,)).reshape(-1)
    d = pred[i] - pred[j]
    g_pair = torch.autograd.grad(pair_loss(d, soft, mask), list(theta.values()), retain_graph=True)
    inner = {
        n: (t - beta * g).detach().requires_grad_(True)
        for (n, t), g in zip(theta.items(), g_pair, strict=True)
    }
    l_data = ((functional_call(net, inner, (x_data,)).reshape(-1) - y_data) ** 2).mean()
    g_data = torch.autograd.grad(l_data, list(inner.values()))
    closed = torch.zeros_like(soft)
    for kk in range(i.numel()):
        if mask[kk]:
            gd = torch.autograd.grad(d[kk], list(theta.values()), retain_graph=True)
            dot = sum((a * b).sum() for a, b in zip(g_data, gd, strict=True))
            closed[kk] = beta / int(mask.sum()) * dot

    assert torch.equal(g_higher[~mask], torch.zeros_like(g_higher[~mask]))
    assert (g_higher[mask].abs() > 1e-6).all()
    # The closed form's ε -> 0 limit (c_k = 1): equal to float tolerance.
    torch.testing.assert_close(g_higher, closed, rtol=1e-6, atol=1e-12)
    # With the exact factor c_k = -∂²BCE/∂d∂s of the ε = 1e-9 loss: equal to rounding.
    p = torch.sigmoid(d.detach())
    c = p * (1 - p) * (1 / (p + EPS) + 1 / (1 - p + EPS))
    torch.testing.assert_close(g_higher, closed * c, rtol=1e-11, atol=1e-15)


@pytest.mark.parametrize("data_chunk", [None, 7])
def test_batched_label_grad_equals_higher(data_chunk: int | None) -> None:
    params = _stacked_params(1)
    x_data, y_data = _data(1)
    g = torch.Generator().manual_seed(5)
    x_nb = torch.randn(C, K, D, generator=g, dtype=F64)
    n_pairs = K * (K - 1) // 2
    soft = torch.rand(C, P, n_pairs, generator=g, dtype=F64)
    mask = torch.rand(C, P, n_pairs, generator=g) < 0.5
    mask[2, 1] = False  # one empty set
    beta = 0.05
    batched = soft_label_grad_batched(params, x_nb, soft, mask, OuterMSE(x_data, y_data, data_chunk), beta=beta)
    assert batched.shape == (C, P, n_pairs)
    assert torch.equal(batched[2, 1], torch.zeros(n_pairs, dtype=F64))
    for c in range(C):
        for p in range(P):
            if not mask[c, p].any():
                continue
            module = member_module({n: t[c, p] for n, t in params.items()})
            ref = soft_label_grad_higher(module, x_nb[c], soft[c, p], mask[c, p], x_data, y_data, beta=beta)
            assert ref[mask[c, p]].abs().min() > 1e-8
            torch.testing.assert_close(batched[c, p], ref, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("activation", ["relu", "leaky_relu", "tanh", "swish"])
@pytest.mark.parametrize("data_chunk", [None, 9])
def test_outer_dot_equals_autograd(activation: str, data_chunk: int | None) -> None:
    """<∇_θ' L_data(θ'), ∇_θ f(x_a; θ)> without forming the gradient == autograd's, any depth."""
    torch.manual_seed(11)
    m, hidden = 3, (7, 5, 6)
    theta = dict(StackedMLP(m, D, hidden, activation=activation).to(F64).named_parameters())
    theta = {n: t.detach() for n, t in theta.items()}
    inner = {n: t + 0.1 * torch.randn_like(t) for n, t in theta.items()}
    x_data, y_data = _data(2, n=31)
    x_nb = torch.randn(m, K, D, dtype=F64)
    u, pred = outer_dot(inner, theta, x_nb, OuterMSE(x_data, y_data, data_chunk), activation)
    assert u.shape == pred.shape == (m, K)
    for member in range(m):
        th = {n: t[member].clone().requires_grad_(True) for n, t in theta.items()}
        inn = {n: t[member].clone().requires_grad_(True) for n, t in inner.items()}
        l_data = ((member_forward(inn, x_data, activation)[:, 0] - y_data) ** 2).mean()
        g = torch.autograd.grad(l_data, list(inn.values()))
        f = member_forward(th, x_nb[member], activation)[:, 0]
        torch.testing.assert_close(pred[member], f.detach(), rtol=1e-12, atol=1e-12)
        for a in range(K):
            gf = torch.autograd.grad(f[a], list(th.values()), retain_graph=True)
            ref = sum((x * y).sum() for x, y in zip(g, gf, strict=True))
            torch.testing.assert_close(u[member, a], ref.detach(), rtol=1e-10, atol=1e-14)


@pytest.mark.slow  # memory-sized chunks measured on large activations (about a minute)
def test_auto_chunk_on_cpu_keeps_each_activation_near_8_mib() -> None:
    """On CPU a chunk's ``(copies, rows, width)`` activation stays near 8 MiB, never under 64 rows."""
    x_data = torch.zeros(32898, D)

    def params(copies: int, hidden: tuple[int, ...]) -> dict[str, Tensor]:
        dims = [D, *hidden, 1]
        return {n: torch.zeros(copies, *s) for i in range(len(dims) - 1)
                for n, s in ((f"layers.{i}.weight", (dims[i], dims[i + 1])), (f"layers.{i}.bias", (1, dims[i + 1])))}

    for copies, hidden in [(384, (64, 64)), (48, (128, 32)), (3, (16,))]:
        rows = auto_chunk(params(copies, hidden), x_data)
        block = copies * rows * max(hidden) * 4
        assert rows == 64 or 2**23 - copies * max(hidden) * 4 < block <= 2**23, (copies, hidden, rows)
    assert auto_chunk(params(384, (2048, 2048)), x_data) == 64


def test_outer_precision_bfloat16_and_tf32_stay_close_to_float32() -> None:
    """Rounded large products change the label gradient only at bfloat16's precision; tf32 is a
    GPU mode and leaves CPU results bit for bit."""
    torch.manual_seed(4)
    c, width = 5, 96
    net = StackedMLP(c * P, D, (width, width))
    params = {n: t.detach().reshape(c, P, *t.shape[1:]) for n, t in net.named_parameters()}
    x_data = torch.randn(300, D)
    y_data = torch.sin(x_data).sum(-1)
    x_nb = torch.randn(c, K, D)
    n_pairs = K * (K - 1) // 2
    soft = torch.rand(c, P, n_pairs)
    mask = torch.rand(c, P, n_pairs) < 0.6
    out = {
        prec: soft_label_grad_batched(params, x_nb, soft, mask, OuterMSE(x_data, y_data, precision=prec), beta=0.05)
        for prec in ("float32", "tf32", "bfloat16")
    }
    assert torch.equal(out["tf32"], out["float32"])
    ref = out["float32"]
    err = (out["bfloat16"] - ref).norm() / ref.norm()
    assert 0 < err < 3e-2, err
    with pytest.raises(ValueError, match="outer precision"):
        soft_label_grad_batched(params, x_nb, soft, mask, OuterMSE(x_data, y_data, precision="fp8"))


# ----------------------------------------------------------------------------------------------
# predict_stacked
# ----------------------------------------------------------------------------------------------


def test_predict_stacked_matches_stacked_mlp() -> None:
    params = _stacked_params(2, activation="tanh")
    x = torch.randn(C, 5, D, dtype=F64)
    out = predict_stacked(params, x, activation="tanh")
    assert out.shape == (C, P, 5)
    for c in range(C):
        net = StackedMLP(P, D, HIDDEN, activation="tanh").to(F64)
        net.load_state_dict({n: t[c] for n, t in params.items()})
        torch.testing.assert_close(out[c], net(x[c])[..., 0], rtol=1e-12, atol=1e-12)
    # differentiable with respect to x (the caller's ascent objective)
    xr = x.clone().requires_grad_(True)
    (gx,) = torch.autograd.grad(predict_stacked(params, xr, activation="tanh").mean(), xr)
    assert gx.shape == x.shape and gx.abs().sum() > 0


# ----------------------------------------------------------------------------------------------
# The two backends agree step by step
# ----------------------------------------------------------------------------------------------


def _reference_step(modules, x_nb, x_data, y_data, **kw):
    """Loop over candidates and proxies: all labels first, then mentor_proxy_higher one at a time."""
    with torch.no_grad():
        pred = torch.stack(
            [torch.stack([_module_pred(m, x_nb[c]) for m in row]) for c, row in enumerate(modules)]
        )
        labels = pairwise_labels(pred)
        consensus = majority_vote(labels)
        mask = disagreement_mask(labels, consensus)
        soft = torch.stack(
            [
                torch.stack(
                    [
                        mentor_proxy_higher(m, x_nb[c], consensus[c], mask[c, p], x_data, y_data, **kw)
                        for p, m in enumerate(row)
                    ]
                )
                for c, row in enumerate(modules)
            ]
        )
    return consensus, mask, soft


def _batched_step(params, x_nb, x_data, y_data, data_chunk, **kw):
    with torch.no_grad():
        labels = pairwise_labels(predict_stacked(params, x_nb))
        consensus = majority_vote(labels)
        mask = disagreement_mask(labels, consensus)
        new, soft = mentor_batched(params, x_nb, consensus, mask, OuterMSE(x_data, y_data, data_chunk), **kw)
    return consensus, mask, soft, new


@pytest.mark.parametrize(
    ("soft_labels", "beta", "lambda_s", "data_chunk"),
    [
        (True, 1e-3, 0.1, None),  # the released settings
        (True, 0.05, 20.0, 7),  # large steps so that the refined labels move well inside (0, 1)
        (False, 0.05, 20.0, None),  # "w/o soft-labelling" ablation
    ],
)
def test_backends_agree_step_by_step(soft_labels: bool, beta: float, lambda_s: float, data_chunk) -> None:
    params = _stacked_params(0)
    x_data, y_data = _data(0)
    modules = [
        [member_module({n: t[c, p] for n, t in params.items()}) for p in range(P)] for c in range(C)
    ]
    kw = {"beta": beta, "lambda_s": lambda_s, "soft_labels": soft_labels}
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(C, D, generator=gen, dtype=F64)
    refined_inside = 0
    for _step in range(3):
        x_nb = neighbourhood(x, K, 0.3, generator=gen)
        params_before = {n: t.clone() for n, t in params.items()}

        cons_r, mask_r, soft_r = _reference_step(modules, x_nb, x_data, y_data, **kw)
        cons_b, mask_b, soft_b, params = _batched_step(params, x_nb, x_data, y_data, data_chunk, **kw)

        assert torch.equal(cons_r, cons_b) and torch.equal(mask_r, mask_b)
        torch.testing.assert_close(soft_b, soft_r, rtol=0, atol=1e-10)
        for c in range(C):
            for p in range(P):
                ref = member_params(modules[c][p])
                for n, t in params.items():
                    torch.testing.assert_close(t[c, p], ref[n], rtol=0, atol=1e-10)

        # Empty disagreement sets: candidate 0's proxies 0 and 1, all of candidate 1's.
        empty = ~mask_b.any(-1)
        assert empty[0, 0] and empty[0, 1] and empty[1].all() and not empty[0, 2]
        cons_full = cons_b.unsqueeze(1).expand(C, P, -1)
        for c, p in empty.nonzero().tolist():
            assert torch.equal(soft_b[c, p], cons_full[c, p])
            assert all(torch.equal(t[c, p], params_before[n][c, p]) for n, t in params.items())
        # Proxies with a non-empty set moved.
        for c, p in (~empty).nonzero().tolist():
            delta = max((t[c, p] - params_before[n][c, p]).abs().max().item() for n, t in params.items())
            assert delta > 1e-7
        # Labels: consensus off the masks; refined (or hard, for the ablation) on them.
        assert torch.equal(soft_b[~mask_b], cons_full[~mask_b])
        on_mask = soft_b[mask_b]
        assert ((on_mask >= 0) & (on_mask <= 1)).all()
        if soft_labels:
            assert (on_mask != cons_full[mask_b]).any()
            refined_inside += int(((on_mask > 1e-6) & (on_mask < 1 - 1e-6)).sum())
        else:
            assert torch.equal(on_mask, cons_full[mask_b])

        # Move the candidates like the caller would (ascent on the mean prediction).
        xr = x.clone().requires_grad_(True)
        (gx,) = torch.autograd.grad(predict_stacked(params, xr.unsqueeze(1)).mean(), xr)
        x = x + 0.5 * gx
    if soft_labels and lambda_s > 1:
        assert refined_inside > 0


def test_mentor_batched_does_not_modify_inputs() -> None:
    params = _stacked_params(4)
    snapshot = {n: t.clone() for n, t in params.items()}
    x_data, y_data = _data(4)
    x_nb = torch.randn(C, K, D, dtype=F64)
    labels = pairwise_labels(predict_stacked(params, x_nb))
    consensus = majority_vote(labels)
    mask = disagreement_mask(labels, consensus)
    new, _ = mentor_batched(params, x_nb, consensus, mask, OuterMSE(x_data, y_data), beta=0.05)
    assert all(torch.equal(params[n], snapshot[n]) for n in params)
    assert any(not torch.equal(new[n], params[n]) for n in params)
    assert all(new[n].shape == params[n].shape for n in params)


# ----------------------------------------------------------------------------------------------
# One mentoring step against a plain-autograd statement of paper Eqs. 8-9, written here
# (independent of both backends: its own MLP, its own pair loss with the literal 1e-9)
# ----------------------------------------------------------------------------------------------


def _plain_mlp(theta: list[Tensor], x: Tensor) -> Tensor:
    """ReLU MLP ``(B, D) -> (B,)``; ``theta = [W_0 (in, out), b_0 (1, out), W_1, b_1, ...]``."""
    for layer in range(0, len(theta), 2):
        x = x @ theta[layer] + theta[layer + 1]
        if layer < len(theta) - 2:
            x = torch.relu(x)
    return x[:, 0]


def _plain_pair_loss(theta: list[Tensor], x_nb: Tensor, s: Tensor, mask: Tensor) -> Tensor:
    k = x_nb.shape[0]
    first, second = zip(*[(a, b) for a in range(k) for b in range(a + 1, k)], strict=True)
    pred = _plain_mlp(theta, x_nb)
    prob = torch.sigmoid(pred[list(first)] - pred[list(second)])[mask]
    return -(s * torch.log(prob + 1e-9) + (1 - s) * torch.log(1 - prob + 1e-9)).mean()


def _plain_mentoring_step(theta0, x_nb, consensus, mask, x_data, y_data, beta, lambda_s):
    """``s ← clip(s - λ_s ∂L_data(θ - β∇_θL_pair(θ; s))/∂s, 0, 1)``, then ``θ ← θ - β∇_θL_pair(θ; s)``."""
    theta = [t.detach().clone().requires_grad_(True) for t in theta0]
    s = consensus[mask].detach().clone().requires_grad_(True)
    g_inner = torch.autograd.grad(_plain_pair_loss(theta, x_nb, s, mask), theta, create_graph=True)
    theta_inner = [t - beta * g for t, g in zip(theta, g_inner, strict=True)]  # Eq. 8
    l_data = ((_plain_mlp(theta_inner, x_data) - y_data) ** 2).mean()  # Eq. 9's outer objective
    (g_s,) = torch.autograd.grad(l_data, s)
    s_new = (s - lambda_s * g_s).clamp(0.0, 1.0).detach()  # descent on L_data, then the clip
    g_mentor = torch.autograd.grad(_plain_pair_loss(theta, x_nb, s_new, mask), theta)
    return [(t - beta * g).detach() for t, g in zip(theta, g_mentor, strict=True)], s_new, g_s


@pytest.mark.parametrize(("beta", "lambda_s"), [(1e-3, 0.1), (0.05, 20.0)])
def test_one_mentoring_step_equals_plain_autograd_reference(beta: float, lambda_s: float) -> None:
    """Both backends against the reference above: the refined labels after the clip and the
    proxy after its β step. A soft-label step that ascends L_data, or a mentoring step of 2β,
    fails here in either backend."""
    torch.manual_seed(11)
    net = StackedMLP(1, D, HIDDEN).to(F64)
    names = [n for n, _ in net.named_parameters()]
    theta0 = [t.detach()[0] for _, t in net.named_parameters()]
    x_data, y_data = _data(11)
    x_nb = torch.randn(K, D, dtype=F64)
    n_pairs = K * (K - 1) // 2
    consensus = (torch.rand(n_pairs) < 0.5).to(F64)
    mask = torch.rand(n_pairs) < 0.6
    mask[:2] = True

    theta_ref, s_ref, g_s = _plain_mentoring_step(theta0, x_nb, consensus, mask, x_data, y_data, beta, lambda_s)
    # The check has teeth: the refined labels moved off the hard labels, in the direction of
    # -∂L_data/∂s, and stayed strictly inside (0, 1) on some pairs (unclipped).
    moved = s_ref - consensus[mask]
    assert moved.abs().max() > 1e-7
    assert bool(((s_ref > 0) & (s_ref < 1)).any())
    assert bool((torch.sign(moved[moved != 0]) == -torch.sign(g_s[moved != 0])).all())

    # Reference backend (higher), one proxy in place.
    proxy = member_module(dict(zip(names, theta0, strict=True)))
    s_higher = mentor_proxy_higher(proxy, x_nb, consensus, mask, x_data, y_data, beta=beta, lambda_s=lambda_s)
    torch.testing.assert_close(s_higher[mask], s_ref, rtol=0, atol=1e-12)
    assert torch.equal(s_higher[~mask], consensus[~mask])
    for name, ref in zip(names, theta_ref, strict=True):
        torch.testing.assert_close(member_params(proxy)[name], ref, rtol=1e-10, atol=1e-12)

    # Batched backend, one candidate with one proxy.
    params = {n: t[None, None] for n, t in zip(names, theta0, strict=True)}
    new, s_batched = mentor_batched(params, x_nb[None], consensus[None], mask[None, None], OuterMSE(x_data, y_data),
                                    beta=beta, lambda_s=lambda_s)
    torch.testing.assert_close(s_batched[0, 0, mask], s_ref, rtol=0, atol=1e-12)
    for name, ref in zip(names, theta_ref, strict=True):
        torch.testing.assert_close(new[name][0, 0], ref, rtol=1e-10, atol=1e-12)


def test_pair_loss_epsilon_is_1e_9() -> None:
    """Where ``p`` underflows, ``-log(p + ε) = -log ε``: 20.723 for 1e-9 (18.421 for 1e-8)."""
    diff = torch.tensor([-60.0, 60.0], dtype=F64)
    soft = torch.tensor([1.0, 0.0], dtype=F64)
    loss = pair_loss(diff, soft, torch.tensor([True, True]))
    assert loss.item() == pytest.approx(-math.log(1e-9 + 1 / (1 + math.exp(60.0))), rel=1e-9)
    assert loss.item() == pytest.approx(20.7232658, rel=1e-7)
    assert EPS == 1e-9
