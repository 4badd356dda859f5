"""RoMA: robust pre-training, then a copy of the model adapted before every design step.

Yu, Ahn, Song, Shin, "RoMA: Robust Model Adaptation for Offline Model-based Optimization",
NeurIPS 2021 (arXiv 2110.14188), as the authors' code runs it (github.com/sihyun-yu/RoMA, commit
08b1ab5: ``design_baselines/safeweight/{trainers,nets,__init__,experiments}.py``). The equations
are in :mod:`lightning_mbo.functional.roma`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from torch.func import functional_call
from torch.nn import functional as F

from lightning_mbo.functional.roma import (
    adaptation_objective,
    clip_slices,
    normalised_step,
    slice_norms,
    trust_region_score,
)
from lightning_mbo.methods.optim import adam
from lightning_mbo.methods.surrogate import Surrogate
from lightning_mbo.nn import Activation
from lightning_mbo.search import SearchData, SearchObjective, SearchSettings
from lightning_mbo.validation import check_range

#: Added to ``‖g‖`` in the adaptation step (released ``trainers.py:158``; pre-training adds nothing).
ADAPT_EPS = 1e-6


class RoMA(Surrogate):
    """RoMA (one Gaussian model per replicate) at the released settings.

    Pre-training (:meth:`training_step`, released ``train_step``): every batch gets input noise
    ``N(0, noise_std²)``; ``perturb_steps`` steps then raise the NLL from the weights ``w₀``,
    ``w ← w − (inner_lr/perturb_steps)(‖w₀‖/‖g‖)g`` with ``g`` the log-likelihood's gradient, on
    every tensor whose released (Keras) shape has a first dimension > 1 (:meth:`adapted_parameters`),
    per network; the NLL gradient at the perturbed weights, clipped to norm ``grad_clip`` per tensor
    and network, takes an Adam step (lr ``lr``, Keras' epsilon 1e-7), and the perturbation
    ``w − w₀`` is removed. With IGNITE (``ignite:``; not released with RoMA) the constraint's
    penalty, one λ per network, is taken at the perturbed weights on the same noisy batch, added to
    the NLL gradient before the clip. Validation is logged only (no epoch selection), as released.

    Search (:meth:`search_objective`, released ``init_step``/``fix_step``/``update_step``): before
    every design step a copy ``w̃`` of the model takes ``adapt_steps`` steps
    ``w̃ ← w̃ − (inner_lr/adapt_steps)(‖w‖/(‖g‖ + 1e-6))g`` (``w`` the model's weights) lowering
    ``mean‖∇_x μ_w̃(x)‖ + alpha·mean NLL(y | x)`` over the current designs, whose labels ``y`` start
    as their visible scores and are then ``μ_w̃(x)`` of the previous step's copy at the current
    designs (the released ``sol_y``, set after each design step); the design step is Adam on
    ``μ_w̃(x) − (μ_w̃(x) − μ_w(x₀))²/(2 region)``. The module's own weights never change in search.
    With ``replicates > 1`` each replicate's copy adapts on its own candidates only. Under DDP each
    process adapts its copies on its own candidates (the means run over those), so a split run is
    not bit-equal to a one-process run.

    Defaults are the released AntMorphology settings (``experiments.py:127-155``; DKitty trains 50
    epochs, Superconductor uses ``inner_lr`` 5e-4): ``Flatten → 64 → softplus → 64 → softplus → 2``
    with a Gaussian head (``nets.py:7-37``; Keras' Glorot init, log-std bounds at log 0.2 / log 0.1),
    batch 128, 200 validation rows, 100 epochs (``trainer.max_epochs``), 500 design steps of
    Adam(3e-3) from the top-128. The released code has no TFBind config (its discrete branch takes
    the log of negative numbers, ``__init__.py:50-58``): the TFBind configs use design-bench logits,
    z-scored, with these settings, UNVERIFIED.

    Args:
        input_dim: flattened design size (linked from the datamodule).
        hidden: hidden widths.
        activation: hidden activation (``softplus``: the input gradient is smooth in the weights).
        lr: pre-training Adam learning rate (released ``model_lr``).
        adam_eps: Adam's epsilon (Keras' 1e-7, as the released TF2 code).
        noise_std: std of the Gaussian input noise of pre-training (released ``continuous_noise_std``).
        perturb_steps: NLL-raising weight steps per batch (released ``steps_per_update``; 0: none).
        inner_lr: total step budget per unit weight norm of the perturbation and of the adaptation
            (released ``inner_lr``).
        grad_clip: norm each tensor's pre-training gradient is clipped to, per network (> 0).
        adapt_steps: adaptation steps before each design step (released ``5 * steps_per_update``; 0:
            ascend the unadapted model under the trust region).
        alpha: weight of the label NLL in the adaptation objective (released ``alpha``).
        region: trust-region size; the penalty's weight is ``1/(2 region)`` (released ``region``).
        **kwargs: :class:`Surrogate`'s other settings (``init``, Keras' ``glorot`` by default,
            ``ignite``, ``replicates``); RoMA fixes one network per replicate with the Gaussian
            head, a constant learning rate without weight decay, the last epoch's weights and
            continuous features.
    """

    #: The released search: 500 Adam(3e-3) steps on the designs (``updates``, ``sol_x_lr``).
    SEARCH = SearchSettings(steps=500, lr=3e-3, optimizer="adam")

    def __init__(
        self,
        input_dim: int,
        hidden: Sequence[int] = (64, 64),
        activation: Activation = "softplus",
        lr: float = 1e-3,
        adam_eps: float = 1e-7,
        noise_std: float = 0.2,
        perturb_steps: int = 20,
        inner_lr: float = 5e-3,
        grad_clip: float = 1.0,
        adapt_steps: int = 100,
        alpha: float = 1.0,
        region: float = 4.0,
        **kwargs: Any,
    ) -> None:
        check_range("noise_std (--model.init_args.noise_std)", noise_std, 0)
        check_range("perturb_steps (--model.init_args.perturb_steps)", perturb_steps, 0,
                    hint="0 trains without weight perturbation")
        check_range("inner_lr (--model.init_args.inner_lr)", inner_lr, 0, hint="a negative step flips both rules")
        check_range("grad_clip (--model.init_args.grad_clip)", grad_clip, 0, strict=True)
        check_range("adapt_steps (--model.init_args.adapt_steps)", adapt_steps, 0, hint="0 skips the adaptation")
        check_range("alpha (--model.init_args.alpha)", alpha, 0)
        check_range("region (--model.init_args.region)", region, 0, strict=True,
                    hint="the trust-region penalty is (μ - μ0)² / (2 region)")
        super().__init__(input_dim, members=1, hidden=hidden, activation=activation, head="gaussian", lr=lr,
                         adam_eps=adam_eps, weight_decay=0.0, lr_schedule="constant", aggregate="mean",
                         select_best=False, embedding=None, **kwargs)

    # --- one network per replicate -----------------------------------------------------------
    @property
    def num_members(self) -> int:
        """Stacked networks: one per replicate."""
        return self.replicates

    def adapted_parameters(self) -> list[tuple[str, Tensor]]:
        """The tensors the released rules perturb and adapt: those whose Keras shape has a first
        dimension > 1 (released ``tf.shape(grad)[0] > 1``, ``trainers.py:80,157``).

        Per network, a Keras kernel is ``(in, out)`` (here ``(M, in, out)``) and a bias ``(out,)``
        (here ``(M, 1, out)``), so a kernel counts when ``in > 1`` and a bias when ``out > 1``; the
        log-std bounds are ``(1, 1)`` there and are never perturbed or adapted.
        """
        out = []
        for i, layer in enumerate(self.net.layers):
            if layer.weight.shape[1] > 1:
                out.append((f"net.layers.{i}.weight", layer.weight))
            if layer.bias.shape[2] > 1:
                out.append((f"net.layers.{i}.bias", layer.bias))
        return out

    # --- pre-training -------------------------------------------------------------------------
    def configure_optimizers(self) -> Any:
        # Keras' Adam (epsilon 1e-7), as the released TF2 code.
        return adam(self.parameters(), lr=self.hparams.lr, eps=self.adam_eps)

    def noisy(self, x: Tensor, rows: int | None = None) -> Tensor:
        """The batch with fresh Gaussian noise (released ``cont_noise``), each replicate's from its own seed
        and the step (:meth:`~lightning_mbo.methods.replicates.SeedReplicates.step_normals`)."""
        return x + self.hparams.noise_std * self.step_normals(x, rows, self.global_step)

    def training_step(self, batch: tuple[Tensor, ...], batch_idx: int) -> None:
        x, y, rows, weights = self._unpack(batch)
        x = self.noisy(x, rows)
        hp, opt = self.hparams, self.optimizers()
        opt.zero_grad()
        perturbed = [p for _, p in self.adapted_parameters()]
        anchors = [p.detach().clone() for p in perturbed]
        anchor_norms = slice_norms(anchors)
        reduce = self._reduce()
        clean = None
        for _ in range(hp.perturb_steps):
            nll = self.member_losses(*self(x), y, rows, weights)
            clean = nll.detach() if clean is None else clean
            # Descend the log-likelihood (raise the NLL); under DDP on the global batch's gradient,
            # so every process perturbs alike.
            grads = list(torch.autograd.grad(-nll.sum(), perturbed))
            if reduce is not None:
                grads = reduce(grads)
            with torch.no_grad():
                for p, new in zip(perturbed, normalised_step(perturbed, anchor_norms, grads,
                                                             hp.inner_lr / hp.perturb_steps), strict=True):
                    p.copy_(new)
        mean, logstd = self(x)
        losses = self.member_losses(mean, logstd, y, rows, weights)
        writes = self._writes_logs()
        logs = self._member_logs("train/loss", losses.detach()) if writes else {}
        if writes:
            logs.update(self._member_logs("train/nll_unperturbed", losses.detach() if clean is None else clean))
        params = [p for p in self.parameters() if p.requires_grad]
        if self.constraint is None:
            self.manual_backward(losses.sum())
        else:
            # IGNITE at the perturbed weights, h over the same noisy batch, with the outer gradient.
            norms = self.constraint.backward(
                losses.sum(), self._batch_mean(mean, rows), lambda: self._batch_mean(self(x)[0], rows), params,
                self.manual_backward, reduce,
            )
            if writes:
                logs["train/lambda"] = self.constraint.lmbda.mean().clone()
            violation = self.constraint.update_lambda(norms)
            if writes:
                logs.update(self._member_logs("train/lambda", self.constraint.lmbda.clone(), mean=False))
                logs.update({"train/grad_norm": norms.mean(), "train/violation": violation.mean()})
        with torch.no_grad():
            with_grad = [p for p in params if p.grad is not None]
            for p, g in zip(with_grad, clip_slices([p.grad for p in with_grad], hp.grad_clip), strict=True):
                p.grad.copy_(g)
            perturbation = [p - a for p, a in zip(perturbed, anchors, strict=True)]
        opt.step()
        with torch.no_grad():
            torch._foreach_sub_(perturbed, perturbation)
        if writes:
            self.log_dict(logs, batch_size=y.shape[-1])

    # --- design search --------------------------------------------------------------------------
    def predict_designs(self, x: Tensor, replicate: Tensor | None = None) -> Tensor:
        """The model's predicted mean ``(N,)`` of designs ``(N, D)``, each by its replicate's network."""
        mean, _ = self(x)  # (replicates, N)
        if replicate is None:
            if self.replicates > 1:
                raise ValueError("with several replicates, say which replicate scores each design")
            return mean[0]
        return mean.gather(0, replicate.view(1, -1)).squeeze(0)

    def search_defaults(self, data: SearchData) -> SearchSettings:
        return self.SEARCH

    def search_objective(self, x0: Tensor, data: SearchData, candidate_ids: Tensor, num_total: int) -> SearchObjective:
        """The trust-region score of each candidate under its replicate's adapted copy, and the
        hook that adapts the copies before every step. The hook reports ``adapt_loss_start`` (the
        objective of the unadapted copy) and ``adapt_loss_end`` (after the adaptation), means over
        the networks.

        Args:
            x0: ``(C, D)`` this process's starting designs: the top designs by visible score.
            data: the visible designs and scores (labels the starting designs).
            candidate_ids: ``(C,)`` the candidates' indices among all ``num_total`` (replicate blocks).
            num_total: candidates over all processes.
        """
        replicate = self.replicate_of(candidate_ids, num_total)
        search = _AdaptedSearch(self, x0, self._starting_labels(x0, data, candidate_ids, num_total), replicate)
        return SearchObjective(search.score, search.before_step)

    def _starting_labels(self, x0: Tensor, data: SearchData, candidate_ids: Tensor, num_total: int) -> Tensor:
        """The visible scores of the starting designs (the released ``sol_y`` at the first step):
        candidate ``i`` of each replicate block is the ``i``-th best visible design."""
        per = num_total // self.replicates
        order = torch.sort(data.y, descending=True, stable=True).indices[:per]
        rows = order[(candidate_ids.cpu() % per).to(order.device)]
        if len(order) < per or not torch.allclose(data.x[rows].to(x0), x0, rtol=1e-5, atol=1e-6):
            raise ValueError("RoMA labels its starting designs with their visible scores: x0 must be the top "
                             f"{per} visible designs, best first, in each of the {self.replicates} replicate blocks")
        return data.y[rows].to(x0)

    def method_name(self) -> str:
        return "roma" + ("+ignite" if self.constraint is not None else "")

    def method_summary(self, replicate: int = 0) -> dict[str, Any]:
        """RoMA's settings (with where they come from) and IGNITE's state (if on) of the replicate's network."""
        hp = self.hparams
        out: dict[str, Any] = {"roma": {
            "settings": "the released AntMorphology config (safeweight/experiments.py); the released code has "
                        "no TFBind config, so on TFBind8/10 they are unverified",
            **{k: hp[k] for k in ("noise_std", "perturb_steps", "inner_lr", "grad_clip", "adapt_steps", "alpha",
                                  "region")},
        }}
        if self.constraint is not None:
            summary = self.constraint.summary()
            for key in ("lambda", "rho_grad_norm"):
                summary[key] = summary[key][replicate:replicate + 1]
            out["ignite"] = summary
        return out


class _AdaptedSearch:
    """One search's state: the adapted copy ``w̃`` of every network and the designs' labels.

    Args:
        module: the trained model (its weights are read, never written).
        x0: ``(C, D)`` starting designs.
        labels: ``(C,)`` their visible scores (the first step's labels).
        replicate: ``(C,)`` which network each candidate belongs to.
    """

    def __init__(self, module: RoMA, x0: Tensor, labels: Tensor, replicate: Tensor) -> None:
        self.module = module
        self.replicate = replicate
        self.membership = F.one_hot(replicate, module.replicates).T.to(x0)  # (R, C)
        self.model = {name: p.detach() for name, p in module.adapted_parameters()}
        self.anchor_norms = slice_norms(list(self.model.values()))
        self.temp = dict(self.model)
        self.labels = labels
        with torch.no_grad():
            self.start_mean = module.predict_designs(x0, replicate)

    def predict(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and log-std ``(R, C)`` of every adapted network at every design ``(C, D)``."""
        return functional_call(self.module, self.temp, (x,))

    def own(self, per_network: Tensor) -> Tensor:
        """``(R, C) -> (C,)``: each candidate's value under its own network."""
        return per_network.gather(0, self.replicate.view(1, -1)).squeeze(0)

    def objective(self, x: Tensor) -> Tensor:
        """``(R,)`` the adaptation objective of the current copy at designs ``x``, its graph kept."""
        x = x.detach().requires_grad_(True)
        mean, logstd = self.predict(x)
        return adaptation_objective(mean, logstd, x, self.labels, self.membership, self.module.hparams.alpha)

    def before_step(self, x: Tensor, t: int) -> dict[str, float]:
        hp = self.module.hparams
        if t > 0:  # released update_step: sol_y <- μ_w̃(x) after the previous design step
            with torch.no_grad():
                self.labels = self.own(self.predict(x)[0])
        temp = [p.clone().requires_grad_(True) for p in self.model.values()]  # released init_step
        self.temp = dict(zip(self.model, temp, strict=True))
        start = None
        for _ in range(hp.adapt_steps):
            loss = self.objective(x)
            start = float(loss.detach().mean()) if start is None else start
            grads = torch.autograd.grad(loss.sum(), temp)
            with torch.no_grad():
                temp = normalised_step(temp, self.anchor_norms, grads, hp.inner_lr / hp.adapt_steps, ADAPT_EPS)
            temp = [p.requires_grad_(True) for p in temp]
            self.temp = dict(zip(self.model, temp, strict=True))
        end = float(self.objective(x).detach().mean())
        self.temp = {name: p.detach() for name, p in self.temp.items()}  # the score needs no weight gradient
        return {"adapt_loss_start": end if start is None else start, "adapt_loss_end": end}

    def score(self, x: Tensor) -> Tensor:
        return trust_region_score(self.own(self.predict(x)[0]), self.start_mean, self.module.hparams.region)
