"""Tri-mentoring: parallel proxies that mentor each other during design ascent.

Chen, Beckham, Liu, Liu, Pal, "Parallel-mentoring for Offline Model-based Optimization",
NeurIPS 2023 (arXiv 2309.11592). Three (in general ``P``) MLP proxies are pre-trained as one
stacked module. During ascent every candidate gets its OWN copies of the proxies; before each
Adam step on the candidate, the copies are mentored: pairwise labels on ``K`` neighbourhood
points, majority voting, and for each proxy one SGD step of lr β on the pairs where it
disagrees with the consensus, with soft labels refined by one bi-level step.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import torch
from torch import Tensor

from lightning_mbo.functional.outer_dot import OuterMSE, OuterPrecision
from lightning_mbo.functional.tri_mentoring import (
    disagreement_mask,
    majority_vote,
    mentor_batched,
    neighbourhood,
    pair_indices,
    pairwise_labels,
    predict_stacked,
    summed_rank_labels,
)
from lightning_mbo.functional.tri_mentoring_higher import mentor_proxy_higher
from lightning_mbo.methods.surrogate import LrSchedule, Surrogate
from lightning_mbo.nn import Activation, Init, member_module
from lightning_mbo.search import SearchData, SearchObjective, SearchSettings
from lightning_mbo.validation import SettingsError, check_choice, check_range

Backend = Literal["batched", "higher"]


class TriMentoring(Surrogate):
    """Tri-mentoring (``P`` proxies, 3 by default) at the authors' released settings.

    Pre-training (inherited from :class:`Surrogate`, defaults changed): three ReLU MLPs
    ``D -> 2048 -> 2048 -> 1``, MSE on z-scored y, Adam lr 0.1 with a per-epoch cosine decay to
    0, each proxy its own seed, data order and 90/10 split (set ``data.val_size: 0.1``), keeping
    each proxy's epoch with the best validation Pearson correlation. The released lr 0.1 makes
    the proxies peak early (validation Pearson about 0.34-0.41 on TFBind8) and then collapse to
    a constant; ``lr`` is a setting and ``members/val_pearson_m*`` shows the effect.

    Search (:attr:`SEARCH_DISCRETE`, :attr:`SEARCH_CONTINUOUS`): Adam on x maximising the mean
    of the candidate's own mentored proxies.

    Args:
        input_dim: flattened design size (linked from the datamodule).
        members: proxies per replicate (three, as released).
        activation: hidden activation (``relu``, as released).
        init: weight initialisation (``torch``: ``nn.Linear``'s default, as the released code).
        lr: pre-training learning rate (0.1, as released).
        lr_schedule: ``cosine`` (per epoch, to 0, as released) or ``constant``.
        select_best: keep each proxy's best-validation-Pearson epoch (as released).
        mentoring: mentor the proxies during ascent; ``false`` is plain mean-ensemble ascent.
        voting: consensus by majority vote; ``false`` ranks by the summed prediction (ablation).
        soft_labels: refine labels by the bi-level step; ``false`` uses hard labels (ablation).
        neighbours: neighbourhood size ``K``.
        delta: neighbourhood scale δ (in normalised design space).
        beta: inner and mentoring SGD learning rate β.
        lambda_s: soft-label learning rate λ_s.
        backend: ``batched`` (all candidates at once, torch.func) or ``higher`` (one candidate and
            proxy at a time, the released algorithm; slow, the reference).
        outer_precision: arithmetic of the outer MSE's large matrix products in the batched
            backend: ``float32`` (the released code's), ``tf32`` (TensorFloat-32 on a GPU's matrix
            units; no effect on CPU) or ``bfloat16`` (operands rounded, float32 accumulation).
            Only the soft-label gradient is affected; see
            :func:`lightning_mbo.functional.outer_dot.outer_dot`.
        shared_proxies: NOT the released behaviour: one set of proxies (per replicate) is mentored
            for all candidates together, on the union of their neighbourhood pairs (pairs within
            each candidate's neighbourhood), so the outer MSE is paid once per step instead of once
            per candidate. Under DDP each process mentors its own set on its own candidates.
        mentoring_seed: seed of the neighbourhood noise (``null``: the run's seed; replicate ``r`` draws from
            it plus ``r``, as a plain run of seed ``s + r``).
        **kwargs: :class:`Surrogate`'s other settings (``hidden``, ``weight_decay``, ``ignite``,
            ``replicates``: each replicate its own proxies, search and results row; ``adam_eps``);
            the proxies have the MSE head, search climbs their mean, and the designs are continuous
            features.
    """

    per_member_split = True

    #: Training rows per chunk of the batched outer-MSE pass (an engineering knob: results agree
    #: to rounding for any value). ``None``: sized to a memory budget by
    #: :func:`lightning_mbo.functional.outer_dot.auto_chunk`; set it on the instance to fix it.
    data_chunk: int | None = None

    #: The released code's design search on discrete tasks (TFBind8, TFBind10): Adam, lr 0.1, 100 steps.
    SEARCH_DISCRETE = SearchSettings(steps=100, lr=0.1, optimizer="adam")
    #: ... and on continuous tasks (Superconductor, Ant, D'Kitty): Adam, lr 1e-3, 200 steps.
    SEARCH_CONTINUOUS = SearchSettings(steps=200, lr=1e-3, optimizer="adam")

    def __init__(
        self,
        input_dim: int,
        members: int = 3,
        activation: Activation = "relu",
        init: Init = "torch",
        lr: float = 0.1,
        lr_schedule: LrSchedule = "cosine",
        select_best: bool = True,
        mentoring: bool = True,
        voting: bool = True,
        soft_labels: bool = True,
        neighbours: int = 10,
        delta: float = 0.1,
        beta: float = 1e-3,
        lambda_s: float = 0.1,
        backend: Backend = "batched",
        outer_precision: OuterPrecision = "float32",
        shared_proxies: bool = False,
        mentoring_seed: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(input_dim, members=members, activation=activation, init=init, head="mse", lr=lr,
                         lr_schedule=lr_schedule, aggregate="mean", select_best=select_best, embedding=None,
                         **kwargs)
        check_range("neighbours (K, --model.init_args.neighbours)", neighbours, 2, hint="pairs need two points")
        check_range("delta (--model.init_args.delta)", delta, 0)
        check_range("beta (--model.init_args.beta)", beta, 0, strict=True)
        check_range("lambda_s (--model.init_args.lambda_s)", lambda_s, 0)
        check_choice("backend", backend, Backend)
        check_choice("outer_precision", outer_precision, OuterPrecision)
        if outer_precision != "float32" and backend != "batched":
            raise SettingsError("outer_precision applies to the batched backend only; the higher backend is float32")

    def method_name(self) -> str:
        name = "tri_mentoring" if self.hparams.mentoring else f"mean_of_{self.hparams.members}_proxies"
        if self.hparams.mentoring and self.hparams.shared_proxies:
            name += "_shared"
        return name + ("+ignite" if self.constraint is not None else "")

    def search_defaults(self, data: SearchData) -> SearchSettings:
        return self.SEARCH_DISCRETE if data.discrete else self.SEARCH_CONTINUOUS

    # --- search with mentoring -------------------------------------------------------------
    def search_objective(self, x0: Tensor, data: SearchData, candidate_ids: Tensor, num_total: int) -> SearchObjective:
        """The mean of each candidate's own proxy copies, and the hook that mentors them before
        every step (none with ``mentoring: false``). The hook reports ``disagreement`` (mean
        pairs a proxy is mentored on) and ``soft_label_drift`` (mean |s - y^V| on them)."""
        replicate = self.replicate_of(candidate_ids, num_total)
        if not self.hparams.mentoring:
            return SearchObjective(lambda x: self.predict_designs(x, replicate))
        hp = self.hparams
        outer = OuterMSE(data.x.to(self.device), data.y.to(self.device), self.data_chunk, hp.outer_precision)
        seed = self.hparams.mentoring_seed
        base = torch.initial_seed() if seed is None else seed
        # Replicate r's neighbourhoods from a generator of its own seed (base + r), as a plain run of it draws them.
        gens = [torch.Generator().manual_seed(base + r) for r in range(self.replicates)]
        per = num_total // self.replicates
        ids = candidate_ids.cpu()
        k, d = self.hparams.neighbours, x0.shape[1]

        def neighbourhoods(x: Tensor) -> Tensor:
            # One draw for all candidates of all processes, so results do not depend on the split.
            noise = torch.cat([torch.randn((per, k, d), generator=g) for g in gens])
            return neighbourhood(x, k, self.hparams.delta, noise=noise[ids])

        if self.hparams.shared_proxies:
            return self._shared_search(replicate, outer, neighbourhoods)
        # Each candidate's own copy of its replicate's P proxies: (C, P, ...).
        proxies = self._proxy_copies(replicate)
        if self.hparams.backend == "batched":
            return self._batched_search(proxies, outer, neighbourhoods)
        return self._higher_search(proxies, outer, neighbourhoods)

    def _proxy_copies(self, replicate: Tensor) -> dict[str, Tensor]:
        """Copies of the trained proxies of the given replicates: ``(len(replicate), P, ...)`` each."""
        p = self.hparams.members
        return {
            n: v.detach().view(self.replicates, p, *v.shape[1:])[replicate.to(v.device)].clone()
            for n, v in self.net.named_parameters()
        }

    def _consensus(self, pred: Tensor) -> tuple[Tensor, Tensor]:
        """Consensus labels ``(..., n_pairs)`` and disagreement masks ``(..., P, n_pairs)`` of
        predictions ``(..., P, K)``."""
        labels = pairwise_labels(pred)
        consensus = majority_vote(labels) if self.hparams.voting else summed_rank_labels(pred)
        return consensus, disagreement_mask(labels, consensus)

    @staticmethod
    def _stats(mask: Tensor, consensus: Tensor, soft: Tensor) -> dict[str, float]:
        """One step's ``disagreement`` and ``soft_label_drift`` (see :meth:`search_objective`)."""
        drift = ((soft - consensus.unsqueeze(-2).to(soft)).abs() * mask).sum() / mask.sum().clamp(min=1)
        return {"disagreement": float(mask.sum(-1).float().mean()), "soft_label_drift": float(drift)}

    @torch.no_grad()
    def _mentor_step(self, state: dict[str, Tensor], x_nb: Tensor, outer: OuterMSE,
                     pair_filter: Tensor | None = None) -> dict[str, float]:
        """One mentoring step of the stacked proxy copies ``state`` ``(G, P, ...)`` on the
        neighbourhoods ``x_nb`` ``(G, K, D)``; ``pair_filter`` keeps only some pairs. Returns the
        step's statistics."""
        consensus, mask = self._consensus(predict_stacked(state, x_nb, self.hparams.activation))
        if pair_filter is not None:
            mask = mask & pair_filter
        new, soft = mentor_batched(
            state, x_nb, consensus, mask, outer, activation=self.hparams.activation,
            beta=self.hparams.beta, lambda_s=self.hparams.lambda_s, soft_labels=self.hparams.soft_labels,
        )
        state.update(new)
        return self._stats(mask, consensus, soft)

    def _batched_search(self, state: dict[str, Tensor], outer: OuterMSE,
                        neighbourhoods: Callable[[Tensor], Tensor]) -> SearchObjective:
        def before_step(x: Tensor, t: int) -> dict[str, float]:
            return self._mentor_step(state, neighbourhoods(x), outer)

        def objective(x: Tensor) -> Tensor:
            return predict_stacked(state, x.unsqueeze(1), self.hparams.activation)[..., 0].mean(-1)

        return SearchObjective(objective, before_step)

    def _shared_search(self, replicate: Tensor, outer: OuterMSE,
                       neighbourhoods: Callable[[Tensor], Tensor]) -> SearchObjective:
        """One proxy set per replicate, mentored on the pairs of all its candidates at once."""
        act, k = self.hparams.activation, self.hparams.neighbours
        groups, counts = replicate.unique_consecutive(return_counts=True)
        if (counts != counts[0]).any():
            raise ValueError("shared_proxies needs the same number of candidates of every replicate in a process")
        g, n = len(groups), int(counts[0])
        state = self._proxy_copies(groups)
        # Pairs of the pooled neighbourhood (n candidates x K points) that lie within one candidate.
        i, j = pair_indices(n * k, self.device)
        within = (i // k) == (j // k)

        def before_step(x: Tensor, t: int) -> dict[str, float]:
            return self._mentor_step(state, neighbourhoods(x).reshape(g, n * k, -1), outer, within)

        def objective(x: Tensor) -> Tensor:
            return predict_stacked(state, x.reshape(g, n, -1), act).mean(1).reshape(-1)

        return SearchObjective(objective, before_step)

    def _higher_search(self, state: dict[str, Tensor], outer: OuterMSE,
                       neighbourhoods: Callable[[Tensor], Tensor]) -> SearchObjective:
        act = self.hparams.activation
        c, n_proxies = next(iter(state.values())).shape[:2]
        proxies = [
            [member_module({n: v[i, p] for n, v in state.items()}, act) for p in range(n_proxies)]
            for i in range(c)
        ]

        def before_step(x: Tensor, t: int) -> dict[str, float]:
            x_nb = neighbourhoods(x)
            masks, consensuses, softs = [], [], []
            for i in range(c):
                with torch.no_grad():
                    pred = torch.stack([m(x_nb[i])[..., 0] for m in proxies[i]])
                consensus, mask = self._consensus(pred)
                soft = torch.stack([
                    mentor_proxy_higher(m, x_nb[i], consensus, mask[p], outer.x, outer.y, beta=self.hparams.beta,
                                        lambda_s=self.hparams.lambda_s, soft_labels=self.hparams.soft_labels)
                    for p, m in enumerate(proxies[i])
                ])
                masks.append(mask)
                consensuses.append(consensus)
                softs.append(soft)
            return self._stats(torch.stack(masks), torch.stack(consensuses), torch.stack(softs))

        def objective(x: Tensor) -> Tensor:
            return torch.stack([
                torch.stack([m(x[i:i + 1])[0, 0] for m in proxies[i]]).mean() for i in range(c)
            ])

        return SearchObjective(objective, before_step)
