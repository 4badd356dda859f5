"""MINs: model inversion networks, a conditional generator from score to design.

Kumar, Levine, "Model Inversion Networks for Model-Based Optimization", NeurIPS 2020
(arXiv:1912.13464), as design-baselines releases it and the IGNITE repository runs it
(``design_baselines/mins_IGNITE/__init__.py``, ``trainers.py:340-728``; configs in
``experiments.py``, TFBind8 ``484-530``, TFBind10 ``632-678``). A Wasserstein GAN with gradient
penalty, conditioned on the (normalised) score, is trained on the visible designs with every
sample weighted by MINs' histogram reweighting (:mod:`lightning_mbo.functional.mins`):

* data: the visible designs as one-hot sequences (discrete tasks; ``data.decode`` of the
  features) or their normalised features (continuous), with their normalised scores. Each fit
  draws a permutation, leaves ``holdout`` = 200 rows out (the released validation set, which only
  logged statistics) and visits the rest in that one order every epoch (``buffer=1``), the last
  partial batch kept; the weights are computed over all rows;
* networks (:mod:`lightning_mbo.generative.gan`): ``z`` of size 32, a Dense(1024) embedding of y
  at every layer, 3 x (1024, LayerNorm, leaky 0.2); generator and critic alike;
* training: Adam 2e-4, betas (0, 0.9), batch 128, one critic step per batch and one generator
  step on every ``critic_frequency`` = 10th batch of an epoch, penalty weight 10, ``gan_epochs``
  = 200 (TFBind8) / 100 (TFBind10), the Gumbel-softmax temperature linear from 5 to 1 over them;
  real one-hot designs reach the critic relaxed (``keep`` 0.99, the same temperature);
* result: the exploit generator at ``y = max y``, temperature 0.001, argmax (so each position is
  a draw from the generator's categorical, by the Gumbel-max trick), scored at step 0.

``use_oracle: false`` (the faithful default) is the released offline configuration
(``iterations: 0``): the method's surrogate (the released oracle) is trained but never used, so
IGNITE on it cannot change the designs. ``use_oracle: true`` runs the released ``iterations > 0``
loop (``__init__.py:279-365``) with the surrogate as its oracle. An explore GAN, trained
alongside the exploit GAN, then ``iterations`` times, with the temperature held at its final
value:

1. randomized labelling: ``exploration_samples`` random designs paired with scores drawn from
   the reweighted bin distribution (a bin's lower edge plus ``Exponential(exploration_rate)``)
   are added to the data, and the explore GAN is refitted on them for ``epochs_per_iteration``;
2. ``thompson_samples`` designs of the explore generator at the largest of those scores are
   labelled with the method's predicted score and added to the data for good;
3. the exploit GAN is refitted on the grown data; the result is sampled at its largest score.

Every released configuration sets ``iterations: 0``; the loop's defaults are those of the last
upstream configuration that ran it, an online one (design-baselines' ``forward_model/cli.py`` at
5c5f0db, ``mins_policy``: 100 iterations of 10 epochs, 32 exploration and 32 Thompson samples,
rate 10). Not as released: step 2 labels the designs by the method's score of their encoding;
the released offline branch hands its oracle, trained on one-hot inputs, the class integers,
which does not run for discrete tasks. ``flip_frac`` and ``fake_pair_frac`` (0 in every released
configuration) are left out.

Diagnostics (:attr:`~lightning_mbo.search.gradient.AscentResult.diagnostics`), per candidate (its
block's run): the normalised score the final designs were sampled at (``conditioned_y``: the
data's best, or with ``use_oracle`` the best of the grown data, possibly a surrogate label) and
the designs the surrogate labelled into the data (``surrogate_labelled``); ``data_max_y``. The
offline run is flagged (its surrogate, and IGNITE on it, cannot change the designs), and so is a
final condition above the data's best (a surrogate's label).

Plain torch; no Lightning.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor
from torch.nn import functional as F

from lightning_mbo.functional.mins import (
    critic_loss,
    generator_loss,
    gradient_penalty,
    histogram_weights,
    randomized_labels,
    relax_one_hot,
    temperature,
)
from lightning_mbo.generative.gan import ConditionalCritic, ConditionalGenerator
from lightning_mbo.search.blocks import block_scorer, blocks
from lightning_mbo.search.contract import SearchData, Searcher
from lightning_mbo.search.gradient import AscentResult
from lightning_mbo.search.report import number, per_candidate, rounded, span
from lightning_mbo.validation import SettingsError, check_range

#: Temperature of the final samples (released ``exploit_gen.sample(..., temp=0.001)``), then argmax.
SAMPLE_TEMP = 1e-3
#: Keras Adam's epsilon.
ADAM_EPS = 1e-7


class MINs(Searcher):
    """MINs, one GAN (two with ``use_oracle``) per block of ``num_candidates`` candidates (per replicate).

    Args:
        gan_epochs: epochs of the first fit (released: 200 on TFBind8, 100 on TFBind10).
        hidden: width of every layer of generator and critic (released: 1024).
        latent_size: size of the generator's noise ``z`` (released: 32).
        batch_size: GAN batch size (released: 128).
        critic_frequency: a generator step every this many batches (released: 10).
        penalty_weight: weight of the gradient penalty (released: 10).
        lr: Adam's learning rate, generator and critic (released: 2e-4).
        beta_1: Adam's beta_1 (released: 0).
        beta_2: Adam's beta_2 (released: 0.9).
        holdout: rows left out of every fit, as released (its validation set; released: 200).
        base_temp: temperature of the reweighting's softmax over bin edges (released: 0.1).
        keep: mass kept on the observed class of real designs (released: 0.99).
        start_temp: Gumbel-softmax temperature of the first epoch (released: 5).
        final_temp: and of the last (released: 1).
        noise_std: std of the Gaussian noise on real continuous designs (released: 0).
        use_oracle: ``false``: the released offline run (the surrogate is not used); ``true``:
            the released ``iterations > 0`` loop, labelled by the surrogate.
        iterations: oracle iterations (``use_oracle`` only; upstream: 100).
        epochs_per_iteration: epochs of every refit (``use_oracle`` only; upstream: 10).
        exploration_samples: randomly labelled designs per iteration (upstream: 32).
        exploration_rate: rate of their labels' exponential noise (upstream: 10).
        thompson_samples: designs labelled by the surrogate per iteration (upstream: 32).
    """

    name = "mins"

    def __init__(self, gan_epochs: int = 200, hidden: int = 1024, latent_size: int = 32, batch_size: int = 128,
                 critic_frequency: int = 10, penalty_weight: float = 10.0, lr: float = 2e-4, beta_1: float = 0.0,
                 beta_2: float = 0.9, holdout: int = 200, base_temp: float = 0.1, keep: float = 0.99,
                 start_temp: float = 5.0, final_temp: float = 1.0, noise_std: float = 0.0, use_oracle: bool = False,
                 iterations: int = 100, epochs_per_iteration: int = 10, exploration_samples: int = 32,
                 exploration_rate: float = 10.0, thompson_samples: int = 32) -> None:
        for name, value, low in [("gan_epochs", gan_epochs, 1), ("hidden", hidden, 1), ("latent_size", latent_size, 1),
                                 ("batch_size", batch_size, 1), ("critic_frequency", critic_frequency, 1),
                                 ("iterations", iterations, 1), ("epochs_per_iteration", epochs_per_iteration, 1),
                                 ("thompson_samples", thompson_samples, 1), ("holdout", holdout, 0),
                                 ("exploration_samples", exploration_samples, 0),
                                 ("penalty_weight", penalty_weight, 0), ("noise_std", noise_std, 0)]:
            check_range(f"mins {name} (--ascent.searcher.init_args.{name})", value, low)
        for name, value in [("lr", lr), ("base_temp", base_temp), ("keep", keep), ("start_temp", start_temp),
                            ("final_temp", final_temp), ("exploration_rate", exploration_rate)]:
            check_range(f"mins {name} (--ascent.searcher.init_args.{name})", value, 0, strict=True)
        for name, value, top in [("beta_1", beta_1, 1), ("beta_2", beta_2, 1), ("keep", keep, 1)]:
            check_range(f"mins {name} (--ascent.searcher.init_args.{name})", value, 0)
            if value > top or (name != "keep" and value == top):
                raise SettingsError(f"mins {name} (--ascent.searcher.init_args.{name}) must be "
                                    f"{'<= 1' if name == 'keep' else '< 1'}, got {value}")
        self.gan_epochs, self.hidden, self.latent_size, self.batch_size = gan_epochs, hidden, latent_size, batch_size
        self.critic_frequency, self.penalty_weight = critic_frequency, penalty_weight
        self.lr, self.beta_1, self.beta_2, self.holdout = lr, beta_1, beta_2, holdout
        self.base_temp, self.keep, self.start_temp, self.final_temp = base_temp, keep, start_temp, final_temp
        self.noise_std, self.use_oracle, self.iterations = noise_std, bool(use_oracle), iterations
        self.epochs_per_iteration, self.exploration_samples = epochs_per_iteration, exploration_samples
        self.exploration_rate, self.thompson_samples = exploration_rate, thompson_samples

    def search(self, x0: Tensor, score: Callable[[Tensor], Tensor], data: SearchData,
               candidate_ids: Tensor | None = None, num_candidates: int = 128, seed: int = 0) -> AscentResult:
        """Train MINs once per block of ``num_candidates`` rows of ``x0`` and sample its designs.

        Args:
            x0: ``(C, D)`` this process's starting designs, ``C`` a multiple of ``num_candidates``;
                only their number, device and their blocks' scoring matter (MINs starts from the data).
            score: ``(C, D) -> (C,)`` the predicted score, row ``i`` scored as candidate ``i``.
            data: the visible designs and scores (normalised) and, for discrete tasks, the encoding.
            candidate_ids: ``(C,)`` the candidates' indices over all processes (a block's seed
                follows its replicate, not the process that runs it).
            num_candidates: designs handed back per block.
            seed: the run's seed.

        Returns:
            ``(C, D)`` the designs (normalised features), ``(T + 1, C)`` their predicted scores
            (``T`` = 0; with ``use_oracle``, ``T = iterations``: row ``t`` scores the exploit
            generator's samples before iteration ``t``, the last row the final designs), and per
            epoch of the first exploit fit the critic loss and ``E[D(real)] − E[D(fake)]``
            (``mins_critic_loss``, ``mins_wasserstein``; averaged over blocks).
        """
        if not data.discrete:
            designs = data.x.detach()
        elif data.encode is None or data.decode is None or data.num_classes is None:
            raise SettingsError("mins on a discrete task needs its encoding (SearchData.encode/decode/num_classes)")
        else:
            designs = data.decode(data.x).long().cpu()
        if self.holdout >= len(data.y):
            raise SettingsError(f"mins holdout (--ascent.searcher.init_args.holdout) {self.holdout} leaves no rows "
                                f"of {len(data.y)} to train on: lower it")
        xs, trajectories, stats, runs = [], [], [], []
        for b, start in enumerate(blocks(x0.shape[0], num_candidates, "mins")):
            block = int(candidate_ids[start]) // num_candidates if candidate_ids is not None else b
            scored = block_scorer(score, x0, start, num_candidates)
            x, traj, st = self._one(designs, data.y.detach(), data, scored, num_candidates, seed * 1_000 + block, x0)
            xs.append(x)
            trajectories.append(traj)
            runs.append({k: st.pop(k) for k in ("conditioned_y", "surrogate_labelled")})
            stats.append(st)
        mean_stats = {k: torch.tensor([s[k] for s in stats]).mean(0).tolist() for k in stats[0]}
        return AscentResult(torch.cat(xs).to(x0), torch.cat(trajectories, dim=1).to(x0), mean_stats,
                            self._diagnostics(runs, float(data.y.max()), num_candidates))

    def _diagnostics(self, runs: list[dict[str, float]], data_max: float, n: int) -> dict[str, Any]:
        """Each block's condition and surrogate-labelled designs on its candidates' entries; flags."""
        out: dict[str, Any] = {k: per_candidate([rounded(r[k]) for r in runs], n) for k in runs[0]}
        out["data_max_y"] = rounded(data_max)
        if not self.use_oracle:
            flags = ["mins: offline, as released (iterations 0): the surrogate was never consulted, so neither it "
                     "nor IGNITE on it can change the designs"]
        else:
            above = [r["conditioned_y"] for r in runs if r["conditioned_y"] > data_max]
            flags = [f"mins: sampled at y = {span(above)} (a surrogate's label), above the data's best "
                     f"{number(data_max)}"] if above else []
        out["flags"] = flags
        return out

    def _one(self, designs: Tensor, y: Tensor, data: SearchData, score: Callable[[Tensor], Tensor], n: int,
             seed: int, like: Tensor) -> tuple[Tensor, Tensor, dict[str, Any]]:
        """One MINs run: the final designs ``(n, D)``, the trajectory ``(T + 1, n)`` and the first fit's stats."""
        cpu = torch.Generator().manual_seed(seed)  # initialisation, data order, labelling
        noise = torch.Generator(device=like.device).manual_seed(seed)  # z, Gumbel and interpolation noise
        shape, classes = tuple(designs.shape[1:]), data.num_classes if data.discrete else None
        exploit = WeightedGAN(self, shape, classes, cpu, like)
        explore = WeightedGAN(self, shape, classes, cpu, like) if self.use_oracle else None
        y = y.to(like)

        def pipeline(x: Tensor, labels: Tensor) -> tuple[Tensor, Tensor, Tensor]:
            return self.fit_data(x, labels, classes, cpu, like)

        to_features = data.encode

        def encode(x: Tensor) -> Tensor:
            return to_features(x.cpu()).to(like) if to_features is not None and data.discrete else x.to(like)

        def sample(gan: WeightedGAN, cond: Tensor, m: int) -> Tensor:
            with torch.no_grad():
                out = gan.gen.sample(cond.expand(m).to(like), SAMPLE_TEMP, noise)
            return out.argmax(-1).cpu() if data.discrete else out

        fit = pipeline(designs, y)
        if explore is not None:
            explore.fit(*fit, self.gan_epochs, self.start_temp, self.final_temp, noise)
        stats = exploit.fit(*fit, self.gan_epochs, self.start_temp, self.final_temp, noise)
        traj = []
        if explore is not None:
            for _ in range(self.iterations):
                with torch.no_grad():
                    traj.append(score(encode(sample(exploit, y.max(), n))))
                pick = torch.randint(0, len(y), (self.exploration_samples,), generator=cpu)
                labels = randomized_labels(y, self.exploration_samples, self.exploration_rate, self.base_temp,
                                           generator=cpu)
                tilde_x, tilde_y = torch.cat([designs, designs[pick.to(designs.device)]]), torch.cat([y, labels])
                explore.fit(*pipeline(tilde_x, tilde_y), self.epochs_per_iteration, self.final_temp,
                            self.final_temp, noise)
                new = sample(explore, tilde_y.max(), self.thompson_samples)
                with torch.no_grad():
                    new_y = score(encode(new)).detach().to(y)
                designs, y = torch.cat([designs, new.to(designs.device)]), torch.cat([y, new_y])
                exploit.fit(*pipeline(designs, y), self.epochs_per_iteration, self.final_temp,
                            self.final_temp, noise)
        final = encode(sample(exploit, y.max(), n))
        with torch.no_grad():
            traj.append(score(final))
        labelled = len(traj) - 1
        info = {"conditioned_y": float(y.max()), "surrogate_labelled": labelled * self.thompson_samples}
        return final, torch.stack([t.detach().reshape(-1) for t in traj]), {**stats, **info}

    def fit_data(self, designs: Tensor, y: Tensor, num_classes: int | None, gen: torch.Generator,
                  like: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The rows one fit trains on, in its one order: ``(x, y (n,), w (n,))``, ``x`` one-hot
        ``(n, L, C)`` (discrete) or features ``(n, D)``; the weights are computed over all rows."""
        w = histogram_weights(y, base_temp=self.base_temp)
        rows = torch.randperm(len(y), generator=gen)[self.holdout:]
        x = designs[rows.to(designs.device)]
        x = F.one_hot(x, num_classes) if num_classes is not None else x
        rows = rows.to(y.device)
        return x.to(like), y[rows].to(like), w[rows].to(like)


class WeightedGAN:
    """A generator, its critic and their optimizers, refitted by :meth:`fit` (the released ``WeightedGAN``)."""

    def __init__(self, s: MINs, shape: tuple[int, ...], num_classes: int | None, init: torch.Generator,
                 like: Tensor) -> None:
        self.s = s
        self.gen = ConditionalGenerator(shape, num_classes, s.latent_size, s.hidden, init).to(like)
        self.critic = ConditionalCritic(math.prod(self.gen.out_shape), s.hidden, init).to(like)
        betas = (s.beta_1, s.beta_2)
        self.opt_g = torch.optim.Adam(self.gen.parameters(), lr=s.lr, betas=betas, eps=ADAM_EPS, foreach=True)
        self.opt_c = torch.optim.Adam(self.critic.parameters(), lr=s.lr, betas=betas, eps=ADAM_EPS, foreach=True)

    def fit(self, x: Tensor, y: Tensor, w: Tensor, epochs: int, start: float, final: float,
            noise: torch.Generator) -> dict[str, list[float]]:
        """``epochs`` epochs over ``(x, y, w)`` in order; per epoch the mean critic loss and
        ``E[D(real)] − E[D(fake)]``."""
        stats: dict[str, list[float]] = {"mins_critic_loss": [], "mins_wasserstein": []}
        gen_params = list(self.gen.parameters())
        with torch.enable_grad():
            for epoch in range(epochs):
                self._epoch(x, y, w, temperature(epoch, epochs, start, final), noise, gen_params, stats)
        return stats

    def _epoch(self, x: Tensor, y: Tensor, w: Tensor, temp: float, noise: torch.Generator, gen_params: Sequence[Tensor],
               stats: dict[str, list[float]]) -> None:
        """One epoch at temperature ``temp``: a critic step per batch, a generator step every
        ``critic_frequency``-th (the batch count restarts every epoch, as released)."""
        s = self.s
        loss_sum, gap_sum, batches = x.new_zeros(()), x.new_zeros(()), 0
        for i, lo in enumerate(range(0, len(y), s.batch_size)):
            xb, yb, wb = x[lo:lo + s.batch_size], y[lo:lo + s.batch_size], w[lo:lo + s.batch_size]
            if self.gen.num_classes is not None:
                real = relax_one_hot(xb, s.keep, temp, noise)
            else:
                real = xb + s.noise_std * torch.randn(xb.shape, generator=noise, device=xb.device, dtype=xb.dtype)
            with torch.no_grad():
                fake = self.gen.sample(yb, temp, noise)
            d_real, d_fake = self.critic(torch.cat([real, fake]), yb.repeat(2)).chunk(2)  # one pass for both
            e = torch.rand(len(yb), generator=noise, device=yb.device, dtype=yb.dtype)
            penalty = gradient_penalty(self.critic, real, fake, yb, e)
            loss = critic_loss(d_real, d_fake, penalty, wb, s.penalty_weight)
            self.opt_c.zero_grad()
            loss.backward()
            self.opt_c.step()
            loss_sum = loss_sum + loss.detach()
            gap_sum = gap_sum + (d_real - d_fake).mean().detach()
            batches += 1
            if i % s.critic_frequency == 0:
                g_loss = generator_loss(self.critic(self.gen.sample(yb, temp, noise), yb), wb)
                self.opt_g.zero_grad()
                g_loss.backward(inputs=gen_params)
                self.opt_g.step()
        stats["mins_critic_loss"].append(float(loss_sum) / batches)
        stats["mins_wasserstein"].append(float(gap_sum) / batches)
