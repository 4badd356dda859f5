"""The released settings of the newer searchers, observed on the real objects they build.

Sources: CMA-ES, BO-qEI and REINFORCE as design-baselines' released code runs them
(Trabucco et al., "Design-Bench", ICML 2022, Appendix; brandontrabucco/design-baselines:
``design_baselines/cma_es/__init__.py`` (σ0 0.5, cma's default population),
``design_baselines/bo_qei/__init__.py`` (``solver_samples``/label noise 0.1),
``design_baselines/reinforce/__init__.py`` (``iterations`` 200, ``batch_size`` 256 discrete /
2048 continuous, Adam 0.01)); IGNITE (Dao et al., NeurIPS 2024) reuses them.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lightning_mbo.search import CMAES, BOqEI, Reinforce, SearchData
from lightning_mbo.tasks import to_logits

# --- CMA-ES -------------------------------------------------------------------------------


@pytest.fixture
def cma_spy(monkeypatch):
    """Every ``cma.CMAEvolutionStrategy`` the searcher builds, with its arguments."""
    cma = pytest.importorskip("cma")
    built = []
    real = cma.CMAEvolutionStrategy

    class Spy(real):
        def __init__(self, x0, sigma0, inopts=None):
            super().__init__(x0, sigma0, inopts)
            self.spied = {"x0": np.array(x0, copy=True), "sigma0": sigma0, "opts": dict(inopts or {})}
            built.append(self)

    monkeypatch.setattr(cma, "CMAEvolutionStrategy", Spy)
    return built


@pytest.mark.parametrize(("d", "popsize"), [(24, 13), (30, 14)])
def test_cma_es_sigma_and_default_population(cma_spy, d, popsize) -> None:
    """σ0 = 0.5 and cma's default λ = 4 + ⌊3 ln D⌋: 13 on TFBind8 (D = 24 logits), 14 on TFBind10 (D = 30)."""
    assert 4 + int(3 * np.log(d)) == popsize
    x0 = torch.zeros(2, d)
    calls = []

    def score(x):
        calls.append(x.shape[0])
        return -(x ** 2).sum(-1)

    CMAES(iterations=1).search(x0, score, candidate_ids=torch.arange(2), seed=0)
    assert len(cma_spy) == 2
    for es in cma_spy:
        assert es.spied["sigma0"] == 0.5
        assert "popsize" not in es.spied["opts"]  # cma's own default, not a number of ours
        assert es.popsize == popsize
        assert es.spied["opts"]["maxiter"] == 1
    # One scoring of the starts, then λ batched calls of C rows.
    assert calls == [2] + [2] * popsize


def test_cma_es_released_defaults() -> None:
    s = CMAES()
    assert (s.sigma, s.iterations, s.popsize) == (0.5, 100, None)


def test_cma_es_returns_cmas_xbest(cma_spy) -> None:
    """The returned point is ``es.result.xbest``: the best point the surrogate saw. On a flat
    surrogate no sampled point beats the start by the searcher's own bookkeeping, but cma's
    xbest is a sampled point (not the start, not the distribution's mean)."""
    x0 = torch.zeros(3, 5)
    out = CMAES(iterations=3).search(x0, lambda x: torch.zeros(x.shape[0]), candidate_ids=torch.arange(3), seed=0)
    for i, es in enumerate(cma_spy):
        assert np.allclose(out.x[i].numpy(), es.result.xbest)
        assert not np.allclose(es.result.xbest, 0.0)
        assert not np.allclose(es.result.xbest, es.mean)


def test_cma_es_returns_the_best_point_seen_on_a_slope(cma_spy) -> None:
    """On ``f(x) = x_0`` the returned point scores what cma recorded as its best (fbest = -f)."""
    out = CMAES(iterations=4).search(torch.zeros(2, 3), lambda x: x[:, 0], candidate_ids=torch.arange(2), seed=0)
    for i, es in enumerate(cma_spy):
        assert float(out.x[i, 0]) == pytest.approx(-es.result.fbest)
        assert float(out.trajectory[-1, i]) == pytest.approx(-es.result.fbest)


# --- BO-qEI -------------------------------------------------------------------------------

SMALL = {"rounds": 1, "q": 4, "initial": 8, "restarts": 1, "raw_samples": 8, "maxiter": 5, "mc_samples": 16}


def test_bo_qei_released_defaults() -> None:
    pytest.importorskip("botorch")
    s = BOqEI()
    assert (s.rounds, s.q, s.initial, s.label_noise_std, s.observation_noise) == (10, 32, 500, 0.1, 0.01)


def test_bo_qei_labels_proposals_with_prediction_plus_n0_01_noise(monkeypatch) -> None:
    """The stored label of every proposal is the method's prediction plus N(0, 0.1²), drawn from
    the block's generator (seed·1000 + block). With a constant prediction of 5 and data far below,
    the returned (top) points are the 4 proposals; their stored values are exactly 5 + 0.1·z."""
    botorch_models = pytest.importorskip("botorch.models")
    gps = []
    real_gp = botorch_models.SingleTaskGP

    def spy_gp(*args, **kwargs):
        gps.append(kwargs)
        return real_gp(*args, **kwargs)

    monkeypatch.setattr(botorch_models, "SingleTaskGP", spy_gp)
    g = torch.Generator().manual_seed(0)
    x_data = torch.rand(16, 3, generator=g)
    y_data = -100.0 - torch.rand(16, generator=g)
    out = BOqEI(**SMALL).search(torch.zeros(4, 3), lambda x: torch.full((x.shape[0],), 5.0),
                                SearchData(x_data, y_data, False), num_candidates=4, seed=2)
    z = torch.randn(4, generator=torch.Generator().manual_seed(2 * 1_000), dtype=torch.float64)
    expect = sorted((5.0 + 0.1 * z).tolist(), reverse=True)
    stored = out.diagnostics["stored_value"]
    assert out.diagnostics["proposed_in_round"] == [1] * 4
    assert stored == pytest.approx(expect, abs=1e-3)
    assert np.std(stored) > 0.01  # the noise is there
    # The GP: fixed observation noise variance 0.01 on every point, a scaled Matérn-5/2 ARD kernel.
    assert len(gps) == 1 and torch.all(gps[0]["train_Yvar"] == 0.01)
    kernel = gps[0]["covar_module"]
    assert kernel.base_kernel.nu == 2.5 and kernel.base_kernel.ard_num_dims == 3


# --- REINFORCE ----------------------------------------------------------------------------


def _discrete_data(n: int = 8, length: int = 3, k: int = 4) -> SearchData:
    g = torch.Generator().manual_seed(0)
    seqs = torch.randint(0, k, (n, length), generator=g)

    def encode(s):
        return to_logits(s, k).reshape(len(s), -1)

    def decode(x):
        return torch.cat([torch.zeros(len(x), length, 1), x.reshape(len(x), length, k - 1)], -1).argmax(-1)

    x = encode(seqs)
    return SearchData(x, x.sum(-1), True, num_classes=k, encode=encode, decode=decode)


def test_reinforce_released_defaults() -> None:
    s = Reinforce()
    assert (s.iterations, s.batch, s.lr, s.sigma) == (200, None, 0.01, 0.1)


def _sample_counts(monkeypatch, discrete: bool) -> list[int]:
    """The number of samples of every draw REINFORCE's policy makes (multinomial draws for a
    discrete task, Gaussian noise for a continuous one)."""
    counts: list[int] = []
    if discrete:
        real = torch.multinomial

        def spy(probs, m, *args, **kwargs):
            counts.append(int(m))
            return real(probs, m, *args, **kwargs)

        monkeypatch.setattr(torch, "multinomial", spy)
    else:
        real = torch.randn

        def spy(*args, **kwargs):
            shape = args[0] if args and isinstance(args[0], (tuple, list, torch.Size)) else args
            counts.append(int(shape[0]))
            return real(*args, **kwargs)

        monkeypatch.setattr(torch, "randn", spy)
    return counts


@pytest.mark.parametrize(("discrete", "batch"), [(True, 256), (False, 2048)])
def test_reinforce_samples_per_update(monkeypatch, discrete, batch) -> None:
    """Each policy update draws ``batch`` samples (released 256 discrete, 2048 continuous); the
    result is ``num_candidates`` fresh samples."""
    data = _discrete_data() if discrete else SearchData(torch.randn(8, 3), torch.randn(8), False)
    counts = _sample_counts(monkeypatch, discrete)
    out = Reinforce(iterations=2).search(data.x, lambda x: x.sum(-1), data, num_candidates=8, seed=0)
    assert counts == [batch, batch, 8]
    assert out.x.shape == data.x.shape and out.trajectory.shape == (3, 8)


@pytest.mark.parametrize("discrete", [True, False])
def test_reinforce_batch_override_is_used(monkeypatch, discrete) -> None:
    data = _discrete_data() if discrete else SearchData(torch.randn(8, 3), torch.randn(8), False)
    counts = _sample_counts(monkeypatch, discrete)
    Reinforce(iterations=3, batch=16).search(data.x, lambda x: x.sum(-1), data, num_candidates=8, seed=0)
    assert counts == [16, 16, 16, 8]


def test_reinforce_adam_lr_is_released_0_01(monkeypatch) -> None:
    seen = []
    real = torch.optim.Adam

    def spy(params, **kw):
        seen.append(kw)
        return real(params, **kw)

    monkeypatch.setattr(torch.optim, "Adam", spy)
    data = SearchData(torch.randn(8, 3), torch.randn(8), False)
    Reinforce(iterations=1, batch=4).search(data.x, lambda x: x.sum(-1), data, num_candidates=8, seed=0)
    assert seen and seen[0]["lr"] == 0.01


def test_reinforce_continuous_policy_samples_with_std_0_1_around_the_top_mean() -> None:
    """The continuous policy starts at the mean of the top designs and samples N(mean, 0.1²)
    (released ``sigma`` 0.1)."""
    x = torch.randn(8, 3, generator=torch.Generator().manual_seed(1)) * 3
    data = SearchData(x, torch.randn(8), False)
    seen = []
    Reinforce(iterations=1).search(x, lambda z: seen.append(z[:, :].clone()) or z.sum(-1), data,
                                   num_candidates=8, seed=0)
    first = torch.cat([z for z in seen[: 2048 // 8]])  # the first update's 2048 samples, 8 at a time
    assert first.shape == (2048, 3)
    assert torch.allclose(first.mean(0), x.mean(0), atol=0.02)
    assert torch.allclose(first.std(0), torch.full((3,), 0.1), atol=0.01)
