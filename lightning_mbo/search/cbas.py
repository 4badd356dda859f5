"""CbAS: conditioning by adaptive sampling, a VAE refitted to designs the surrogate rates highly.

Brookes, Park, Listgarten, ICML 2019, as design-baselines releases it and the IGNITE repository
runs it (``design_baselines/cbas/__init__.py``, ``trainers.py``; settings of
``cbas/experiments.py`` for TFBind8/TFBind10). The method's surrogate ensemble is the oracle:

1. fit a prior VAE ``p`` (:class:`~lightning_mbo.generative.vae.DesignVAE`) to the visible
   designs by the ELBO (unit weights): ``offline_epochs`` epochs (200 TF8, 100 TF10), batch 100,
   Adam 3e-4, the first ``val_size`` = 200 rows of one shuffle held out (logged only);
2. copy ``p`` into the search VAE ``q`` (its own Adam, kept over the iterations);
3. ``iterations`` = 20 times: draw ``online_batches`` x ``batch_size`` = 1,000 designs from
   ``q`` at fresh ``z ~ N(0, I)``, weight them by :func:`~lightning_mbo.functional.cbas.importance_weights`
   with γ the ``percentile`` = 80th percentile of the ensemble's mean predictions of the 1,000, and
   train ``q`` on them by the weighted ELBO for ``online_epochs`` = 10 epochs (200 held out);
4. hand back ``num_candidates`` SAMPLES of ``q`` (not its mode) at fresh ``z``, scored after the
   last iteration.

Diagnostics (:attr:`~lightning_mbo.search.gradient.AscentResult.diagnostics`), per candidate (its
block's run): γ of every iteration (``gamma``), the effective sample size ``(Σw)² / Σw²`` of every
iteration's importance weights (``ess``, of the ``online_batches x batch_size`` draws) and of the
last one (``final_ess``); flagged when the last weights rest on under :data:`LOW_ESS` of the draws.

Discrete designs are class sequences, sampled from the decoder's per-position categoricals; the
surrogate scores them through ``SearchData.encode``. The searcher needs the members' predictive
distribution (``SearchObjective.predictive``: a Gaussian-head ``Surrogate``). Each replicate's
block of candidates runs its own CbAS.

Plain torch; no Lightning.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from lightning_mbo.functional.cbas import gaussian_kl, importance_weights, percentile_nearest, weighted_elbo_loss
from lightning_mbo.generative.vae import DesignVAE
from lightning_mbo.search.blocks import block_scorer, blocks
from lightning_mbo.search.contract import SearchData, Searcher
from lightning_mbo.search.gradient import AscentResult
from lightning_mbo.search.report import per_candidate, rounded, span
from lightning_mbo.validation import SettingsError, check_range

#: A share of the draws under which the last iteration's effective sample size is flagged.
LOW_ESS = 0.05


def effective_sample_size(w: Tensor) -> float:
    """``(Σw)² / Σw²`` of weights ``w`` (0 when they are all 0)."""
    total = float(w.sum())
    return total**2 / float((w**2).sum()) if total > 0 else 0.0


class CbAS(Searcher):
    """CbAS at the released settings (design-baselines' TFBind8 defaults).

    Args:
        latent_size: the VAEs' latent size.
        hidden: width of their hidden layer.
        embedding: width of their class embedding (discrete tasks).
        num_layers: hidden layers of encoder and decoder.
        vae_lr: Adam learning rate of both VAEs.
        beta: weight of the KL term.
        batch_size: VAE batch size, and the designs drawn per online batch.
        val_size: rows held out of every VAE fit (logged only in the released code; unused here).
        offline_epochs: epochs of the prior ``p`` (released: 200 TFBind8, 100 TFBind10).
        online_batches: batches drawn from ``q`` per iteration.
        online_epochs: epochs of ``q`` per iteration.
        iterations: CbAS iterations.
        percentile: γ's percentile of the ensemble means of each iteration's samples.
        max_std: initial upper bound of the VAEs' soft-bounded std.
        min_std: initial lower bound.
    """

    name = "cbas"

    def __init__(self, latent_size: int = 32, hidden: int = 256, embedding: int = 256, num_layers: int = 1,
                 vae_lr: float = 3e-4, beta: float = 1.0, batch_size: int = 100, val_size: int = 200,
                 offline_epochs: int = 200, online_batches: int = 10, online_epochs: int = 10, iterations: int = 20,
                 percentile: float = 80.0, max_std: float = 0.2, min_std: float = 0.1) -> None:
        for name, value in {"latent_size": latent_size, "hidden": hidden, "embedding": embedding,
                            "batch_size": batch_size, "online_batches": online_batches,
                            "iterations": iterations}.items():
            check_range(f"cbas {name} (--ascent.searcher.init_args.{name})", value, 1)
        for name, value in {"num_layers": num_layers, "val_size": val_size, "offline_epochs": offline_epochs,
                            "online_epochs": online_epochs, "beta": beta}.items():
            check_range(f"cbas {name} (--ascent.searcher.init_args.{name})", value, 0)
        check_range("cbas vae_lr (--ascent.searcher.init_args.vae_lr)", vae_lr, 0, strict=True)
        if not 0 <= percentile <= 100:
            raise SettingsError(f"cbas percentile (--ascent.searcher.init_args.percentile) must be in [0, 100], got "
                                f"{percentile}")
        check_range("cbas min_std (--ascent.searcher.init_args.min_std)", min_std, 0, strict=True)
        check_range("cbas max_std (--ascent.searcher.init_args.max_std)", max_std, min_std, strict=True,
                    hint="max_std must exceed min_std")
        if val_size >= online_batches * batch_size:
            raise SettingsError(f"cbas val_size ({val_size}) must be below the {online_batches * batch_size} designs "
                                "drawn per iteration (--ascent.searcher.init_args.val_size)")
        self.latent_size, self.hidden, self.embedding, self.num_layers = latent_size, hidden, embedding, num_layers
        self.vae_lr, self.beta, self.batch_size, self.val_size = vae_lr, beta, batch_size, val_size
        self.offline_epochs, self.online_batches, self.online_epochs = offline_epochs, online_batches, online_epochs
        self.iterations, self.percentile, self.max_std, self.min_std = iterations, percentile, max_std, min_std

    def search(self, x0: Tensor, score: Callable[[Tensor], Tensor], data: SearchData,
               candidate_ids: Tensor | None = None, num_candidates: int = 128, seed: int = 0) -> AscentResult:
        """Run CbAS once per block of ``num_candidates`` rows of ``x0``.

        Returns:
            ``num_candidates`` samples of each block's final ``q`` (as features), and a
            ``(iterations + 1, C)`` trajectory: the mean predicted score of each iteration's draws
            (repeated over the block's rows), then each candidate's own. ``stats`` holds each
            iteration's γ and mean importance weight (averaged over blocks).
        """
        predictive = getattr(score, "predictive", None)
        if predictive is None:
            raise SettingsError("cbas weights designs by the ensemble's predictive distribution: use a method with "
                                "Gaussian members (lightning_mbo.methods.Surrogate, head: gaussian)")
        if data.discrete and (data.encode is None or data.decode is None or data.num_classes is None):
            raise SettingsError("cbas on a discrete task needs its encoding (SearchData.encode/decode)")
        designs = self._designs(data)
        xs, trajectories, stats = [], [], {"gamma": [], "mean_weight": [], "ess": []}
        for b, start in enumerate(blocks(x0.shape[0], num_candidates, "cbas")):
            scored = block_scorer(predictive, x0, start, num_candidates)
            x, traj, block_stats = self._one(scored, designs, data, num_candidates, seed * 1_000 + b)
            xs.append(x)
            trajectories.append(traj)
            for key in stats:
                stats[key].append(block_stats[key])
        out_stats = {k: torch.tensor(v).mean(0).tolist() for k, v in stats.items() if k != "ess"}
        return AscentResult(torch.cat(xs).to(x0), torch.cat(trajectories, dim=1).to(x0), out_stats,
                            self._diagnostics(stats, num_candidates))

    def _diagnostics(self, stats: dict[str, list[list[float]]], n: int) -> dict[str, Any]:
        """Each block's γ and effective sample sizes per iteration on its candidates' entries; a flag
        when the last weights rest on few draws."""
        draws = self.online_batches * self.batch_size
        final = [ess[-1] for ess in stats["ess"]]
        out: dict[str, Any] = {
            "gamma": per_candidate([[rounded(g) for g in block] for block in stats["gamma"]], n),
            "ess": per_candidate([[rounded(e) for e in block] for block in stats["ess"]], n),
            "final_ess": per_candidate([rounded(e) for e in final], n),
        }
        low = [e for e in final if e < LOW_ESS * draws]
        out["flags"] = [f"cbas: the last iteration's weights rest on an effective {span(low)} of {draws:,} draws"] \
            if low else []
        return out

    def _designs(self, data: SearchData) -> Tensor:
        """The visible designs as the VAE models them: class sequences (discrete) or the features."""
        if not data.discrete:
            return data.x.detach().cpu()
        return (data.x if data.integers else data.decode(data.x)).detach().long().cpu()

    def _features(self, data: SearchData, designs: Tensor) -> Tensor:
        return data.encode(designs) if data.discrete else designs

    def _one(self, predictive: Callable[[Tensor], Tensor], designs: Tensor, data: SearchData, n: int,
             seed: int) -> tuple[Tensor, Tensor, dict[str, list[float]]]:
        gen = torch.Generator().manual_seed(seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            p = DesignVAE(tuple(designs.shape[1:]), data.num_classes if data.discrete else None, self.latent_size,
                          self.hidden, self.embedding, self.num_layers, self.max_std, self.min_std)
        self._fit(p, torch.optim.Adam(p.parameters(), lr=self.vae_lr, eps=1e-7), designs,
                  torch.ones(len(designs)), self.offline_epochs, gen)
        q = copy.deepcopy(p)
        q_opt = torch.optim.Adam(q.parameters(), lr=self.vae_lr, eps=1e-7)  # kept over the iterations
        means, gammas, mean_weights, ess = [], [], [], []
        for _ in range(self.iterations):
            x, w, y, gamma = self._generate(p, q, predictive, data, gen)
            means.append(float(y.mean()))
            gammas.append(float(gamma))
            mean_weights.append(float(w.mean()))
            ess.append(effective_sample_size(w.double()))
            self._fit(q, q_opt, x, w, self.online_epochs, gen)
        with torch.no_grad():
            z = torch.randn(n, self.latent_size, generator=gen)
            final = q.sample(z, gen)
            feats = self._features(data, final)
            final_pred = predictive(feats)[0].mean(0).detach().cpu()
        traj = torch.cat([torch.tensor(means).unsqueeze(1).expand(-1, n), final_pred.unsqueeze(0)])
        return feats.detach().cpu(), traj, {"gamma": gammas, "mean_weight": mean_weights, "ess": ess}

    @torch.no_grad()
    def _generate(self, p: DesignVAE, q: DesignVAE, predictive: Callable[[Tensor], Tensor], data: SearchData,
                  gen: torch.Generator) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """One iteration's weighted draws from ``q``: designs, weights, ensemble means and γ."""
        xs, log_p, log_q, preds = [], [], [], []
        for _ in range(self.online_batches):
            z = torch.randn(self.batch_size, self.latent_size, generator=gen)
            x = q.sample(z, gen)
            xs.append(x)
            log_p.append(p.log_likelihood(x, z))
            log_q.append(q.log_likelihood(x, z))
            preds.append(predictive(self._features(data, x)).detach().cpu())
        x, pred = torch.cat(xs), torch.cat(preds, dim=-1)  # pred (2, K, n)
        y = pred[0].mean(0)  # the mixture's mean
        gamma = percentile_nearest(y, self.percentile)
        w = importance_weights(torch.cat(log_p), torch.cat(log_q), pred[0], pred[1], gamma)
        return x, w, y, gamma

    def _fit(self, vae: DesignVAE, opt: torch.optim.Optimizer, x: Tensor, w: Tensor, epochs: int,
             gen: torch.Generator) -> None:
        """The released ``WeightedVAE`` fit: one shuffle holds out ``val_size`` rows (unused), then
        ``epochs`` reshuffled passes in batches of ``batch_size`` (the last partial batch kept)."""
        order = torch.randperm(len(x), generator=gen)
        train = order[min(self.val_size, len(x) - 1):]
        for _ in range(epochs):
            for idx in train[torch.randperm(len(train), generator=gen)].split(self.batch_size):
                xb, wb = x[idx], w[idx]
                loc, scale = vae.encode(xb)
                z = loc + scale * torch.randn(loc.shape, generator=gen)
                loss = weighted_elbo_loss(vae.log_likelihood(xb, z), gaussian_kl(loc, scale), wb, self.beta)
                opt.zero_grad()
                loss.backward()
                opt.step()
