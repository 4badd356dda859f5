"""CMA-ES over designs (lightning_mbo.search.cma_es) on problems with a known optimum."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lightning_mbo.search import CMAES, SearchData
from lightning_mbo.tasks import to_logits
from lightning_mbo.validation import SettingsError

pytest.importorskip("cma")

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "tfbind8"
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


def test_diagnostics_report_each_strategys_stop_iterations_and_distance() -> None:
    """On the quadratic every strategy uses its whole budget (``maxiter``, not flagged); the reported
    distances and largest |z| are those of the returned points. On a flat surrogate cma's own
    rules stop every strategy early, and the flag says so."""
    x0 = torch.empty(8, 6).uniform_(-2, 2, generator=torch.Generator().manual_seed(0))
    data = SearchData(x0, quadratic(x0), False)
    out = CMAES(iterations=30).search(x0, quadratic, data, candidate_ids=torch.arange(8), seed=0)
    diag = out.diagnostics
    assert diag["stop"] == ["maxiter"] * 8 and diag["iterations"] == [30] * 8
    torch.testing.assert_close(torch.tensor(diag["distance_from_start"]), (out.x - x0).norm(dim=1))
    torch.testing.assert_close(torch.tensor(diag["max_abs_z"]), out.x.abs().max(1).values)
    assert diag["data_max_abs_z"] == pytest.approx(float(x0.abs().max()))
    assert diag["flags"] == []  # the optimum 0.5 is inside [-2, 2]; nothing stopped early

    flat = CMAES().search(x0, lambda x: torch.zeros(len(x)), data, candidate_ids=torch.arange(8), seed=0)
    stops, its = flat.diagnostics["stop"], flat.diagnostics["iterations"]
    assert "maxiter" not in stops and max(its) < 100
    stopped = [f for f in flat.diagnostics["flags"] if "strategies stopped by" in f]
    assert sum(int(f.split(": ")[1].split("/")[0]) for f in stopped) == 8
    assert any(f"after {min(its)}" in f for f in stopped)


def test_far_away_points_are_flagged() -> None:
    """An unbounded (linear) surrogate: the strategies run off, and the flag counts the returned
    points beyond the data's largest |z|, as computed here."""
    x0 = torch.empty(6, 4).uniform_(-1, 1, generator=torch.Generator().manual_seed(1))
    data = SearchData(x0, x0.sum(-1), False)
    out = CMAES(iterations=40).search(x0, lambda x: x.sum(-1), data, candidate_ids=torch.arange(6), seed=0)
    beyond = int((out.x.abs().max(1).values > x0.abs().max()).sum())
    assert beyond >= 1
    (flag,) = [f for f in out.diagnostics["flags"] if "outside the data" in f]
    assert flag.startswith(f"cma_es: {beyond}/6 returned points")
    assert max(out.diagnostics["distance_from_start"]) > 10  # 40 iterations of a growing step size


def test_members_train_with_keras_adam_epsilon() -> None:
    """The released members are trained by tf.keras.optimizers.Adam (epsilon 1e-7): the configs say so
    and the optimizer gets it."""
    import yaml  # noqa: PLC0415

    from lightning_mbo.methods import Surrogate  # noqa: PLC0415

    args = yaml.safe_load((CONFIGS / "cma_es.yaml").read_text())["model"]["init_args"]
    assert args["adam_eps"] == 1e-7  # the IGNITE overlay (configs/ignite.yaml) leaves it alone
    assert "adam_eps" not in (yaml.safe_load((CONFIGS.parent / "ignite.yaml").read_text())["model"]["init_args"])
    opt = Surrogate(24, members=2, hidden=[8], adam_eps=args["adam_eps"]).configure_optimizers()
    assert opt.param_groups[0]["eps"] == 1e-7
    assert Surrogate(24, hidden=[8]).configure_optimizers().param_groups[0]["eps"] == 1e-8  # torch's, by default


@pytest.mark.parametrize("bad", [{"iterations": 0}, {"sigma": 0.0}, {"popsize": 1}])
def test_bad_settings(bad) -> None:
    with pytest.raises(SettingsError):
        CMAES(**bad)


# --- as a user runs it -------------------------------------------------------------------------
def test_cli_fit_with_cma_es_on_tfbind8(quick_fit) -> None:
    _, row = quick_fit(["tfbind8/cma_es.yaml", "ignite.yaml"], "--ascent.searcher.init_args.iterations", "5")
    assert row["method"] == "cma_es/ens_mean+ignite"
    assert row["ascent"] == {"searcher": "cma_es", "sigma": 0.5, "iterations": 5, "popsize": None}
    assert 0 <= row["score_100th"] <= 1 and len(row["ignite"]["lambda"]) == 5
    diag = row["search_diagnostics"]  # what the strategies did reaches every results row
    assert len(diag["stop"]) == len(diag["distance_from_start"]) == 128 and max(diag["iterations"]) <= 5
    assert diag["data_max_abs_z"] > 0 and isinstance(diag["flags"], list)


def test_cli_refuses_searcher_with_gradient_settings_or_a_step_hook(quick_fit) -> None:
    with pytest.raises(SettingsError, match="has its own"):
        quick_fit("tfbind8/cma_es.yaml", "--ascent.steps", "10")
    with pytest.raises(SettingsError, match="per-step hook"):
        quick_fit("tfbind8/tri_mentoring.yaml", "--model.init_args.hidden", "[8, 8]", "--ascent.searcher",
                  "lightning_mbo.search.CMAES", "--ascent.searcher.init_args.iterations", "2")
    with pytest.raises(SystemExit):  # not a Searcher: a usage error
        quick_fit("tfbind8/cma_es.yaml", "--ascent.searcher", "torch.optim.SGD")
