"""Each method's and searcher's released settings that change what a user gets (steps, sizes,
step sizes, thresholds), observed on the objects built with no arguments.

Sources, per method: design-baselines' released search (Trabucco et al., Design-Bench, ICML 2022:
200 plain steps of 0.01·√D from the top 128); COMs (Trabucco et al., ICML 2021, ``coms_cleaned``:
50 steps of particle_lr·√D = 2·√D); RoMA (Yu et al., NeurIPS 2021, released ``trainers.py``: Adam
3e-3 for 500 steps, 64x64 softplus network); ICT (Yuan et al., NeurIPS 2023) and Tri-mentoring
(Chen et al., NeurIPS 2023): 3 proxies of 2x2048, SGD lr 0.1 cosine, best-Pearson checkpoints,
Adam 0.1 for 100 design steps; CbAS (Brookes et al., ICML 2019, design-baselines ``cbas``: 20
rounds, 80th percentile, latent 32, VAE lr 3e-4); MINs (Kumar & Levine, NeurIPS 2020,
design-baselines ``mins``: WGAN-GP 200 epochs, lr 2e-4, β = (0, 0.9), penalty 10, critic every 10)."""

from __future__ import annotations

import math

import pytest
import torch

from lightning_mbo.methods.coms import COMs
from lightning_mbo.methods.ict import ICT
from lightning_mbo.methods.roma import RoMA
from lightning_mbo.methods.surrogate import Surrogate
from lightning_mbo.methods.tri_mentoring import TriMentoring
from lightning_mbo.search.contract import SearchData

D = 24  # TFBind8 as logits


def _data(d: int = D) -> SearchData:
    return SearchData(torch.zeros(4, d), torch.zeros(4), True, num_classes=4)


@pytest.mark.parametrize(("cls", "steps", "lr", "optimizer"), [
    (Surrogate, 200, 0.01 * math.sqrt(D), "sgd"),
    (COMs, 50, 2.0 * math.sqrt(D), "sgd"),
    (RoMA, 500, 3e-3, "adam"),
    (ICT, 100, 0.1, "adam"),
    (TriMentoring, 100, 0.1, "adam"),
])
def test_search_defaults_per_method(cls, steps, lr, optimizer) -> None:
    s = cls(D, hidden=(4,)).search_defaults(_data())
    assert (s.steps, s.optimizer) == (steps, optimizer)
    assert s.lr == pytest.approx(lr)


def test_step_sizes_scale_with_sqrt_d_where_released_so() -> None:
    assert Surrogate(100, hidden=(4,)).search_defaults(_data(100)).lr == pytest.approx(0.1)
    assert COMs(100, hidden=(4,)).search_defaults(_data(100)).lr == pytest.approx(20.0)
    assert RoMA(100, hidden=(4,)).search_defaults(_data(100)).lr == pytest.approx(3e-3)


def test_surrogate_training_defaults() -> None:
    h = Surrogate(D).hparams
    assert (tuple(h.hidden), h.activation, h.head, h.lr, h.members) == ((2048, 2048), "leaky_relu", "gaussian", 3e-4, 1)


def test_roma_defaults() -> None:
    h = RoMA(D).hparams
    assert (tuple(h.hidden), h.activation, h.lr, h.noise_std, h.perturb_steps, h.inner_lr, h.grad_clip,
            h.adapt_steps, h.alpha, h.region) == ((64, 64), "softplus", 1e-3, 0.2, 20, 5e-3, 1.0, 100, 1.0, 4.0)


@pytest.mark.parametrize("cls", [ICT, TriMentoring])
def test_proxy_ensemble_defaults(cls) -> None:
    h = cls(D, hidden=(4,)).hparams
    assert (h.members, h.lr, h.lr_schedule, h.select_best, h.activation) == (3, 0.1, "cosine", True, "relu")


def test_ict_defaults() -> None:
    h = ICT(D, hidden=(4,)).hparams
    assert (h.finetune_steps, h.neighbours, h.noise, h.num_coteaching, h.alpha, h.beta, h.clip) == \
        (100, 128, 0.1, 8, 1e-3, 0.3, 0.2)


def test_tri_mentoring_defaults() -> None:
    h = TriMentoring(D, hidden=(4,)).hparams
    assert (h.neighbours, h.delta, h.beta, h.lambda_s, h.mentoring, h.voting, h.soft_labels) == \
        (10, 0.1, 1e-3, 0.1, True, True, True)


def test_cbas_defaults() -> None:
    from lightning_mbo.search.cbas import CbAS  # noqa: PLC0415

    s = CbAS()
    got = {k: getattr(s, k) for k in ("latent_size", "vae_lr", "iterations", "percentile", "batch_size")
           if hasattr(s, k)}
    expect = {"latent_size": 32, "vae_lr": 3e-4, "iterations": 20, "percentile": 80.0, "batch_size": 100}
    assert got == {k: expect[k] for k in got} and len(got) >= 3, got


def test_mins_defaults() -> None:
    from lightning_mbo.search.mins import MINs  # noqa: PLC0415

    s = MINs()
    settings = s
    got = {k: getattr(settings, k) for k in ("gan_epochs", "lr", "beta_1", "beta_2", "penalty_weight",
                                             "critic_frequency", "latent_size", "iterations")
           if hasattr(settings, k)}
    expect = {"gan_epochs": 200, "lr": 2e-4, "beta_1": 0.0, "beta_2": 0.9, "penalty_weight": 10.0,
              "critic_frequency": 10, "latent_size": 32, "iterations": 100}
    assert got == {k: expect[k] for k in got} and len(got) >= 4, got
