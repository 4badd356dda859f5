"""Surrogates: stacked ensembles of MLP regressors, trained with manual optimization.

:class:`Surrogate` is the design-baselines gradient-ascent surrogate (one model, or an
Ens-Mean / Ens-Min ensemble), and the base of every method that trains proxies here, so the
IGNITE constraint (``ignite=``) plugs into all of them through one training step.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence
from typing import Any, Literal, NamedTuple

import pytorch_lightning as pl
import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torchmetrics.regression import PearsonCorrCoef

from lightning_mbo.methods.best_epoch import BestMemberWeights
from lightning_mbo.methods.ignite import GradNormConstraint, Ignite
from lightning_mbo.methods.optim import adam
from lightning_mbo.methods.replicates import SeedReplicates
from lightning_mbo.methods.settings import accepted_settings
from lightning_mbo.nn import Activation, Init, StackedMLP
from lightning_mbo.search import SearchData, SearchObjective, SearchSettings
from lightning_mbo.validation import SettingsError, check_choice, check_range

Head = Literal["gaussian", "mse"]
Aggregate = Literal["mean", "min"]
LrSchedule = Literal["constant", "cosine"]


class StepLosses(NamedTuple):
    """One training step's objective (:meth:`Surrogate.training_losses`).

    Attributes:
        backward: ``(M,)`` per-network terms whose sum is backpropagated.
        mean: ``(M, b)`` the predicted means of the forward that produced them (IGNITE's ``h`` is
            their batch mean).
        logs: ``(M,)`` per-network values to log as ``train/*`` (their mean, and per network under
            ``members/``).
    """

    backward: Tensor
    mean: Tensor
    logs: dict[str, Tensor]


class Surrogate(SeedReplicates, pl.LightningModule):
    """A stacked ensemble of ``members`` MLP surrogates, and what it offers design search.

    Defaults are design-baselines' gradient-ascent settings (Trabucco et al., "Design-Bench",
    ICML 2022): 2x2048 leaky-ReLU MLP with a Gaussian head trained by negative log-likelihood,
    Adam 3e-4, and search by 200 plain steps of size ``0.01 sqrt(D)`` (:meth:`search_defaults`).
    ``members=5`` with ``aggregate`` ``mean`` or ``min`` gives Ens-Mean / Ens-Min. Members share
    one set of batched weights but each has its own initialisation and (through the datamodule)
    its own data order. Implements :class:`~lightning_mbo.search.Searchable`.

    Args:
        input_dim: flattened design size (linked from the datamodule by the CLI).
        members: number of ensemble members.
        hidden: hidden layer widths.
        activation: hidden activation.
        init: weight initialisation (``glorot``: Keras' default, as design-baselines; ``torch``).
        head: ``gaussian`` (mean and bounded log-std, NLL loss) or ``mse`` (one output, MSE loss).
        lr: learning rate of Adam.
        weight_decay: Adam's L2 weight decay.
        lr_schedule: ``constant`` or ``cosine`` (per epoch, to 0 at ``max_epochs``).
        aggregate: how members' predictions combine for ascent: ``mean`` or ``min``.
        ignite: the gradient-norm constraint (IGNITE); ``null`` trains without it.
        select_best: keep each member's epoch with the best validation Pearson correlation.
        replicates: seeds as a batch dimension: the runs of seeds ``s .. s + replicates - 1``
            (``s`` the run's seed) stacked in this one module, ``replicates * members`` networks.
            Replicate ``k``'s initialisation (:class:`SeedReplicates`), split, bootstrap draw and data order
            (the datamodule's ``connect(..., seeds)``) and its search come from generators seeded by
            ``s + k`` alone, so it builds what a plain run of seed ``s + k`` builds, and it writes its
            own results row with that seed. 1 is one ordinary run.
        embedding: ``[C, E]``: the members embed each of a discrete design's classes in ``E``
            dimensions before their first layer, as design-baselines' REINFORCE members
            (``[4, 256]``); needs ``--data.encoding integers``. ``null``: continuous features.
        adam_eps: Adam's epsilon. Default torch's 1e-8 (the PyTorch methods built on this class);
            the design-baselines configs set Keras' 1e-7, as the released TF2 code builds
            ``tf.keras.optimizers.Adam`` for every surrogate (GA, Ens, CMA-ES, BO-qEI, REINFORCE,
            CbAS, MINs).
    """

    #: Each member draws its own train/validation split (handed to the datamodule's ``connect``).
    per_member_split = False

    def __init__(
        self,
        input_dim: int,
        members: int = 1,
        hidden: Sequence[int] = (2048, 2048),
        activation: Activation = "leaky_relu",
        init: Init = "glorot",
        head: Head = "gaussian",
        lr: float = 3e-4,
        weight_decay: float = 0.0,
        lr_schedule: LrSchedule = "constant",
        aggregate: Aggregate = "mean",
        ignite: Ignite | None = None,
        select_best: bool = False,
        replicates: int = 1,
        embedding: Sequence[int] | None = None,
        adam_eps: float = 1e-8,
    ) -> None:
        super().__init__()
        # Lightning collects the arguments of every __init__ in the call stack, so a subclass's
        # settings are saved too; what a subclass fixes in its super().__init__ call (COMs' head)
        # is left out, so load_from_checkpoint rebuilds the subclass from what it accepts.
        accepted = accepted_settings(type(self))
        self.save_hyperparameters(ignore=[k for k in inspect.signature(Surrogate.__init__).parameters
                                          if k not in accepted])
        self.automatic_optimization = False
        self.head, self.aggregate = head, aggregate
        check_range("members (--model.init_args.members)", members, 1)
        check_range("replicates (--model.init_args.replicates)", replicates, 1)
        for width in hidden:
            check_range("hidden widths (--model.init_args.hidden)", width, 1)
        check_range("lr (--model.init_args.lr)", lr, 0, strict=True, hint="a learning rate of 0 trains nothing")
        check_range("weight_decay (--model.init_args.weight_decay)", weight_decay, 0)
        check_range("adam_eps (--model.init_args.adam_eps)", adam_eps, 0, strict=True)
        self.adam_eps = adam_eps  # an attribute too: a subclass that fixes it has it outside hparams
        check_choice("lr_schedule", lr_schedule, LrSchedule)
        self.replicates = replicates
        members = members * replicates  # every network of every replicate, stacked
        check_choice("head", head, Head)
        check_choice("aggregate", aggregate, Aggregate)
        if embedding is not None and (len(embedding) != 2 or min(embedding) < 1):
            raise SettingsError(f"embedding (--model.init_args.embedding) is [num_classes, width], got {embedding}")
        self.net = StackedMLP(members, input_dim, tuple(hidden), 2 if head == "gaussian" else 1, activation, init,
                              embedding)
        if head == "gaussian":
            # design-baselines' soft bounds on the log-std, trainable, one pair per member.
            self.max_logstd = nn.Parameter(torch.full((members, 1), math.log(0.2)))
            self.min_logstd = nn.Parameter(torch.full((members, 1), math.log(0.1)))
        self.constraint = GradNormConstraint(ignite, members, embedding is not None) if ignite is not None else None
        self.val_pearson = PearsonCorrCoef(num_outputs=members) if members > 1 else PearsonCorrCoef()
        self.best = BestMemberWeights(members) if select_best else None

    # --- the model ------------------------------------------------------------------------
    @property
    def num_members(self) -> int:
        """Stacked networks: members of every replicate (handed to the datamodule's ``connect``)."""
        return self.hparams.members * self.replicates

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        """Predicted mean ``(M, B)`` and log-std ``(M, B)`` (None for the MSE head) of ``x``
        of shape ``(B, D)`` or ``(M, B, D)``."""
        return self._head(self.net(x), slice(None))

    def _head(self, out: Tensor, members: slice) -> tuple[Tensor, Tensor | None]:
        """Mean and bounded log-std of the networks ``members`` from their outputs ``(M, B, 1 or 2)``."""
        if self.head == "mse":
            return out[..., 0], None
        mean, logstd = out[..., 0], out[..., 1]
        high, low = self.max_logstd[members], self.min_logstd[members]
        logstd = high - F.softplus(high - logstd)
        logstd = low + F.softplus(logstd - low)
        return mean, logstd

    def own_members(self, x: Tensor, replicate: Tensor) -> tuple[Tensor, Tensor | None]:
        """Mean and log-std ``(K, N)`` (log-std None for the MSE head) of the ``K`` members of each
        design's own replicate, for designs ``x`` ``(N, D)`` and their replicates ``(N,)``.

        Each network runs on its own replicate's designs only: designs of one replicate (a searcher
        run per replicate) meet that replicate's ``K`` networks alone, equal blocks of every
        replicate in order (gradient ascent over all replicates) meet their own networks as
        per-member inputs, and any other order takes every network on every design. The networks
        compute what a plain run of the replicate's seed computes, at ``1 / replicates`` of the cost
        of running every network on every design.
        """
        reps, n = self.replicates, x.shape[0]
        k = self.num_members // reps
        if reps == 1:
            return self(x)
        first = int(replicate[0]) if n else 0
        if bool((replicate == first).all()):
            part = slice(first * k, (first + 1) * k)
            params = {name: p[part] for name, p in self.net.named_parameters()}
            return self._head(torch.func.functional_call(self.net, params, (x,)), part)
        per = n // reps
        blocks = torch.arange(reps, device=replicate.device).repeat_interleave(per)
        if n % reps == 0 and torch.equal(replicate, blocks):
            mean, logstd = self(x.reshape(reps, per, *x.shape[1:]).repeat_interleave(k, 0))  # (R K, n / R)

            def fold(t: Tensor) -> Tensor:
                return t.view(reps, k, per).transpose(0, 1).reshape(k, n)

            return fold(mean), (None if logstd is None else fold(logstd))
        mean, logstd = self(x)
        index = (replicate * k).view(1, -1) + torch.arange(k, device=x.device).view(-1, 1)  # (K, N)
        return mean.gather(0, index), (None if logstd is None else logstd.gather(0, index))

    def member_losses(self, mean: Tensor, logstd: Tensor | None, y: Tensor, rows: int | None = None,
                      weights: tuple[Tensor, Tensor] | None = None) -> Tensor:
        """Per-member data loss ``(M,)``: Gaussian NLL or MSE, averaged over the batch.

        Args:
            rows: rows of the GLOBAL batch when this is one rank's share of it (DDP): the loss is
                then ``world_size * sum / rows``, so DDP's average over ranks is the average over
                rows even when the shares differ in size.
            weights: ``(w (M, b), total (M,))``: the rows' bootstrap weights and their sum over the
                global batch; the loss is then ``world_size * Σ w · loss / total`` (design-baselines'
                ``Σ b · nll / Σ b``).
        """
        if logstd is None:
            per_row = (mean - y) ** 2
        else:
            per_row = 0.5 * ((y - mean) / logstd.exp()) ** 2 + logstd + 0.5 * math.log(2 * math.pi)
        if weights is None:
            return self._batch_mean(per_row, rows)
        w, total = weights
        world = self.trainer.world_size if self._trainer is not None else 1
        return (per_row * w.to(per_row)).sum(-1) * (world / total.to(per_row).clamp(min=1e-12))

    def _batch_mean(self, per_row: Tensor, rows: int | None) -> Tensor:
        """Mean over the last dim, or over the global batch of ``rows`` rows under DDP (see :meth:`member_losses`)."""
        if rows is None:
            return per_row.mean(-1)
        world = self.trainer.world_size if self._trainer is not None else 1
        return per_row.sum(-1) * (world / rows)

    # --- training -------------------------------------------------------------------------
    def configure_optimizers(self) -> Any:
        opt = adam(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay,
                               eps=self.adam_eps)
        if self.hparams.lr_schedule == "cosine":
            t_max = self.trainer.max_epochs if self._trainer is not None else 1
            if t_max is None or t_max < 1:
                raise SettingsError("lr_schedule 'cosine' decays per epoch to 0 at trainer.max_epochs; set "
                                 "--trainer.max_epochs to a positive number (or use lr_schedule 'constant')")
            return [opt], [torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=t_max)]
        return opt

    def _reduce(self) -> Callable[[list[Tensor]], list[Tensor]] | None:
        """Average over data-parallel ranks, for the constraint's global-batch ∇h."""
        if self.trainer.world_size <= 1:
            return None

        def reduce(tensors: list[Tensor]) -> list[Tensor]:
            flat = torch.cat([t.reshape(-1) for t in tensors])
            torch.distributed.all_reduce(flat)
            flat /= self.trainer.world_size
            return [c.view_as(t) for c, t in zip(flat.split([t.numel() for t in tensors]), tensors, strict=True)]

        return reduce

    def _unpack(self, batch: tuple[Tensor, ...]) -> tuple[Tensor, Tensor, int | None, tuple[Tensor, Tensor] | None]:
        """``(x (M, b, D), y (M, b), global batch rows or None, bootstrap weights or None)`` of a batch."""
        x, y, *rest = batch
        if x.dim() == 3 and x.shape[0] != self.num_members:
            raise ValueError(
                f"the batches are for {x.shape[0]} stacked member(s) but the model stacks {self.num_members}: call "
                "datamodule.connect(members=model.num_members, per_member_split=model.per_member_split) before "
                "fitting (lightning_mbo.cli.MBOTrainer and the command line do it)"
            )
        return x, y, (int(rest[0]) if rest else None), (tuple(rest[1:3]) if len(rest) == 3 else None)

    def training_losses(self, x: Tensor, y: Tensor, rows: int | None,
                        weights: tuple[Tensor, Tensor] | None) -> StepLosses:
        """What one training step backpropagates and logs (a method changes its objective here).

        Args:
            x: ``(M, b, D)`` the batch.
            y: ``(M, b)`` its scores.
            rows: global batch rows (DDP), see :meth:`member_losses`.
            weights: bootstrap weights, see :meth:`member_losses`.
        """
        mean, logstd = self(x)
        losses = self.member_losses(mean, logstd, y, rows, weights)
        return StepLosses(losses, mean, {"train/loss": losses})

    def constrained_parameters(self) -> list[Tensor]:
        """The weights IGNITE's ``||∇_ω h||`` is taken over: every trainable parameter of the networks."""
        return [p for p in self.parameters() if p.requires_grad]

    def training_step(self, batch: tuple[Tensor, Tensor] | tuple[Tensor, Tensor, int], batch_idx: int) -> None:
        x, y, rows, weights = self._unpack(batch)
        opts = self.optimizers()
        opts = opts if isinstance(opts, list) else [opts]  # a method may add its own (COMs' α)
        for opt in opts:
            opt.zero_grad()
        with self.net.capture_lookups() as looked_up:  # the embedding's lookups, for IGNITE's released norm
            losses, mean, values = self.training_losses(x, y, rows, weights)
        # Log only on the steps the logger writes: Lightning's per-call bookkeeping costs more than
        # a small step, and step values logged between writes are never seen.
        writes = self._writes_logs()
        logs = {k: v for key, value in values.items() for k, v in self._member_logs(key, value.detach()).items()} \
            if writes else {}
        if self.constraint is None:
            self.manual_backward(losses.sum())
        else:
            params = self.constrained_parameters()
            # h(ω): each member's mean predicted score over the batch (IGNITE's sharpness proxy).
            norms = self.constraint.backward(
                losses.sum(), self._batch_mean(mean, rows), lambda: self._batch_mean(self(x)[0], rows), params,
                self.manual_backward, self._reduce(), [(self.net.embed.weight, e) for e in looked_up],
            )
            if writes:
                logs["train/lambda"] = self.constraint.lmbda.mean().clone()  # λ used by this step's descent
            violation = self.constraint.update_lambda(norms)
            if writes:
                logs.update(self._member_logs("train/lambda", self.constraint.lmbda.clone(), mean=False))
                logs.update({"train/grad_norm": norms.mean(), "train/violation": violation.mean()})
        for opt in opts:
            opt.step()
        if writes:
            self.log_dict(logs, batch_size=y.shape[-1])

    def _member_logs(self, key: str, values: Tensor, mean: bool = True) -> dict[str, Tensor]:
        """``{key: mean}`` (with ``mean``) and, with several members, ``members/<stage>_<name>_m<i>``
        per member (their own TensorBoard group, so the means open first)."""
        out = {key: values.mean()} if mean else {}
        if self.num_members > 1:
            flat = key.replace("/", "_")
            out.update({f"members/{flat}_m{m}": v for m, v in enumerate(values)})
        return out

    def _writes_logs(self) -> bool:
        """Whether the trainer's logger writes this step's values (every ``log_every_n_steps``)."""
        connector = getattr(self._trainer, "_logger_connector", None)
        return True if connector is None else bool(connector.should_update_logs)

    def on_train_epoch_end(self) -> None:
        sched = self.lr_schedulers()
        if sched is not None:
            sched.step()

    # --- validation: Pearson per member, best-epoch selection ----------------------------
    def validation_step(self, batch: tuple[Tensor, ...], batch_idx: int) -> None:
        x, y, rows, _ = self._unpack(batch)
        mean, logstd = self(x)
        self.log("val/loss", self.member_losses(mean, logstd, y, rows).mean(), sync_dist=True,
                 batch_size=y.shape[-1])
        if self.num_members > 1:
            self.val_pearson.update(mean.T, y.T)
        else:
            self.val_pearson.update(mean[0], y[0])

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            self.val_pearson.reset()
            return
        pearson = self.val_pearson.compute().reshape(-1)
        self.val_pearson.reset()
        self.log_dict(self._member_logs("val/pearson", pearson))
        if self.best is not None:
            self.best.update(pearson, dict(self.named_parameters()))

    def on_train_end(self) -> None:
        self.restore_best()

    def restore_best(self) -> None:
        """With ``select_best``, load each member's best-validation-Pearson weights."""
        if self.best is not None:
            self.best.restore(dict(self.named_parameters()))

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.best is not None and self.best.weights is not None:
            checkpoint["best_state"] = self.best.weights

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.best is not None:
            self.best.weights = checkpoint.get("best_state")

    # --- design search (lightning_mbo.search.Searchable) ------------------------------------
    def predict_designs(self, x: Tensor, replicate: Tensor | None = None) -> Tensor:
        """Aggregated predicted (normalised) score ``(N,)`` of designs ``(N, D)``.

        Args:
            x: ``(N, D)`` designs.
            replicate: ``(N,)`` which replicate's members score each design (None: replicate 0's
                members when there is one replicate).
        """
        if replicate is None:
            if self.replicates > 1:
                raise ValueError("with several replicates, say which replicate scores each design")
            replicate = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
        mean, _ = self.own_members(x, replicate)  # (members, N)
        return mean.mean(0) if self.aggregate == "mean" else mean.min(0).values

    def search_objective(self, x0: Tensor, data: SearchData, candidate_ids: Tensor, num_total: int) -> SearchObjective:
        """The aggregated prediction of each candidate's replicate (no per-step hook), and with the
        Gaussian head the members' predictive distribution.

        Args:
            x0: ``(C, D)`` this process's starting designs (normalised features).
            data: the training set and task facts (unused here).
            candidate_ids: ``(C,)`` indices of these candidates among all ``num_total``.
            num_total: number of candidates over all processes.
        """
        replicate = self.replicate_of(candidate_ids, num_total)
        predictive = (lambda x: self.predictive(x, replicate)) if self.head == "gaussian" else None
        return SearchObjective(lambda x: self.predict_designs(x, replicate), predictive=predictive)

    def predictive(self, x: Tensor, replicate: Tensor) -> Tensor:
        """``(2, K, N)``: the means and standard deviations of the ``K = members`` Gaussian members
        of each design's replicate (``replicate`` ``(N,)``), for designs ``x`` ``(N, D)``."""
        mean, logstd = self.own_members(x, replicate)
        return torch.stack([mean, logstd.exp()])

    def replicate_of(self, candidate_ids: Tensor, num_total: int) -> Tensor:
        """Replicate of each candidate: candidates come in ``replicates`` blocks of ``num_total / replicates``."""
        return (candidate_ids // (num_total // self.replicates)).to(self.device)

    def search_defaults(self, data: SearchData) -> SearchSettings:
        """design-baselines' gradient ascent (Trabucco et al. 2022): 200 plain steps
        ``x ← x + 0.01 √D ∇f(x)`` from the top designs."""
        return SearchSettings(steps=200, lr=0.01 * math.sqrt(data.input_dim), optimizer="sgd")

    def method_summary(self, replicate: int = 0) -> dict[str, Any]:
        """Method state worth reporting next to a replicate's scores (the IGNITE constraint's, if on)."""
        if self.constraint is None:
            return {}
        m = self.hparams.members
        summary = self.constraint.summary()
        for key in ("lambda", "rho_grad_norm"):
            summary[key] = summary[key][replicate * m:(replicate + 1) * m]
        return {"ignite": summary}

    def method_name(self) -> str:
        """A short name for results: e.g. ``grad_ascent``, ``ens_mean``, ``ens_min+ignite``."""
        name = "grad_ascent" if self.hparams.members == 1 else f"ens_{self.aggregate}"
        return name + ("+ignite" if self.constraint is not None else "")

