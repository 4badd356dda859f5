"""REINFORCE over designs: a policy over designs trained by the score-function gradient.

As IGNITE's and design-baselines' released code runs it (Trabucco et al., ICML 2022; Williams
1992): a policy ``π_φ`` is trained for ``iterations`` = 200 iterations of ``batch`` samples to
maximise the method's predicted score, with the standardised score as the advantage,

    A_i = (f(x_i) - mean_j f(x_j)) / std_j f(x_j),    L(φ) = -mean_i log π_φ(x_i) A_i,

by Adam (lr 0.01) on the policy's parameters; the result is ``num_candidates`` = 128 fresh
samples of the final policy.

* Discrete tasks: a factorised categorical policy, one distribution per position, started at
  the class frequencies of the 128 best visible designs (``log`` frequency as the logit; a class
  that never occurs there gets ``-inf`` and is never sampled). ``batch`` = 256. Sequences are
  scored through the task's encoding (logits, z-scored), as the method was trained.
* Continuous tasks: a diagonal Gaussian with a fixed ``σ = 0.1`` and a trainable mean started at
  the mean of the 128 best visible designs; ``batch`` = 2048.

The released discrete code has a broadcasting bug (``mode="released"``, the faithful default):
the per-position log-probabilities ``[B, L]`` are indexed to ``[B, 1, L]`` and multiplied by the
advantages ``[B, 1]``, which broadcasts to ``[B, B, L]``; the mean of that is ``mean(log π) ·
mean(A)``, whose gradient vanishes because the standardised advantages sum to zero. The policy
therefore stays at its starting frequencies. The bug entered design-baselines in commit aaee3a3
(2021-06-01, "updating experiments for db submission"); numbers published from that code on
match ``released``. ``mode="fixed"`` sums each sample's log-probability over positions and
weights it by its own advantage. The policy's Adam is Keras' (epsilon 1e-7), as released.

Diagnostics (:attr:`~lightning_mbo.search.gradient.AscentResult.diagnostics`), per candidate
(its block's policy): the largest change of a policy parameter over training, the logits and
probabilities of the discrete policy (``policy_max_abs_logit_change``,
``policy_max_abs_prob_change``; finite logits only) or the continuous policy's mean
(``policy_max_abs_mean_change``); a policy that did not move (a change under
:data:`UNMOVED`) is flagged.

Plain torch; no Lightning.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import torch
from torch import Tensor

from lightning_mbo.search.blocks import block_scorer, blocks
from lightning_mbo.search.contract import SearchData, Searcher
from lightning_mbo.search.gradient import AscentResult
from lightning_mbo.search.report import per_candidate, rounded
from lightning_mbo.validation import SettingsError, check_choice, check_range

Mode = Literal["released", "fixed"]
#: A policy whose parameters changed by less than this over training is reported as unmoved.
UNMOVED = 1e-6
#: Keras Adam's epsilon (the released policy optimizer is ``tf.keras.optimizers.Adam``).
ADAM_EPS = 1e-7


def reinforce_loss(log_prob: Tensor, advantage: Tensor, mode: Mode = "fixed") -> Tensor:
    """The REINFORCE loss of ``B`` samples.

    Args:
        log_prob: ``(B, L)`` per-position log-probabilities of the samples (``(B, 1)`` for a joint one).
        advantage: ``(B,)`` the samples' advantages (no gradient flows into them).
        mode: ``fixed``: ``-mean_i A_i Σ_l log π(x_il)``; ``released``: design-baselines'
            broadcast ``-mean_{i,j,l} log π(x_il) A_j``.

    Returns:
        The scalar loss.
    """
    check_choice("reinforce mode", mode, Mode)
    advantage = advantage.detach()
    if mode == "fixed":
        return -(log_prob.sum(-1) * advantage).mean()
    # [B, 1, L] * [B, 1] broadcasts to [B, B, L]: element (i, j, l) is log π(x_il) · A_j.
    return -(log_prob.unsqueeze(1) * advantage.unsqueeze(-1)).mean()


def standardise(f: Tensor) -> Tensor:
    """``(f - mean f) / std f`` (population std; 1 where the scores are all equal)."""
    std = f.std(unbiased=False)
    return (f - f.mean()) / torch.where(std > 0, std, torch.ones_like(std))


class Reinforce(Searcher):
    """REINFORCE, one policy per block of ``num_candidates`` candidates (per replicate).

    Args:
        iterations: policy updates (released: 200).
        batch: samples per update (``null``: the released 256 for discrete tasks, 2048 for continuous).
        lr: Adam's learning rate on the policy (released: 0.01).
        sigma: the continuous policy's fixed standard deviation (released: 0.1).
        mode: ``released`` (the faithful default, with the released broadcasting bug: the policy
            does not move on discrete tasks) or ``fixed``.
    """

    name = "reinforce"

    def __init__(self, iterations: int = 200, batch: int | None = None, lr: float = 0.01, sigma: float = 0.1,
                 mode: Mode = "released") -> None:
        check_range("reinforce iterations (--ascent.searcher.init_args.iterations)", iterations, 1,
                    hint="a budget of zero searches nothing")
        if batch is not None:
            check_range("reinforce batch (--ascent.searcher.init_args.batch)", batch, 2)
        check_range("reinforce lr", lr, 0, strict=True)
        check_range("reinforce sigma", sigma, 0, strict=True)
        check_choice("reinforce mode (--ascent.searcher.init_args.mode)", mode, Mode)
        self.iterations, self.batch, self.lr, self.sigma, self.mode = iterations, batch, lr, sigma, mode

    def search(self, x0: Tensor, score: Callable[[Tensor], Tensor], data: SearchData,
               candidate_ids: Tensor | None = None, num_candidates: int = 128, seed: int = 0) -> AscentResult:
        """Train one policy per block of ``num_candidates`` rows of ``x0`` and sample from it.

        Args:
            x0: ``(C, D)`` the starting designs (normalised): the 128 best visible designs of each
                block, from which the policy starts.
            score: ``(C, D) -> (C,)`` the predicted score, row ``i`` scored as candidate ``i``.
            data: the task's kind and, for discrete tasks, its encoding and decoding.
            candidate_ids: unused.
            num_candidates: samples handed back per block.
            seed: the run's seed.

        Returns:
            ``(C, D)`` the final samples (normalised features) and ``(iterations + 1, C)`` the mean
            predicted score of each update's samples, then of the final samples.
        """
        if data.discrete and (data.encode is None or data.decode is None or data.num_classes is None):
            raise SettingsError("reinforce on a discrete task needs its encoding (SearchData.encode/decode)")
        xs, trajectories, moves = [], [], []
        for b, start in enumerate(blocks(x0.shape[0], num_candidates, "reinforce")):
            gen = torch.Generator().manual_seed(seed * 1_000 + b)
            scored = block_scorer(score, x0, start, num_candidates)
            top = x0[start:start + num_candidates].detach()
            run = self._discrete if data.discrete else self._continuous
            x, traj, moved = run(top, scored, data, num_candidates, gen)
            xs.append(x)
            trajectories.append(traj.unsqueeze(1).expand(-1, num_candidates))
            moves.append(moved)
        return AscentResult(torch.cat(xs).to(x0), torch.cat(trajectories, dim=1).to(x0),
                            diagnostics=self._diagnostics(moves, num_candidates, data.discrete))

    def _diagnostics(self, moves: list[dict[str, float]], n: int, discrete: bool) -> dict[str, Any]:
        """Each block's policy change on its candidates' entries, and a flag when a policy did not move."""
        out: dict[str, Any] = {k: per_candidate([rounded(m[k]) for m in moves], n) for k in moves[0]}
        key = "policy_max_abs_prob_change" if discrete else "policy_max_abs_mean_change"
        change = max(m[key] for m in moves)
        flags = []
        if change < UNMOVED:
            what = "|Δp|" if discrete else "|Δ mean|"
            flag = f"reinforce: the policy did not move (max {what} {change:.1g} over {self.iterations} updates)"
            if discrete and self.mode == "released":
                flag += ("; released mode: design-baselines' broadcasting bug (since aaee3a3, 2021-06-01), the "
                         "samples follow the top designs' class frequencies")
            flags.append(flag)
        out["flags"] = flags
        return out

    def _train(self, params: list[Tensor], sample: Callable[[int], tuple[Tensor, Tensor]],
               score: Callable[[Tensor], Tensor], batch: int, joint: bool) -> list[float]:
        opt = torch.optim.Adam(params, lr=self.lr, eps=ADAM_EPS)
        means = []
        for _ in range(self.iterations):
            x, log_prob = sample(batch)
            with torch.no_grad():
                f = score(x).double()
            means.append(float(f.mean()))
            mode = "fixed" if joint else self.mode  # the broadcasting bug is the discrete policy's
            loss = reinforce_loss(log_prob, standardise(f).to(log_prob), mode)
            opt.zero_grad()
            loss.backward()
            opt.step()
        return means

    def _discrete(self, top: Tensor, score: Callable[[Tensor], Tensor], data: SearchData, n: int,
                  gen: torch.Generator) -> tuple[Tensor, Tensor, dict[str, float]]:
        designs = data.decode(top).long()  # (128, L)
        k = data.num_classes
        counts = torch.nn.functional.one_hot(designs, k).sum(0).double()  # (L, k)
        logits = (counts / counts.sum(-1, keepdim=True)).log().requires_grad_(True)  # log 0 = -inf: never drawn

        def sample(m: int) -> tuple[Tensor, Tensor]:
            probs = torch.softmax(logits.detach(), -1)
            draws = torch.multinomial(probs, m, replacement=True, generator=gen).T  # (m, L)
            log_prob = torch.log_softmax(logits, -1).gather(1, draws.T).T  # (m, L)
            return data.encode(draws).to(top), log_prob

        start = logits.detach().clone()
        means = self._train([logits], sample, score, self.batch or 256, joint=False)
        final, _ = sample(n)
        with torch.no_grad():
            means.append(float(score(final).double().mean()))
            finite = start.isfinite()
            moved = {"policy_max_abs_logit_change": float((logits - start)[finite].abs().max()),
                     "policy_max_abs_prob_change": float((logits.softmax(-1) - start.softmax(-1)).abs().max())}
        return final, torch.tensor(means), moved

    def _continuous(self, top: Tensor, score: Callable[[Tensor], Tensor], data: SearchData, n: int,
                    gen: torch.Generator) -> tuple[Tensor, Tensor, dict[str, float]]:
        mean = top.mean(0).double().clone().requires_grad_(True)
        start = mean.detach().clone()

        def sample(m: int) -> tuple[Tensor, Tensor]:
            noise = torch.randn((m, mean.shape[0]), generator=gen, dtype=mean.dtype)
            x = mean.detach() + self.sigma * noise
            log_prob = -(((x - mean) / self.sigma) ** 2).sum(-1, keepdim=True) / 2  # (m, 1), up to a constant
            return x.to(top), log_prob

        means = self._train([mean], sample, score, self.batch or 2048, joint=True)
        final, _ = sample(n)
        with torch.no_grad():
            means.append(float(score(final).double().mean()))
        return final, torch.tensor(means), {"policy_max_abs_mean_change": float((mean.detach() - start).abs().max())}
