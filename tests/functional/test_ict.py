"""Tests of ICT's equations and fine-tuning backends (lightning_mbo.functional.ict*, .adam).

Yuan et al., "Importance-aware Co-teaching for Offline Model-based Optimization", NeurIPS 2023.
The equations on hand examples; the Adam step against ``torch.optim.Adam``; the meta-weight
gradient against a closed form written here and against ``higher``; the batched fine-tuning
against the ``higher`` reference (float64, both modes), and the released bug's net effect.
"""

from __future__ import annotations

from collections.abc import Iterator

import higher
import pytest
import torch
from torch import Tensor
from torch.nn import functional as F

from lightning_mbo.functional.adam import adam_step
from lightning_mbo.functional.ict import (
    FineTuning,
    coteaching_select,
    draw_noise,
    meta_rows,
    meta_weight_update,
    neighbourhood,
    real_step_loss,
    small_loss_indices,
    weighted_loss,
)
from lightning_mbo.functional.ict_batched import finetune_batched, meta_weight_grad, val_mse_grad
from lightning_mbo.functional.ict_higher import finetune_higher
from lightning_mbo.nn import StackedMLP, member_forward, member_module, member_params
from lightning_mbo.validation import SettingsError

D, N, HIDDEN = 6, 120, (12, 12)


@pytest.fixture(autouse=True)
def float64() -> Iterator[None]:
    """float64 everywhere (torch.optim.Adam's step counter too), one thread for tiny tensors."""
    dtype, threads = torch.get_default_dtype(), torch.get_num_threads()
    torch.set_default_dtype(torch.float64)
    torch.set_num_threads(1)
    yield
    torch.set_default_dtype(dtype)
    torch.set_num_threads(threads)


def triples(groups: int, seed: int = 0) -> dict[str, Tensor]:
    """``groups`` triples of small ReLU proxies in StackedMLP layout ``(G, 3, ...)``."""
    torch.manual_seed(seed)
    net = StackedMLP(3 * groups, D, HIDDEN, 1, "relu", "torch")
    return {n: p.detach().view(groups, 3, *p.shape[1:]).clone() for n, p in net.named_parameters()}


def static_set(seed: int = 1) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(N, D, generator=g)
    return x, torch.sin(x.sum(-1)) + 0.1 * torch.randn(N, generator=g)


def noise_for(groups: int, s: FineTuning, seed: int = 2) -> Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.stack([draw_noise((s.steps, s.neighbours), D, s.mode, gen) for _ in range(groups)]).double()


# ----------------------------------------------------------------------------------------------
# The equations on hand examples
# ----------------------------------------------------------------------------------------------


def test_neighbourhood_released_noise_is_one_scalar_per_neighbour() -> None:
    x = torch.tensor([1.0, -2.0, 0.5])
    released = draw_noise((4,), 3, "released", torch.Generator().manual_seed(0))
    fixed = draw_noise((4,), 3, "fixed", torch.Generator().manual_seed(0))
    assert released.shape == (4, 1) and fixed.shape == (4, 3)
    nb = neighbourhood(x, released, 0.1)
    assert nb.shape == (4, 3)
    # Every neighbour is x + 0.1 ε_k (1, 1, 1): all coordinates moved by the same amount.
    torch.testing.assert_close(nb - x, 0.1 * released.expand(4, 3), rtol=0, atol=1e-15)
    assert float((nb - x).std(-1).max()) < 1e-12
    moved = neighbourhood(x, fixed, 0.1) - x
    torch.testing.assert_close(moved, 0.1 * fixed, rtol=0, atol=1e-15)
    assert float(moved.std(-1).min()) > 1e-3
    with pytest.raises(SettingsError, match="mode"):
        draw_noise((4,), 3, "scalar")  # type: ignore[arg-type]


def test_small_loss_selection_exchanges_the_peers_picks() -> None:
    losses = torch.tensor([[0.5, 0.1, 0.9, 0.1, 0.3],    # student 0: smallest at 1 and 3 (tie: lower first)
                           [0.2, 0.8, 0.0, 0.4, 0.6]])   # student 1: smallest at 2 and 0
    assert small_loss_indices(losses, 2).tolist() == [[1, 3], [2, 0]]
    # Student 0 trains on student 1's picks and vice versa (ICT.py:19-23).
    assert coteaching_select(losses, 2).tolist() == [[2, 0], [1, 3]]
    batched = coteaching_select(torch.stack([losses, losses.flip(0)]), 2)
    assert batched.tolist() == [[[2, 0], [1, 3]], [[1, 3], [2, 0]]]
    assert coteaching_select(losses, 5).sort(-1).values.tolist() == [list(range(5))] * 2  # n = K: all samples
    with pytest.raises(ValueError, match="two students"):
        coteaching_select(losses[:1], 2)


def test_weighted_losses_released_is_the_broadcast() -> None:
    w = torch.tensor([1.0, 0.5, 2.0, 0.0])
    sel = torch.tensor([0.3, 1.0, 0.2, 4.0])
    every = torch.tensor([0.3, 1.0, 0.2, 4.0, 7.0, 0.5])
    # The released expression: (n,) * (n, 1) and (n,) * (K, 1), summed, over n (ICT.py:108-109, 132-133).
    assert float(weighted_loss(w, sel, "released")) == pytest.approx(float(torch.sum(w * sel[:, None]) / 4))
    assert float(weighted_loss(w, sel, "released")) == pytest.approx(3.5 * 5.5 / 4)
    assert float(weighted_loss(w, sel, "fixed")) == pytest.approx((0.3 + 0.5 + 0.4 + 0.0) / 4)
    assert float(real_step_loss(w, every, sel, "released")) == pytest.approx(float(torch.sum(w * every[:, None]) / 4))
    assert float(real_step_loss(w, every, sel, "released")) == pytest.approx(3.5 * 13.0 / 4)
    assert float(real_step_loss(w, every, sel * 100, "released")) == float(real_step_loss(w, every, sel, "released"))
    assert float(real_step_loss(w, every, sel, "fixed")) == float(weighted_loss(w, sel, "fixed"))
    assert float(real_step_loss(w, every * 100, sel, "fixed")) == float(real_step_loss(w, every, sel, "fixed"))


def test_meta_weight_update_hand_examples() -> None:
    w = torch.ones(4)
    # g / ||g||_1 = (0.75, -0.25, 0, 0) -> clip 0.2 -> (0.2, -0.2, 0, 0); w - 0.3 * that.
    got = meta_weight_update(w, torch.tensor([3.0, -1.0, 0.0, 0.0]), beta=0.3)
    torch.testing.assert_close(got, torch.tensor([0.94, 1.06, 1.0, 1.0]), rtol=0, atol=1e-15)
    # Within the clip: g / ||g||_1 = (0.1, -0.1, 0.2, 0.1, 0.1, 0.1, 0.1, 0.2), whatever g's scale; step 2 * that.
    g = torch.tensor([1.0, -1.0, 2.0, 1.0, 1.0, 1.0, 1.0, 2.0])
    for scale in (1e-6, 1.0, 1e6):
        got = meta_weight_update(torch.ones(8), scale * g, beta=2.0)
        torch.testing.assert_close(got, torch.tensor([0.8, 1.2, 0.6, 0.8, 0.8, 0.8, 0.8, 0.6]), rtol=0, atol=1e-14)
    # The weights stay in [0, 2].
    got = meta_weight_update(torch.tensor([0.05, 1.95]), torch.tensor([1.0, -1.0]), beta=1.0)
    assert got.tolist() == [0.0, 2.0]
    # g = 0: unchanged (the norm is floored at 1e-12, as F.normalize).
    assert torch.equal(meta_weight_update(w, torch.zeros(4), beta=0.3), w)
    # The released case: n equal entries -> every weight 1 -/+ beta / n (0.0375 for n = 8, beta = 0.3).
    for sign in (1.0, -1.0):
        got = meta_weight_update(torch.ones(8), torch.full((8,), sign * 1e-9), beta=0.3)
        torch.testing.assert_close(got, torch.full((8,), 1 - sign * 0.0375), rtol=0, atol=1e-15)
    # Against the released code's own F.normalize / clamp chain on a random gradient.
    g = torch.randn(2, 8, generator=torch.Generator().manual_seed(0))
    ref = torch.stack([torch.clamp(1 - 0.3 * torch.clamp(F.normalize(r, p=1, dim=0), -0.2, 0.2), 0, 2) for r in g])
    torch.testing.assert_close(meta_weight_update(torch.ones(2, 8), g, 0.3), ref, rtol=0, atol=1e-15)


def test_meta_rows() -> None:
    y = torch.tensor([0.3, -1.0, 2.0, 0.1, 5.0])
    assert sorted(meta_rows(y, "full").tolist()) == [0, 1, 2, 3, 4]
    assert sorted(meta_rows(y, "half").tolist()) == [2, 4]  # the better N // 2
    big = torch.randn(300, generator=torch.Generator().manual_seed(0))
    top = meta_rows(big, "top128")
    assert len(top) == 128 and float(big[top].min()) >= float(big.sort().values[-128])
    with pytest.raises(SettingsError, match="reweight_mode"):
        meta_rows(y, "top64")  # type: ignore[arg-type]


def test_fine_tuning_settings_are_validated() -> None:
    for kwargs, option in (({"select": 200}, "num_coteaching"), ({"neighbours": 1}, "neighbours"),
                           ({"alpha": 0.0}, "alpha"), ({"beta": -0.1}, "beta"), ({"mode": "paper"}, "mode"),
                           ({"x_lr": 0.0}, "finetune_lr"), ({"steps": -1}, "finetune_steps")):
        with pytest.raises(SettingsError, match=rf"{option} \(--model\.init_args\.{option}\)"):
            FineTuning(**kwargs)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------------------------
# Adam, and the meta-weight gradient against a closed form and against higher
# ----------------------------------------------------------------------------------------------


def test_adam_step_torch_form_is_torch_optim_adam() -> None:
    g = torch.Generator().manual_seed(0)
    p0 = torch.randn(5, 3, generator=g)
    grads = [torch.randn(5, 3, generator=g) for _ in range(4)]
    grads[0][0, 0] = 0.0  # an entry whose gradient starts at 0
    ref = p0.clone().requires_grad_(True)
    opt = torch.optim.Adam([ref], lr=0.01)
    p, m, v = p0.clone(), torch.zeros_like(p0), torch.zeros_like(p0)
    for t, gr in enumerate(grads, start=1):
        ref.grad = gr.clone()
        opt.step()
        p, m, v = adam_step(p, gr, m, v, t, 0.01)
        torch.testing.assert_close(p, ref.detach(), rtol=0, atol=1e-15)
    state = opt.state[ref]
    torch.testing.assert_close(m, state["exp_avg"], rtol=0, atol=1e-15)
    torch.testing.assert_close(v, state["exp_avg_sq"], rtol=0, atol=1e-15)
    # The higher form puts eps outside sqrt(b2): θ - lr sqrt(b2)/b1 m / (sqrt(v) + eps).
    new, m1, v1 = adam_step(p0, grads[0], torch.zeros_like(p0), torch.zeros_like(p0), 1, 0.01, eps=1e-3, form="higher")
    expected = p0 - 0.01 * 0.001 ** 0.5 / 0.1 * (0.1 * grads[0]) / ((0.001 * grads[0] ** 2).sqrt() + 1e-3)
    torch.testing.assert_close(new, expected, rtol=0, atol=1e-15)


def test_adam_step_is_differentiable_at_zero_gradients() -> None:
    """A never-moved entry (v = 0) gives a finite derivative (higher masks √v there), not NaN."""
    w = torch.tensor([0.0, 1.5], requires_grad=True)
    p = torch.zeros(2)
    new, _, _ = adam_step(p, w * torch.tensor([1.0, 2.0]), torch.zeros(2), torch.zeros(2), 1, 0.1, form="higher")
    (g,) = torch.autograd.grad(new.sum(), w)
    assert torch.isfinite(g).all()


def _proxy(params: dict[str, Tensor]) -> torch.nn.Sequential:
    return member_module(params)


def _adam_state(params: dict[str, Tensor], seed: int) -> tuple[dict[str, Tensor], dict[str, dict[str, Tensor]], int]:
    """Weights and a non-trivial optimizer state (``m``, ``v`` in StackedMLP's layout) after three
    real Adam steps on random losses."""
    module = _proxy(params)
    opt = torch.optim.Adam(module.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(seed)
    for _ in range(3):
        x = torch.randn(16, D, generator=g)
        opt.zero_grad()
        ((module(x)[:, 0] - torch.randn(16, generator=g)) ** 2).mean().backward()
        opt.step()
    state: dict[str, dict[str, Tensor]] = {"m": {}, "v": {}}
    for i, lin in enumerate(mod for mod in module if isinstance(mod, torch.nn.Linear)):
        for key, name in (("m", "exp_avg"), ("v", "exp_avg_sq")):
            state[key][f"layers.{i}.weight"] = opt.state[lin.weight][name].T  # (in, out)
            state[key][f"layers.{i}.bias"] = opt.state[lin.bias][name][None]  # (1, out)
    return member_params(module), state, 3


@pytest.mark.parametrize("mode", ["released", "fixed"])
def test_meta_weight_grad_closed_form_and_higher(mode: str) -> None:
    """``∂L_val(θ'(w))/∂w_a = (1/n) <J ⊙ ∇_θ' L_val, ∇_θ ℓ_a(θ)>`` (fixed) or the same with ``Σ_a ∇ℓ_a``
    for every entry (released), with ``J = ∂θ'/∂g`` the elementwise Jacobian of higher's Adam step;
    and the same numbers from autograd through ``higher`` (ICT.py:104-114)."""
    params = {n: t[0, 0] for n, t in triples(1).items()}
    theta, state, count = _adam_state(params, seed=3)
    m, v = state["m"], state["v"]
    x_val, y_val = static_set()
    g = torch.Generator().manual_seed(4)
    n, alpha, (b1, b2), eps = 5, 1e-2, (0.9, 0.999), 1e-8
    x_sel, t_sel = torch.randn(n, D, generator=g), torch.randn(n, generator=g)
    one = [{k: t.unsqueeze(0) for k, t in d.items()} for d in (theta, m, v)]  # one student
    got = meta_weight_grad(*one, torch.tensor([count + 1.0]), x_sel[None], t_sel[None], x_val, y_val, mode=mode,
                           alpha=alpha, chunk=50)[0]

    # Closed form, by plain autograd on per-sample losses.
    names = list(theta)
    leaves = [theta[k].clone().requires_grad_(True) for k in names]

    def f(x: Tensor, ps: list[Tensor]) -> Tensor:
        return member_forward(dict(zip(names, ps, strict=True)), x)[:, 0]

    per_sample = [torch.autograd.grad((f(x_sel[a:a + 1], leaves)[0] - t_sel[a]) ** 2, leaves) for a in range(n)]
    summed = [sum(ps[i] for ps in per_sample) for i in range(len(names))]
    # ∇_θ L_w at w = 1: released (Σ_b w_b)(Σ_a ∇ℓ_a)/n = Σ_a ∇ℓ_a; fixed Σ_a ∇ℓ_a / n.
    g_train = summed if mode == "released" else [t / n for t in summed]
    step = count + 1
    bc1, bc2 = 1 - b1 ** step, 1 - b2 ** step
    size = alpha * bc2 ** 0.5 / bc1
    new, jac = [], []
    for i, k in enumerate(names):
        mm = b1 * m[k] + (1 - b1) * g_train[i]
        vv = b2 * v[k] + (1 - b2) * g_train[i] ** 2
        r = vv.sqrt()
        new.append(theta[k] - size * mm / (r + eps))
        # dθ'/dg = -size [(1 - b1) / (r + eps) - mm (1 - b2) g / (r (r + eps)²)]; no √v term where v = 0
        through_v = mm * (1 - b2) * g_train[i] / (torch.where(r > 0, r, 1.0) * (r + eps) ** 2)
        jac.append(-size * ((1 - b1) / (r + eps) - torch.where(r > 0, through_v, 0.0)))
    new_leaves = [t.clone().requires_grad_(True) for t in new]
    g_val = torch.autograd.grad(((f(x_val, new_leaves) - y_val) ** 2).mean(), new_leaves)
    pulled = [j * gv for j, gv in zip(jac, g_val, strict=True)]
    if mode == "fixed":
        expected = torch.stack([sum((u * ps[i]).sum() for i, u in enumerate(pulled)) / n for ps in per_sample])
    else:  # ∂g/∂w_b = Σ_a ∇ℓ_a / n for every b
        expected = (sum((u * summed[i]).sum() for i, u in enumerate(pulled)) / n).expand(n)
    torch.testing.assert_close(got, expected, rtol=1e-8, atol=1e-14)
    assert float(got.abs().max()) > 1e-10  # not vacuous

    # The same through higher: a copy of the real optimizer's state, a virtual step, autograd.
    module = _proxy(theta)
    opt = torch.optim.Adam(module.parameters(), lr=alpha)
    for p_mod, key in zip(module.parameters(), [k for k in names], strict=True):
        layout = (lambda t: t.T) if key.endswith("weight") else (lambda t: t[0])
        opt.state[p_mod] = {"step": torch.tensor(float(count)), "exp_avg": layout(m[key]).clone(),
                            "exp_avg_sq": layout(v[key]).clone()}
    weight = torch.ones(n, requires_grad=True)
    with higher.innerloop_ctx(module, opt) as (fmodel, diffopt):
        loss = F.mse_loss(fmodel(x_sel), t_sel[:, None], reduction="none")
        diffopt.step(torch.sum(weight * (loss if mode == "released" else loss.view(-1))) / n)
        (ref,) = torch.autograd.grad(F.mse_loss(fmodel(x_val), y_val[:, None]), weight)
    torch.testing.assert_close(got, ref, rtol=1e-8, atol=1e-14)


def test_val_mse_grad_any_chunk_is_autograd() -> None:
    params = {n: t[0] for n, t in triples(2).items()}  # (3, ...): three members
    x, y = static_set()
    whole = val_mse_grad(params, x, y, chunk=N)
    for chunk in (7, 50):
        part = val_mse_grad(params, x, y, chunk=chunk)
        for k in whole:
            torch.testing.assert_close(part[k], whole[k], rtol=1e-12, atol=1e-14)
    leaves = {k: t.clone().requires_grad_(True) for k, t in params.items()}
    loss = sum(((member_forward({k: t[i] for k, t in leaves.items()}, x)[:, 0] - y) ** 2).mean() for i in range(3))
    ref = torch.autograd.grad(loss, list(leaves.values()))
    for k, r in zip(leaves, ref, strict=True):
        torch.testing.assert_close(whole[k], r, rtol=1e-12, atol=1e-14)


# ----------------------------------------------------------------------------------------------
# The batched fine-tuning is the higher reference
# ----------------------------------------------------------------------------------------------

VARIANTS = {
    "released": {},
    "fixed": {"mode": "fixed"},
    "fixed_no_reweighting": {"mode": "fixed", "reweighting": False},
    "released_n_equals_k": {"select": 16},
}


def run_both(settings: FineTuning, groups: int = 2) -> tuple:
    params = triples(groups)
    x_val, y_val = static_set()
    noise = noise_for(groups, settings)
    x0 = x_val[y_val.argmax()].expand(groups, D)
    batched = finetune_batched(params, x0, x_val, y_val, noise, settings, chunk=50)
    ref = []
    for i in range(groups):
        proxies = [_proxy({n: t[i, p] for n, t in params.items()}) for p in range(3)]
        weights, x_end = finetune_higher(proxies, x0[i], x_val, y_val, noise[i], settings)
        tuned = {n: torch.stack([member_params(p)[n] for p in proxies]) for n in params}
        ref.append((tuned, weights, x_end))
    return params, batched, ref, x0


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_batched_fine_tuning_is_the_higher_reference(variant: str) -> None:
    settings = FineTuning(**{"steps": 3, "neighbours": 16, "select": 4, "alpha": 1e-2, **VARIANTS[variant]})
    params, batched, ref, x0 = run_both(settings)
    for i, (tuned, weights, x_end) in enumerate(ref):
        for n in params:
            torch.testing.assert_close(batched.params[n][i], tuned[n], rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(batched.weights[:, :, i], weights, rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(batched.x[i], x_end, rtol=1e-9, atol=1e-12)
        # Not vacuous: the proxies moved, the path moved, and the weights were learned.
        assert max(float((batched.params[n][i] - params[n][i]).abs().max()) for n in params) > 1e-3
        assert float((x_end - x0[i]).abs().max()) > 1e-3
        if settings.reweighting:
            assert float((weights - 1).abs().max()) > 1e-3
        else:
            assert torch.equal(weights, torch.ones_like(weights))
    # The two groups' paths had their own noise: their proxies differ.
    assert float((batched.params["layers.0.weight"][0] - batched.params["layers.0.weight"][1]).abs().max()) > 1e-6


def test_batched_fine_tuning_float32_released_settings() -> None:
    """The released α, β, K and n in float32: both backends agree to float32 rounding."""
    torch.set_default_dtype(torch.float32)
    settings = FineTuning(steps=2, neighbours=128, select=8)
    params = {n: t.float() for n, t in triples(1).items()}
    x_val, y_val = (t.float() for t in static_set())
    noise = noise_for(1, settings).float()
    x0 = x_val[y_val.argmax()][None]
    batched = finetune_batched(params, x0, x_val, y_val, noise, settings)
    proxies = [_proxy({n: t[0, p] for n, t in params.items()}) for p in range(3)]
    weights, _ = finetune_higher(proxies, x0[0], x_val, y_val, noise[0], settings)
    for n in params:
        torch.testing.assert_close(batched.params[n][0], torch.stack([member_params(p)[n] for p in proxies]),
                                   rtol=0, atol=1e-5)
    torch.testing.assert_close(batched.weights[:, :, 0], weights, rtol=0, atol=1e-6)


def test_released_bug_net_effect() -> None:
    """Released mode: within each student the weights move together by ±β/n (or not at all), and
    without reweighting the fine-tuned proxies do not depend on n (the selection never reaches
    the real step); in fixed mode they do."""
    settings = FineTuning(steps=3, neighbours=16, select=8, alpha=1e-2)
    _, batched, _, _ = run_both(settings, groups=1)
    w = batched.weights  # (T, 3, 1, 2, n)
    assert torch.equal(w, w[..., :1].expand_as(w))  # all n weights of a student equal
    shift = settings.beta / settings.select  # 0.0375, below the clip of 0.2 * β
    allowed = torch.tensor([1 - shift, 1.0, 1 + shift])
    assert bool(((w[..., :1] - allowed).abs().min(-1).values < 1e-12).all())
    assert float((w - 1).abs().max()) == pytest.approx(shift)

    params, x_val, y_val = triples(1), *static_set()
    x0 = x_val[y_val.argmax()][None]

    def tuned(mode: str, select: int) -> dict[str, Tensor]:
        s = FineTuning(steps=3, neighbours=16, select=select, alpha=1e-2, reweighting=False, mode=mode)
        return finetune_batched(params, x0, x_val, y_val, noise_for(1, s), s, chunk=50).params

    a, b = tuned("released", 4), tuned("released", 12)
    for n in params:
        torch.testing.assert_close(a[n], b[n], rtol=1e-12, atol=1e-14)
    c, d = tuned("fixed", 4), tuned("fixed", 12)
    assert max(float((c[n] - d[n]).abs().max()) for n in params) > 1e-4
