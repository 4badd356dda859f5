"""COMs: conservative objective models, with the IGNITE constraint as a plug-in.

Trabucco, Kumar, Geng, Levine, "Conservative Objective Models for Effective Offline Model-Based
Optimization", ICML 2021; as the IGNITE repository ran it (``design_baselines/coms_cleaned`` and
``coms_cleaned_IGNITE``, ``scripts/IGNITE/coms/tf8.py``). The equations are in
:mod:`lightning_mbo.functional.coms`; the multiplier's step in :mod:`lightning_mbo.functional.dual`.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from lightning_mbo.functional.coms import conservative_losses, overestimation, particle_ascent
from lightning_mbo.functional.dual import dual_objective
from lightning_mbo.methods.optim import adam
from lightning_mbo.methods.surrogate import StepLosses, Surrogate
from lightning_mbo.nn import Activation
from lightning_mbo.search import SearchData, SearchSettings
from lightning_mbo.validation import check_range


class COMs(Surrogate):
    """A conservative objective model (one per replicate), trained with manual optimization.

    Every training step (the released ``train_step``): the negatives ``x⁻`` are ``particle_steps``
    plain ascent steps of size ``particle_lr·√D`` on the model from the batch; the model takes an
    Adam step on ``mean[(y − f(x))² + α(f(x⁻) − f(x))]``, and ``log α`` takes its own Adam step
    (lr ``alpha_lr``) on ``α·(τ − mean[f(x⁻) − f(x)])``, both gradients taken before either step,
    so α rises while the over-estimation gap exceeds ``τ`` (``overestimation_limit``) and falls
    while it is below. Validation is logged only (no epoch selection), as released.

    Search (:meth:`search_defaults`): :attr:`SEARCH_STEPS` plain steps of the same size from the
    top-128 designs, scored at the last step (``--ascent.steps`` sets another budget).

    Defaults are the released TFBind8/TFBind10 settings (``scripts/IGNITE/coms/tf8.py``): a ReLU
    MLP ``D -> 2048 -> 2048 -> 1`` with Keras' Glorot init, MSE on z-scored y, designs as logits
    NOT z-scored (``--data.normalize_x false``), Adam 3e-4, batch 128, 500 validation rows,
    α0 0.1, α lr 0.01, τ 2.0, particle lr 2.0, 50 particle and 50 search steps. The IGNITE
    repository trains 2 epochs; upstream COMs 50 (``trainer.max_epochs`` in the configs).

    Args:
        input_dim: flattened design size (linked from the datamodule).
        activation: hidden activation (``relu``, as released).
        adam_eps: the model's and α's Adam epsilon (Keras' 1e-7, as the released TF2 code).
        alpha_init: initial multiplier α0 (> 0).
        alpha_lr: Adam learning rate of ``log α`` (>= 0; 0 keeps α fixed).
        overestimation_limit: τ, the over-estimation gap α holds the model to (>= 0).
        particle_lr: step size per √D of the negatives and of the search (> 0).
        particle_steps: ascent steps that make the negatives (>= 1).
        **kwargs: :class:`Surrogate`'s other settings (``members``, ``hidden``, ``init``, ``lr``,
            ``ignite``, ``replicates``); COMs fixes the MSE head, a constant learning rate without
            weight decay, the last epoch's weights and continuous features.
    """

    #: Design-search steps, as released (``coms_cleaned/__init__.py:347-390``: 50 steps, scored at step 50).
    SEARCH_STEPS = 50

    def __init__(
        self,
        input_dim: int,
        activation: Activation = "relu",
        adam_eps: float = 1e-7,
        alpha_init: float = 0.1,
        alpha_lr: float = 0.01,
        overestimation_limit: float = 2.0,
        particle_lr: float = 2.0,
        particle_steps: int = 50,
        **kwargs: Any,
    ) -> None:
        check_range("alpha_init (--model.init_args.alpha_init)", alpha_init, 0, strict=True,
                    hint="α is learned as log α")
        check_range("alpha_lr (--model.init_args.alpha_lr)", alpha_lr, 0)
        check_range("overestimation_limit (--model.init_args.overestimation_limit)", overestimation_limit, 0)
        check_range("particle_lr (--model.init_args.particle_lr)", particle_lr, 0, strict=True)
        check_range("particle_steps (--model.init_args.particle_steps)", particle_steps, 1,
                    hint="COMs needs negatives")
        super().__init__(input_dim, activation=activation, adam_eps=adam_eps, head="mse", weight_decay=0.0,
                         lr_schedule="constant", aggregate="mean", select_best=False, embedding=None, **kwargs)
        # One multiplier per network, learned as log α (a parameter: under DDP its gradient is
        # averaged with the weights', so every process takes the same dual step).
        self.log_alpha = nn.Parameter(torch.full((self.num_members,), math.log(alpha_init)))

    def configure_optimizers(self) -> Any:
        model = [p for name, p in self.named_parameters() if name != "log_alpha"]
        # Keras' Adam (epsilon 1e-7), as the released TF2 code.
        return [adam(model, lr=self.hparams.lr, eps=self.adam_eps),
                torch.optim.Adam([self.log_alpha], lr=self.hparams.alpha_lr, eps=self.adam_eps)]

    def constrained_parameters(self) -> list[Tensor]:
        """IGNITE regularises the model's weights, not the multiplier."""
        return [p for name, p in self.named_parameters() if p.requires_grad and name != "log_alpha"]

    @property
    def alpha(self) -> Tensor:
        """``(M,)`` the multipliers α."""
        return self.log_alpha.exp()

    def step_size(self, input_dim: int) -> float:
        """``η = particle_lr · √D`` (the released ``particle_lr * np.sqrt(np.prod(input_shape))``)."""
        return self.hparams.particle_lr * math.sqrt(input_dim)

    def training_losses(self, x: Tensor, y: Tensor, rows: int | None,
                        weights: tuple[Tensor, Tensor] | None) -> StepLosses:
        """The model loss plus the multiplier's dual term (its gradient reaches ``log α`` only)."""
        mean = self(x)[0]
        negatives = particle_ascent(lambda z: self(z)[0], x, self.step_size(x.shape[-1]),
                                    self.hparams.particle_steps)
        pred_neg = self(negatives)[0]
        alpha = self.alpha
        model_loss = self._batch_mean(conservative_losses(y, mean, pred_neg, alpha), rows)
        gap = self._batch_mean(overestimation(mean, pred_neg), rows).detach()
        logs = {"train/loss": model_loss, "train/mse": self._batch_mean((y - mean) ** 2, rows),
                "train/overestimation": gap, "train/alpha": alpha}
        return StepLosses(model_loss + dual_objective(alpha, gap - self.hparams.overestimation_limit), mean, logs)

    def search_defaults(self, data: SearchData) -> SearchSettings:
        """The released search: :attr:`SEARCH_STEPS` plain steps ``x ← x + particle_lr·√D ∇f(x)``
        (another budget: ``--ascent.steps``)."""
        return SearchSettings(steps=self.SEARCH_STEPS, lr=self.step_size(data.input_dim), optimizer="sgd")

    def method_summary(self, replicate: int = 0) -> dict[str, Any]:
        """IGNITE's state (if on) and α of the replicate's networks, with τ."""
        m = self.hparams.members
        out = super().method_summary(replicate)
        out["coms"] = {"alpha": self.alpha[replicate * m:(replicate + 1) * m].tolist(),
                       "overestimation_limit": self.hparams.overestimation_limit}
        return out

    def method_name(self) -> str:
        return "coms" + ("+ignite" if self.constraint is not None else "")

