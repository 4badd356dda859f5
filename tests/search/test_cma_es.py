"""CMA-ES over designs (lightning_mbo.search.cma_es) on problems with a known optimum."""

from __future__ import annotations

import pytest
import torch

from lightning_mbo.search import CMAES
from lightning_mbo.tasks import to_logits
from lightning_mbo.validation import SettingsError

pytest.importorskip("cma")

CENTRE = 0.5  # the synthetic quadratic task's optimum: x = 0.5 * ones(D)


def quadratic(x: torch.Tensor) -> torch.Tensor:
    """The synthetic continuous task's closed form, ``-||x - 0.5||²``, its optimum 0 at 0.5."""
    return -((x - CENTRE) ** 2).sum(-1)


def test_finds_the_quadratic_optimum_from_every_start() -> None:
    """Budget: the released 100 iterations, σ0 = 0.5, default population (10 for D = 6)."""
    x0 = torch.empty(8, 6).uniform_(-2, 2, generator=torch.Generator().manual_seed(0))
    out = CMAES().search(x0, quadratic, candidate_ids=torch.arange(8), seed=0)
    assert out.x.shape == (8, 6) and out.trajectory.shape[1] == 8
    assert (out.x - CENTRE).abs().max() < 1e-3
    assert torch.all(out.trajectory[-1] >= out.trajectory[0])  # the best seen only improves
    assert torch.all(out.trajectory[1:] >= out.trajectory[:-1])


def test_finds_a_tiny_discrete_tasks_optimum_in_logit_space() -> None:
    """Designs of length 4 over 4 classes as design-bench logits (12 features); the score is
    highest at the target sequence's logits, so the best point decodes to the target."""
    target = torch.tensor([[2, 0, 3, 1]])
    best = to_logits(target, 4).reshape(1, -1)

    def score(x: torch.Tensor) -> torch.Tensor:
        return -((x - best) ** 2).sum(-1)

    x0 = to_logits(torch.tensor([[0, 1, 1, 2], [3, 3, 0, 0]]), 4).reshape(2, -1)
    out = CMAES(iterations=60).search(x0, score, candidate_ids=torch.arange(2), seed=1)
    decoded = torch.cat([torch.zeros(2, 4, 1), out.x.reshape(2, 4, 3)], -1).argmax(-1)
    assert torch.equal(decoded, target.expand(2, 4))


def test_same_seed_same_designs_and_independent_of_the_split() -> None:
    x0 = torch.randn(6, 5, generator=torch.Generator().manual_seed(3))
    whole = CMAES(iterations=15).search(x0, quadratic, candidate_ids=torch.arange(6), seed=7)
    again = CMAES(iterations=15).search(x0, quadratic, candidate_ids=torch.arange(6), seed=7)
    other = CMAES(iterations=15).search(x0, quadratic, candidate_ids=torch.arange(6), seed=8)
    assert torch.equal(whole.x, again.x) and not torch.equal(whole.x, other.x)
    # Candidates 3..5 searched by another process give the same designs.
    part = CMAES(iterations=15).search(x0[3:], quadratic, candidate_ids=torch.arange(3, 6), seed=7)
    assert torch.equal(part.x, whole.x[3:])


def test_each_candidate_is_scored_as_itself() -> None:
    """Row i of every scored batch belongs to candidate i (a replicate's members score its own candidates)."""
    centres = torch.tensor([[0.0, 0.0], [3.0, -3.0]])

    def per_candidate(x: torch.Tensor) -> torch.Tensor:
        return -((x - centres) ** 2).sum(-1)

    out = CMAES(iterations=80).search(torch.zeros(2, 2), per_candidate, candidate_ids=torch.arange(2), seed=0)
    assert torch.allclose(out.x, centres, atol=1e-3)


@pytest.mark.parametrize("bad", [{"iterations": 0}, {"sigma": 0.0}, {"popsize": 1}])
def test_bad_settings(bad) -> None:
    with pytest.raises(SettingsError):
        CMAES(**bad)


# --- as a user runs it -------------------------------------------------------------------------
def test_cli_fit_with_cma_es_on_tfbind8(quick_fit) -> None:
    _, row = quick_fit("tfbind8/cma_es_ignite.yaml", "--ascent.searcher.init_args.iterations", "5")
    assert row["method"] == "cma_es/ens_mean+ignite"
    assert row["ascent"] == {"searcher": "cma_es", "sigma": 0.5, "iterations": 5, "popsize": None}
    assert 0 <= row["score_100th"] <= 1 and len(row["ignite"]["lambda"]) == 5


def test_cli_refuses_searcher_with_gradient_settings_or_a_step_hook(quick_fit) -> None:
    with pytest.raises(SettingsError, match="has its own budget"):
        quick_fit("tfbind8/cma_es.yaml", "--ascent.steps", "10")
    with pytest.raises(SettingsError, match="per-step hook"):
        quick_fit("tfbind8/tri_mentoring.yaml", "--model.init_args.hidden", "[8, 8]", "--ascent.searcher",
                  "lightning_mbo.search.CMAES", "--ascent.searcher.init_args.iterations", "2")
    with pytest.raises(SystemExit):  # not a Searcher: a usage error
        quick_fit("tfbind8/cma_es.yaml", "--ascent.searcher", "torch.optim.SGD")
