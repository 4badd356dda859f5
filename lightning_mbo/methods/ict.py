"""ICT: importance-aware co-teaching of three proxies along the best design's path, then ascent on their mean.

Yuan, Chen, Liu, Neiswanger, Liu, "Importance-aware Co-teaching for Offline Model-based
Optimization", NeurIPS 2023; released code ``mila-iqia/Importance-aware-Co-teaching``. Three MLP
proxies are pre-trained as one stacked module (``grad.py``). Before design search, COPIES of them
are fine-tuned along 100 Adam steps of the best training design: every step, pseudo-labelled
neighbours, three co-teaching rounds (each proxy teaches once; its two peers exchange their
small-loss samples) and meta-learned sample weights (``ICT.py:59-233``; the equations in
:mod:`lightning_mbo.functional.ict`). The fine-tuned copies are then frozen and every
candidate climbs their mean (``ICT.py:454-498``).
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor

from lightning_mbo.functional.ict import FineTuning, MetaRows, Mode, draw_noise, meta_rows
from lightning_mbo.functional.ict_batched import FineTuned, finetune_batched
from lightning_mbo.functional.ict_higher import finetune_higher
from lightning_mbo.functional.tri_mentoring import predict_stacked
from lightning_mbo.methods.surrogate import LrSchedule, Surrogate
from lightning_mbo.nn import Activation, Init, member_module, member_params
from lightning_mbo.search import SearchData, SearchObjective, SearchSettings
from lightning_mbo.validation import SettingsError, check_choice, check_range

Backend = Literal["batched", "higher"]


class ICT(Surrogate):
    """ICT at the authors' released settings (``README.md:49``: α 1e-3, β 0.3, 8 co-teaching samples, ``full``).

    Pre-training (inherited from :class:`Surrogate`, defaults changed; ``grad.py:9-62``): three ReLU
    MLPs ``D -> 2048 -> 2048 -> 1`` with ``nn.Linear``'s init, MSE on z-scored y, Adam lr 0.1 with a
    per-epoch cosine decay to 0, batch 128, 200 epochs, each proxy its own seed and 90/10 split
    (set ``data.val_size: 0.1``), keeping each proxy's epoch with the best validation Pearson. The
    IGNITE constraint (``ignite:``) applies here, one λ per proxy.

    Fine-tuning (:meth:`search_objective`, before search): copies of each replicate's three
    proxies follow ``finetune_steps`` Adam(``finetune_lr``) steps of the best training design;
    every step ``neighbours`` pseudo-labelled points ``x + noise·ε``, three co-teaching rounds
    passing ``num_coteaching`` small-loss samples, weights learned by one virtual Adam(α) step and
    the MSE over ``reweight_mode``'s rows, one real Adam(α) step per student
    (:mod:`lightning_mbo.functional.ict`). The module's own proxies never change, so a search
    can be re-run; each replicate fine-tunes its own copies with its own noise.

    ``mode: released`` (default) keeps the released code's bugs: scalar neighbourhood noise (the
    neighbours lie on the line ``x + δ ε 1``), and weights ``(n,)`` broadcast against losses
    ``(n, 1)`` and ``(K, 1)``, so all of a student's weights move together by ``β/n`` (0.0375) up or
    down and the real step is Adam on the summed loss of ALL ``K`` neighbours: neither the
    co-teaching selection nor the weights reach the proxies, beyond a ``1 ± 0.0375`` scale that Adam
    all but ignores. ``mode: fixed``: per-coordinate noise, per-sample weights, and the real step on
    the selected samples with their weights. Results report the mode and the weights
    (:meth:`method_summary`). The released ``__main__`` re-runs everything for ``num_coteaching``
    128, 64, 32, 16 and 8 and its ``type=bool`` flags are always true (``ICT.py:582-606``): here one
    run, co-teaching and reweighting on, 8 samples (``README.md:49``).

    Not as released: every run pre-trains its own three proxies (the released runs share them, run
    ``s`` using proxies ``s, s-1, s-2`` mod 8, ``ICT.py:429-431``); small-loss ties go to the lower
    index (numpy's unstable sort there).

    Search (:meth:`search_defaults`): Adam on x, lr 0.1 for 100 steps on discrete tasks (1e-3 on
    continuous ones, ``ICT.py:444-447``), maximising the mean of the frozen fine-tuned proxies.

    Args:
        input_dim: flattened design size (linked from the datamodule).
        members: proxies per replicate (three, as released).
        activation: hidden activation (``relu``, as released).
        init: weight initialisation (``torch``: ``nn.Linear``'s default, as the released code).
        lr: pre-training learning rate (0.1, as released).
        lr_schedule: ``cosine`` (per epoch, to 0, as released) or ``constant``.
        select_best: keep each proxy's best-validation-Pearson epoch (as released).
        fine_tune: fine-tune before search; ``false`` is plain ascent on the mean of the three
            pre-trained proxies (the released ``grad.py`` ensemble baseline).
        mode: ``released`` (the released code's broadcasting and scalar noise) or ``fixed``.
        finetune_steps: path steps ``T`` (``Tmax``).
        finetune_lr: Adam's lr on the path design (``ft_lr``); ``null``: 0.1 on discrete tasks,
            1e-3 on continuous ones, as the released code.
        neighbours: pseudo-labelled neighbours ``K`` per step.
        noise: neighbourhood scale δ (``noise_coefficient``).
        num_coteaching: small-loss samples each student hands its peer (``num_coteaching``; equal to
            ``neighbours``: no selection).
        alpha: the proxies' Adam lr in fine-tuning, virtual and real steps.
        beta: the weights' step size β.
        clip: bound on each L1-normalised weight gradient (``clamp_max``).
        reweighting: learn the sample weights; ``false`` keeps them at 1 (ablation).
        reweight_mode: rows of the meta objective's MSE: ``full`` (every training row, what the
            paper reports), ``half`` (the better half) or ``top128``.
        backend: ``batched`` (all replicates at once, torch.func) or ``higher`` (one triple at a
            time as the released code, through ``higher``; slow, the reference).
        finetune_seed: seed of the neighbourhood noise (``null``: the run's seed; replicate ``r`` draws from
            it plus ``r``, as a plain run of seed ``s + r``).
        **kwargs: :class:`Surrogate`'s other settings (``hidden``, ``weight_decay``, ``ignite``,
            ``replicates``: each replicate its own proxies, search and results row; ``adam_eps``);
            the proxies have the MSE head, search climbs their mean, and the designs are continuous
            features.
    """

    per_member_split = True

    #: Rows per pass of the meta objective's gradient (an engineering knob: results agree to rounding).
    val_chunk = 8192

    #: The released design search on discrete tasks (TFBind8, TFBind10): Adam, lr 0.1, 100 steps.
    SEARCH_DISCRETE = SearchSettings(steps=100, lr=0.1, optimizer="adam")
    #: ... and on continuous tasks: Adam, lr 1e-3, 100 steps.
    SEARCH_CONTINUOUS = SearchSettings(steps=100, lr=1e-3, optimizer="adam")

    def __init__(
        self,
        input_dim: int,
        members: int = 3,
        activation: Activation = "relu",
        init: Init = "torch",
        lr: float = 0.1,
        lr_schedule: LrSchedule = "cosine",
        select_best: bool = True,
        fine_tune: bool = True,
        mode: Mode = "released",
        finetune_steps: int = 100,
        finetune_lr: float | None = None,
        neighbours: int = 128,
        noise: float = 0.1,
        num_coteaching: int = 8,
        alpha: float = 1e-3,
        beta: float = 0.3,
        clip: float = 0.2,
        reweighting: bool = True,
        reweight_mode: MetaRows = "full",
        backend: Backend = "batched",
        finetune_seed: int | None = None,
        **kwargs: Any,
    ) -> None:
        if members != 3:
            raise SettingsError(f"members (--model.init_args.members) must be 3 for ICT: each co-teaching round has "
                                f"one teacher and two students, got {members}")
        super().__init__(input_dim, members=members, activation=activation, init=init, head="mse", lr=lr,
                         lr_schedule=lr_schedule, aggregate="mean", select_best=select_best, embedding=None,
                         **kwargs)
        if finetune_lr is not None:
            check_range("finetune_lr (--model.init_args.finetune_lr)", finetune_lr, 0, strict=True)
        self.finetuning(finetune_lr or 0.1)  # validates the fine-tuning settings
        check_choice("reweight_mode (--model.init_args.reweight_mode)", reweight_mode, MetaRows)
        check_choice("backend (--model.init_args.backend)", backend, Backend)
        #: Per replicate, statistics of its last fine-tuning (filled by :meth:`search_objective`,
        #: reported by :meth:`method_summary`).
        self.finetune_stats: dict[int, dict[str, float]] = {}

    def finetuning(self, x_lr: float) -> FineTuning:
        """The fine-tuning settings, with path step size ``x_lr``."""
        hp = self.hparams
        return FineTuning(steps=hp.finetune_steps, x_lr=x_lr, neighbours=hp.neighbours, noise=hp.noise,
                          select=hp.num_coteaching, alpha=hp.alpha, beta=hp.beta, clip=hp.clip,
                          reweighting=hp.reweighting, mode=hp.mode)

    def method_name(self) -> str:
        if not self.hparams.fine_tune:
            # ICT's three proxies without the co-teaching fine-tuning; distinct from Tri-mentoring's
            # mean_of_3_proxies (another class, trained by its own settings).
            name = "ict_no_fine_tune"
        else:
            name = "ict" + ("_fixed" if self.hparams.mode == "fixed" else "")
            name += "" if self.hparams.reweighting else "_no_reweighting"
        return name + ("+ignite" if self.constraint is not None else "")

    def method_summary(self, replicate: int = 0) -> dict[str, Any]:
        """IGNITE's state (if on), the mode and replicate ``replicate``'s last fine-tuning statistics."""
        out = super().method_summary(replicate)
        if self.hparams.fine_tune:
            out["ict"] = {"mode": self.hparams.mode, **self.finetune_stats.get(replicate, {})}
        return out

    def search_defaults(self, data: SearchData) -> SearchSettings:
        return self.SEARCH_DISCRETE if data.discrete else self.SEARCH_CONTINUOUS

    # --- fine-tuning, then search on the frozen mean ------------------------------------------
    def search_objective(self, x0: Tensor, data: SearchData, candidate_ids: Tensor, num_total: int) -> SearchObjective:
        """The mean of the candidate's replicate's fine-tuned proxies (no per-step hook).

        The fine-tuning runs here, once per replicate among this process's candidates, on copies of
        the trained proxies; the same seed gives the same copies however candidates are split.
        """
        replicate = self.replicate_of(candidate_ids, num_total)
        if not self.hparams.fine_tune:
            return SearchObjective(lambda x: self.predict_designs(x, replicate))
        groups = replicate.unique()
        tuned = self.finetune_copies(groups, data)
        position = torch.searchsorted(groups, replicate)
        act = self.hparams.activation

        def objective(x: Tensor) -> Tensor:
            pred = predict_stacked(tuned.params, x.unsqueeze(0).expand(len(groups), -1, -1), act).mean(1)
            return pred.gather(0, position.view(1, -1)).squeeze(0)

        return SearchObjective(objective)

    def finetune_copies(self, groups: Tensor, data: SearchData) -> FineTuned:
        """Fine-tune copies of the proxies of replicates ``groups`` (sorted, ``(G,)``); the module is unchanged."""
        hp = self.hparams
        settings = self.finetuning(hp.finetune_lr or (0.1 if data.discrete else 1e-3))
        x, y = data.x.to(self.device), data.y.to(self.device)
        start = x[y.argmax()].expand(len(groups), -1)  # the best training design (ICT.py:36-39)
        rows = meta_rows(y, hp.reweight_mode)
        x_val, y_val = x[rows], y[rows]
        seed = torch.initial_seed() if hp.finetune_seed is None else hp.finetune_seed
        # Replicate r's noise from its own seed (seed + r), as a plain run of that seed draws it.
        noise = torch.stack([
            draw_noise((settings.steps, settings.neighbours), x.shape[1], settings.mode,
                       torch.Generator().manual_seed((seed + int(r)) * 1_000_003))
            for r in groups.tolist()
        ]).to(x)
        p = hp.members
        params = {n: v.detach().view(self.replicates, p, *v.shape[1:])[groups.to(v.device)].clone()
                  for n, v in self.net.named_parameters()}
        if hp.backend == "batched":
            tuned = finetune_batched(params, start, x_val, y_val, noise, settings, hp.activation, self.val_chunk)
        else:
            tuned = self._fine_tune_higher(params, start, x_val, y_val, noise, settings)
        for i, r in enumerate(groups.tolist()):
            w = tuned.weights[:, :, i]
            with torch.no_grad():
                path = predict_stacked({n: t[i:i + 1] for n, t in tuned.params.items()}, tuned.x[i].view(1, 1, -1),
                                       hp.activation).mean()
            self.finetune_stats[r] = {
                "weight_mean": float(w.mean()) if w.numel() else 1.0,
                "weight_min": float(w.min()) if w.numel() else 1.0,
                "weight_max": float(w.max()) if w.numel() else 1.0,
                "weight_abs_dev": float((w - 1).abs().mean()) if w.numel() else 0.0,
                "path_predicted_final": float(path),
            }
        return tuned

    def _fine_tune_higher(self, params: dict[str, Tensor], start: Tensor, x_val: Tensor, y_val: Tensor,
                          noise: Tensor, settings: FineTuning) -> FineTuned:
        """The reference backend: each replicate's triple as ``nn.Module`` proxies, one at a time."""
        act, out, xs, weights = self.hparams.activation, {n: t.clone() for n, t in params.items()}, [], []
        for i in range(start.shape[0]):
            proxies = [member_module({n: t[i, p] for n, t in params.items()}, act) for p in range(3)]
            w, x = finetune_higher(proxies, start[i], x_val, y_val, noise[i], settings)
            for p, proxy in enumerate(proxies):
                for n, t in member_params(proxy).items():
                    out[n][i, p] = t
            weights.append(w)
            xs.append(x)
        return FineTuned(out, torch.stack(xs), torch.stack(weights, 2))
