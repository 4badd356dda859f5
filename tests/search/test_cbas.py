"""CbAS as a searcher: it moves its VAE towards what the ensemble rates highly, on a tiny discrete
task with a known optimum; quick CLI fits of its configs; seeds; bad settings."""

from __future__ import annotations

import pytest
import torch

from lightning_mbo.search import CbAS, SearchData, SearchObjective
from lightning_mbo.search.cbas import effective_sample_size
from lightning_mbo.validation import SettingsError

L, C = 6, 4


def _task(n: int = 400):
    """Integer sequences; the score is the number of positions holding class 3 (optimum: all 3s)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 3, (n, L), generator=g)  # the data never holds class 3 at more than a few places
    x[torch.rand(n, L, generator=g) < 0.1] = 3
    y = (x == 3).float().sum(-1)
    data = SearchData(x=x.float(), y=(y - y.mean()) / y.std(), discrete=True, num_classes=C, integers=True,
                      encode=lambda s: s.float(), decode=lambda f: f.round().long())

    def truth(feats: torch.Tensor) -> torch.Tensor:
        return (feats.round() == 3).float().sum(-1)

    def predictive(feats: torch.Tensor) -> torch.Tensor:  # two members around the truth
        mean = torch.stack([truth(feats), truth(feats) + 0.2])
        return torch.stack([mean, torch.full_like(mean, 0.5)])

    return data, SearchObjective(lambda f: predictive(f)[0].mean(0), predictive=predictive), truth


SMALL = {"latent_size": 4, "hidden": 32, "embedding": 8, "vae_lr": 1e-2, "batch_size": 50, "val_size": 20,
         "offline_epochs": 10, "online_batches": 4, "online_epochs": 5, "iterations": 8}


def test_cbas_moves_the_vae_towards_the_optimum():
    data, objective, truth = _task()
    x0 = data.x[:16]
    result = CbAS(**SMALL).search(x0, objective, data, torch.arange(16), num_candidates=16, seed=0)
    assert result.x.shape == (16, L) and result.trajectory.shape == (SMALL["iterations"] + 1, 16)
    data_mean = truth(data.x).mean().item()  # 0.6 class-3 positions per sequence
    assert truth(result.x).mean().item() > data_mean + 1.5
    gammas = result.stats["gamma"]
    assert len(gammas) == SMALL["iterations"] and gammas[-1] > gammas[0]  # the quantile rises as q improves
    # without the ensemble's weighting the VAE stays near the data (the test fails if weights are ignored)
    flat = SearchObjective(objective.score, predictive=lambda f: torch.stack([torch.zeros(2, len(f)),
                                                                             torch.ones(2, len(f))]))
    prior = CbAS(**SMALL).search(x0, flat, data, torch.arange(16), num_candidates=16, seed=0)
    assert truth(prior.x).mean().item() < data_mean + 1.0

    # Diagnostics: each candidate carries its run's γ and effective sample sizes per iteration.
    draws = SMALL["online_batches"] * SMALL["batch_size"]
    diag = result.diagnostics
    assert len(diag["gamma"]) == len(diag["ess"]) == len(diag["final_ess"]) == 16
    assert diag["gamma"][0] == pytest.approx(gammas, rel=1e-3) and diag["final_ess"][0] == diag["ess"][0][-1]
    assert all(0 < e <= draws for e in diag["ess"][0])
    # The first iteration draws from q = p (log p - log q = 0) and, under the flat predictive, every
    # draw has the same P(y > γ): equal weights, so every draw counts.
    assert prior.diagnostics["ess"][0][0] == pytest.approx(draws, rel=1e-3)
    assert min(diag["ess"][0]) < 0.9 * draws  # the ensemble's weights are not equal
    assert (diag["flags"] != []) == (diag["final_ess"][0] < 0.05 * draws)


def test_same_seed_same_designs_and_blocks_run_their_own_cbas():
    data, objective, _ = _task(200)
    small = {**SMALL, "offline_epochs": 2, "iterations": 2}
    a = CbAS(**small).search(data.x[:16], objective, data, torch.arange(16), num_candidates=8, seed=3)
    b = CbAS(**small).search(data.x[:16], objective, data, torch.arange(16), num_candidates=8, seed=3)
    assert torch.equal(a.x, b.x) and torch.equal(a.trajectory, b.trajectory)
    assert not torch.equal(a.x[:8], a.x[8:])  # two replicates' blocks: two independent runs


def test_effective_sample_size_hand_values():
    assert effective_sample_size(torch.ones(4)) == pytest.approx(4.0)
    assert effective_sample_size(torch.tensor([1.0, 0.0, 0.0, 0.0])) == pytest.approx(1.0)
    assert effective_sample_size(torch.tensor([3.0, 1.0])) == pytest.approx(16 / 10)
    assert effective_sample_size(torch.zeros(3)) == 0.0


def test_needs_the_predictive_distribution():
    data, objective, _ = _task(100)
    with pytest.raises(SettingsError, match="predictive distribution"):
        CbAS(**SMALL).search(data.x[:4], objective.score, data, torch.arange(4), num_candidates=4, seed=0)


@pytest.mark.parametrize(("kwargs", "says"), [
    ({"iterations": 0}, "iterations"), ({"latent_size": 0}, "latent_size"), ({"percentile": 120.0}, "percentile"),
    ({"vae_lr": 0.0}, "vae_lr"), ({"min_std": 0.3, "max_std": 0.2}, "max_std"),
    ({"val_size": 1000}, "val_size"),
])
def test_bad_settings(kwargs, says):
    with pytest.raises(SettingsError, match=says):
        CbAS(**kwargs)


QUICK = ["--model.init_args.hidden", "[32]", "--ascent.searcher.init_args.offline_epochs", "1",
         "--ascent.searcher.init_args.iterations", "2", "--ascent.searcher.init_args.online_epochs", "2"]


@pytest.mark.parametrize("config", ["tfbind8/cbas.yaml", ["tfbind8/cbas.yaml", "ignite.yaml"]])
def test_cli_fit_with_cbas_on_tfbind8(config, quick_fit):
    _, row = quick_fit(config, *QUICK)
    assert row["method"] == ("cbas/ens_mean+ignite" if "ignite.yaml" in config else "cbas/ens_mean")
    assert row["ascent"]["searcher"] == "cbas" and row["ascent"]["iterations"] == 2
    assert row["num_candidates"] == 128 and 0.0 <= row["score_50th"] <= row["score_100th"] <= 1.0
    if "ignite.yaml" in config:
        assert len(row["ignite"]["lambda"]) == 5  # one per member: the VAEs are not constrained


@pytest.mark.parametrize("config", ["tfbind10/cbas.yaml", ["tfbind10/cbas.yaml", "ignite.yaml"]])
def test_cli_fit_with_cbas_on_tfbind10(config, quick_fit, tfbind10_every_design):
    _, row = quick_fit(config, *QUICK, "--data.data_dir", str(tfbind10_every_design))
    assert row["task"] == "TFBind10-Exact-v0" and row["ascent"]["offline_epochs"] == 1
    assert 0.0 <= row["score_50th"] <= row["score_100th"] <= 1.0
