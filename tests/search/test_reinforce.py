"""REINFORCE over designs (lightning_mbo.search.reinforce): its loss on hand examples, and
problems with a known optimum."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lightning_mbo.search import Reinforce, SearchData
from lightning_mbo.search.reinforce import reinforce_loss, standardise
from lightning_mbo.tasks import from_logits, to_logits
from lightning_mbo.validation import SettingsError


def test_loss_hand_values_and_the_released_broadcast() -> None:
    log_prob = torch.tensor([[-0.5, -1.0], [-2.0, -0.25]], requires_grad=True)  # (B=2, L=2)
    adv = torch.tensor([1.0, -1.0])
    fixed = reinforce_loss(log_prob, adv, "fixed")
    assert fixed.item() == pytest.approx(-((-1.5) * 1 + (-2.25) * -1) / 2)
    (g,) = torch.autograd.grad(fixed, log_prob)
    torch.testing.assert_close(g, torch.tensor([[-0.5, -0.5], [0.5, 0.5]]))
    # Released: [B, 1, L] x [B, 1] -> [B, B, L]; the mean is mean(log π) * mean(A): zero for
    # standardised advantages, and so is its gradient.
    released = reinforce_loss(log_prob, adv, "released")
    assert released.item() == pytest.approx(-log_prob.detach().mean().item() * adv.mean().item())
    (g,) = torch.autograd.grad(released, log_prob)
    assert torch.count_nonzero(g) == 0
    a = standardise(torch.tensor([1.0, 2.0, 6.0]))
    assert a.mean().abs() < 1e-7 and a.std(unbiased=False) == pytest.approx(1.0)


def _tiny_discrete(target: torch.Tensor):
    """Designs of length 4 over 4 classes as (unnormalised) design-bench logits."""
    best = to_logits(target, 4).reshape(1, -1)

    def encode(designs: torch.Tensor) -> torch.Tensor:
        return to_logits(designs, 4).reshape(len(designs), -1)

    def decode(z: torch.Tensor) -> torch.Tensor:
        return from_logits(z.reshape(len(z), 4, 3))

    def score(x: torch.Tensor) -> torch.Tensor:
        return -((x - best) ** 2).sum(-1)

    return encode, decode, score


def test_fixed_mode_finds_a_tiny_discrete_optimum() -> None:
    """Budget: 200 iterations of 256 samples, Adam 0.01 (released). Starting frequencies from 8
    designs that hold every class at every position; most final samples are the target."""
    target = torch.tensor([[2, 0, 3, 1]])
    encode, decode, score = _tiny_discrete(target)
    starts = torch.tensor([[c, (c + 1) % 4, (c + 2) % 4, (c + 3) % 4] for c in range(4)] * 2)
    data = SearchData(torch.zeros(1, 12), torch.zeros(1), True, num_classes=4, encode=encode, decode=decode)
    out = Reinforce(mode="fixed", lr=0.1).search(encode(starts), score, data, num_candidates=8, seed=0)
    hits = (decode(out.x) == target).all(-1).float().mean()
    assert hits >= 0.75, hits
    assert out.trajectory[-1, 0] > out.trajectory[0, 0]
    # From 1/4 per class to >= 3/4 of samples on the target: a probability moved by more than 0.4.
    change = out.diagnostics["policy_max_abs_prob_change"]
    assert len(change) == 8 and len(set(change)) == 1 and change[0] > 0.4
    assert out.diagnostics["policy_max_abs_logit_change"][0] > 1.0
    assert out.diagnostics["flags"] == []


def test_released_mode_keeps_the_starting_frequencies() -> None:
    target = torch.tensor([[2, 0, 3, 1]])
    encode, decode, score = _tiny_discrete(target)
    starts = torch.tensor([[0, 0, 0, 0]] * 384 + [[1, 1, 1, 1]] * 128)  # 75% class 0, 25% class 1, never 2 or 3
    data = SearchData(torch.zeros(1, 12), torch.zeros(1), True, num_classes=4, encode=encode, decode=decode)
    searcher = Reinforce(iterations=50, batch=512, lr=0.1)
    assert searcher.mode == "released"
    final = decode(searcher.search(encode(starts), score, data, num_candidates=512, seed=0).x)
    assert set(final.unique().tolist()) <= {0, 1}  # absent classes are never sampled
    # The policy did not move: still ~75% class 0 everywhere (the fixed loss would drive position 1,
    # whose target is 0, to all zeros and the others towards 1).
    share = (final == 0).float().mean(0)
    assert torch.all((share - 0.75).abs() < 0.06), share
    diag = searcher.search(encode(starts), score, data, num_candidates=512, seed=0).diagnostics
    assert max(diag["policy_max_abs_prob_change"]) < 1e-6 and len(diag["policy_max_abs_prob_change"]) == 512
    (flag,) = diag["flags"]
    assert "did not move" in flag and "aaee3a3, 2021-06-01" in flag
    # The same policy under the fixed loss moves: the flag is about the released loss, not the budget.
    fixed = Reinforce(iterations=50, batch=512, lr=0.1, mode="fixed").search(encode(starts), score, data,
                                                                             num_candidates=512, seed=0)
    assert min(fixed.diagnostics["policy_max_abs_prob_change"]) > 0.1 and fixed.diagnostics["flags"] == []


def test_continuous_policy_moves_towards_the_quadratic_optimum() -> None:
    """Gaussian policy, σ 0.1, mean started at the starts' mean (-1): 300 updates of 256 samples."""
    starts = torch.full((8, 6), -1.0)

    def quadratic(x: torch.Tensor) -> torch.Tensor:
        return -((x - 0.5) ** 2).sum(-1)

    data = SearchData(torch.zeros(1, 6), torch.zeros(1), False)
    out = Reinforce(iterations=300, batch=256).search(starts, quadratic, data, num_candidates=8, seed=0)
    assert (out.x.mean(0) - 0.5).abs().max() < 0.2
    # The reported change of the policy's mean is where its samples went from -1 (σ 0.1, 8 samples).
    (change,) = set(out.diagnostics["policy_max_abs_mean_change"])
    assert abs(change - float((out.x.mean(0) + 1).abs().max())) < 0.15
    again = Reinforce(iterations=300, batch=256).search(starts, quadratic, data, num_candidates=8, seed=0)
    assert torch.equal(out.x, again.x)


@pytest.mark.parametrize("bad", [{"iterations": 0}, {"batch": 1}, {"lr": 0.0}, {"mode": "other"}])
def test_bad_settings(bad) -> None:
    with pytest.raises(SettingsError):
        Reinforce(**bad)


def test_cli_fit_with_reinforce_on_tfbind8(quick_fit) -> None:
    run, row = quick_fit("tfbind8/reinforce.yaml", "--ascent.searcher.init_args.iterations", "5",
                         "--ascent.searcher.init_args.mode", "fixed")
    assert row["method"] == "reinforce/ens_mean"
    assert row["ascent"] == {"searcher": "reinforce", "iterations": 5, "batch": None, "lr": 0.01, "sigma": 0.1,
                             "mode": "fixed"}
    designs = np.load(run / "designs.npy")
    assert designs.shape == (128, 8) and designs.min() >= 0 and designs.max() <= 3


def test_integer_designs_reach_embedding_members_and_only_sequence_searchers(quick_fit) -> None:
    """``data.encoding: integers`` + ``model.embedding``: REINFORCE's released members embed the
    sequence; gradient ascent and CMA-ES refuse class integers."""
    run, row = quick_fit("tfbind8/reinforce.yaml", "--ascent.searcher.init_args.iterations", "3")
    assert row["method"] == "reinforce/ens_mean"
    # Released mode on TFBind8: the policy stays at the top designs' frequencies, and the row says so.
    assert max(row["search_diagnostics"]["policy_max_abs_prob_change"]) < 1e-6
    assert any("did not move" in f and "aaee3a3" in f for f in row["search_diagnostics"]["flags"])
    assert np.load(run / "designs.npy").shape == (128, 8)
    with pytest.raises(SettingsError, match="gradient ascent needs continuous features"):
        quick_fit("tfbind8/reinforce.yaml", "--ascent.searcher", "null")
    with pytest.raises(SettingsError, match="cma_es searches continuous features"):
        quick_fit("tfbind8/reinforce.yaml", "--ascent.searcher", "lightning_mbo.search.CMAES",
                  "--ascent.searcher.init_args.iterations", "2")
    with pytest.raises(SettingsError, match="normalize_x false"):
        quick_fit("tfbind8/reinforce.yaml", "--data.normalize_x", "true")
