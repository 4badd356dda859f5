"""IGNITE's norm for members whose input is an embedding (Dao et al., NeurIPS 2024, Section 3).

The released TensorFlow code takes ``tf.linalg.global_norm`` of the embedding table's
``IndexedSlices`` gradient: one row per lookup, the rows of a repeated id NOT summed; its shift
uses the dense gradient divided by that norm. ``embedding_norm: per_lookup`` reproduces it,
``dense`` takes the table's dense gradient. Hand values on a tiny embedding with a repeated id.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from lightning_mbo.functional.gradnorm import grad_h, lookup_sq_norms, member_norms
from lightning_mbo.methods.ignite import GradNormConstraint, Ignite
from lightning_mbo.nn import StackedMLP

W = (1.0, 2.0, 3.0)  # the linear layer's weights, one per position (E = 1)
TABLE = (0.5, -1.0)  # the embedding of class 0 and class 1
IDS = (0.0, 0.0, 1.0)  # class 0 looked up twice
# h = Σ_l W_l e_{id_l} + b:  ∂h/∂e_l = W_l, ∂h/∂W_l = e_{id_l}, ∂h/∂b = 1, dense table gradient
# (W_0 + W_1, W_2) = (3, 3).
PER_LOOKUP_SQ = 1 + 4 + 9 + (0.25 + 0.25 + 1) + 1  # 16.5
DENSE_SQ = 9 + 9 + (0.25 + 0.25 + 1) + 1  # 20.5


def _tiny(dtype: torch.dtype = torch.float64) -> StackedMLP:
    """One member: Embedding(2, 1) -> flatten (3) -> Linear(3, 1), weights set by hand."""
    net = StackedMLP(1, 3, hidden=(), out_features=1, embedding=(2, 1)).to(dtype)
    with torch.no_grad():
        net.embed.weight.copy_(torch.tensor(TABLE).view(1, 2, 1))
        net.layers[0].weight.copy_(torch.tensor(W).view(1, 3, 1))
        net.layers[0].bias.zero_()
    return net


def _step(net: StackedMLP, settings: Ignite, x: Tensor) -> tuple[Tensor, list[Tensor], list[list[Tensor]]]:
    """One constraint backward with a zero data loss; returns the norms, the penalty gradients and
    the parameters every re-run of the forward saw."""
    params = list(net.parameters())
    seen: list[list[Tensor]] = []

    def h_fn() -> Tensor:
        seen.append([p.detach().clone() for p in params])
        return net(x).mean(dim=(1, 2))

    constraint = GradNormConstraint(settings, 1, embedding=True).to(x.dtype)
    constraint.lmbda.fill_(1.0)
    with net.capture_lookups() as looked_up:
        h = net(x).mean(dim=(1, 2))
    for p in params:
        p.grad = None
    norms = constraint.backward(0.0 * h.sum(), h, h_fn, params, lambda loss: loss.backward(),
                                lookups=[(net.embed.weight, e) for e in looked_up])
    return norms, [p.grad.clone() for p in params], seen


@pytest.mark.parametrize("grad_mode", ["finite_difference", "exact"])
@pytest.mark.parametrize(("norm", "sq"), [("per_lookup", PER_LOOKUP_SQ), ("dense", DENSE_SQ)])
def test_norm_on_hand_values(grad_mode: str, norm: str, sq: float) -> None:
    net = _tiny()
    x = torch.tensor([IDS], dtype=torch.float64)
    norms, _, _ = _step(net, Ignite(grad_mode=grad_mode, embedding_norm=norm), x)
    torch.testing.assert_close(norms, torch.tensor([math.sqrt(sq)], dtype=torch.float64))
    # the dense norm is what the same gradients give through member_norms over all parameters
    dense = member_norms(grad_h(net(x).mean(dim=(1, 2)), list(net.parameters())))
    torch.testing.assert_close(dense, torch.tensor([math.sqrt(DENSE_SQ)], dtype=torch.float64))


@pytest.mark.parametrize(("norm", "sq"), [("per_lookup", PER_LOOKUP_SQ), ("dense", DENSE_SQ)])
def test_finite_difference_shifts_along_the_dense_gradient_over_that_norm(norm: str, sq: float) -> None:
    net = _tiny()
    x = torch.tensor([IDS], dtype=torch.float64)
    r = 0.05
    before = [p.detach().clone() for p in net.parameters()]
    _, penalty, seen = _step(net, Ignite(grad_mode="finite_difference", r=r, embedding_norm=norm), x)
    (shifted,) = seen  # only the shifted forward re-ran
    dense = {  # ∇h, dense, in parameter order: table, W, b
        0: torch.tensor([3.0, 3.0]), 1: torch.tensor([0.5, 0.5, -1.0]), 2: torch.tensor([1.0]),
    }
    for i, (s, b) in enumerate(zip(shifted, before, strict=True)):
        torch.testing.assert_close(s.flatten() - b.flatten(), r * dense[i].double() / math.sqrt(sq))
    for p, b in zip(net.parameters(), before, strict=True):
        assert torch.equal(p, b)  # restored bit for bit
    # h is bilinear in (table, W): the difference is exact. ∂/∂W_l of ∇h·u = u_{table, id_l} and
    # ∂/∂table_c = Σ_{l: id_l = c} u_{W_l}, with u = dense ∇h / norm and λρ = 0.05.
    u = {k: v.double() / math.sqrt(sq) for k, v in dense.items()}
    want_w = torch.stack([u[0][int(i)] for i in IDS])
    want_table = torch.stack([u[1][0] + u[1][1], u[1][2]])
    torch.testing.assert_close(penalty[1].flatten(), 0.05 * want_w)
    torch.testing.assert_close(penalty[0].flatten(), 0.05 * want_table)
    torch.testing.assert_close(penalty[2].flatten(), torch.zeros(1, dtype=torch.float64))


def test_per_lookup_and_dense_differ_by_the_computed_amount_on_a_random_member() -> None:
    """A random nonlinear member: per-lookup² − dense² equals Σ_c (Σ_l ||∂h/∂e_l||² − ||Σ_l ∂h/∂e_l||²)
    over the lookups l of each class c, computed here from explicitly separated lookup rows."""
    torch.manual_seed(0)
    net = StackedMLP(2, 4, hidden=(6,), activation="tanh", embedding=(3, 2)).double()
    x = torch.tensor([[0, 0, 2, 1], [1, 0, 0, 0]], dtype=torch.float64)
    norms = {}
    for norm in ("per_lookup", "dense"):
        norms[norm], _, _ = _step(net, Ignite(grad_mode="exact", embedding_norm=norm), x)
    # reference: the lookups as separate leaves, then the dense table gradient by summing them per id
    ids = x.long().flatten()
    rows = net.embed.weight[:, ids].detach().requires_grad_()  # (M, B * L, E)
    out = rows.reshape(2, 2, -1)
    for i, layer in enumerate(net.layers):
        out = layer(out)
        out = torch.tanh(out) if i == 0 else out
    (g_rows,) = torch.autograd.grad(out.mean(dim=(1, 2)).sum(), rows)
    per_lookup = lookup_sq_norms([g_rows], 2)
    dense = torch.zeros(2, 3, 2, dtype=torch.float64).index_add_(1, ids, g_rows).pow(2).sum((1, 2))
    torch.testing.assert_close(norms["per_lookup"] ** 2 - norms["dense"] ** 2, per_lookup - dense)
    assert (per_lookup - dense).abs().min() > 1e-6  # the repeated ids make them differ


def test_exact_mode_is_the_finite_difference_limit_with_the_per_lookup_norm() -> None:
    torch.manual_seed(1)
    net = StackedMLP(2, 4, hidden=(6,), activation="tanh", embedding=(3, 2)).double()
    x = torch.tensor([[0, 0, 2, 1], [1, 0, 0, 0], [2, 2, 1, 0]], dtype=torch.float64)
    _, exact, _ = _step(net, Ignite(grad_mode="exact"), x)
    errors = []
    for r in (1e-2, 1e-3):
        _, fd, _ = _step(net, Ignite(grad_mode="finite_difference", r=r), x)
        errors.append(max((a - b).abs().max().item() for a, b in zip(fd, exact, strict=True)))
    assert errors[1] < 0.2 * errors[0], errors  # error O(r)
    assert errors[1] < 1e-4


def test_summary_records_the_norm_that_ran() -> None:
    assert GradNormConstraint(Ignite(), 2, embedding=True).summary()["norm"] == "per_lookup"
    assert GradNormConstraint(Ignite(embedding_norm="dense"), 2, embedding=True).summary()["norm"] == "dense"
    assert GradNormConstraint(Ignite(), 2).summary()["norm"] == "dense"
    with pytest.raises(ValueError, match="embedding_norm"):
        Ignite(embedding_norm="sparse")
