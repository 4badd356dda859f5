"""IGNITE integrated into Lightning training (Dao et al., NeurIPS 2024): ``Surrogate(ignite=...)``.

The pure math (``lightning_mbo.functional.gradnorm``) has its own tests; these check that the
training step of :class:`~lightning_mbo.methods.Surrogate` (and of its subclass
:class:`~lightning_mbo.methods.TriMentoring`) uses it as the spec says:

* the BDMM ascent on λ, per member, from the norm before the ω step, carried across batches
  and epochs (checked at every step against ``||∇h||`` computed here with plain autograd);
* the descent direction ``∇L_D + λ ρ ∇||∇h||`` reaching Adam (checked against an independent
  ``torch.func`` computation in float64, exact and finite-difference modes);
* λ in checkpoints (resume and ``load_from_checkpoint``);
* the constraint actually lowering ``ρ||∇h|| − ε`` on TFBind8.

All runs are small: TFBind8 with 2000 rows, 2x32 MLPs, 1-6 epochs of 15 batches.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint
from torch import Tensor
from torch.func import functional_call, grad

from lightning_mbo.cli import MBOTrainer
from lightning_mbo.data import MBODataModule
from lightning_mbo.methods import Ignite, Surrogate, TriMentoring

HIDDEN = (32, 32)


pytestmark = pytest.mark.usefixtures("one_thread")


# --------------------------------------------------------------------------- helpers
def _datamodule(**kwargs) -> MBODataModule:
    return MBODataModule(max_samples=2000, seed=0, **kwargs)


def _trainer(max_epochs: int, callbacks=(), **kwargs) -> MBOTrainer:
    opts = dict(
        max_epochs=max_epochs,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        log_every_n_steps=1,  # the module logs only on the steps the logger writes
        num_sanity_val_steps=0,
        callbacks=list(callbacks),
    )
    opts.update(kwargs)
    return MBOTrainer(**opts)


def _surrogate(dm: MBODataModule, ignite: Ignite | None, seed: int = 0, **kwargs) -> Surrogate:
    pl.seed_everything(seed, verbose=False)
    return Surrogate(dm.input_dim, hidden=HIDDEN, ignite=ignite, **kwargs)


def _fit(ignite: Ignite | None, epochs: int = 2, callbacks=(), **model_kwargs) -> Surrogate:
    dm = _datamodule()
    model = _surrogate(dm, ignite, **model_kwargs)
    _trainer(epochs, callbacks).fit(model, datamodule=dm)
    return model


def member_grad_norms(module: Surrogate, x: Tensor) -> Tensor:
    """``||∇_ω h_m||`` per member, over all trainable parameters, with plain autograd.

    ``h_m`` is member m's mean predicted mean over its rows of ``x``; the gradient of ``h_m``
    alone is taken with respect to the FULL parameter tensors (the other members' slices are
    zero), so this does not rely on the package's per-member slicing.
    """
    params = [p for p in module.parameters() if p.requires_grad]
    with torch.enable_grad():
        h = module(x)[0].mean(-1)
        norms = []
        for m in range(h.shape[0]):
            g = torch.autograd.grad(h[m], params, retain_graph=True, allow_unused=True)
            norms.append(torch.sqrt(sum((t.double() ** 2).sum() for t in g if t is not None)))
    return torch.stack(norms)


class DualCheck(pl.Callback):
    """Records, at every training step, λ before and after, the reference violation
    ``ρ||∇h_m|| − ε`` measured before the step, and the logged ``train/violation``."""

    def __init__(self, rho: float | None = None, eps: float | None = None) -> None:
        self.rho, self.eps = rho, eps
        self.before: list[Tensor] = []
        self.after: list[Tensor] = []
        self.violation: list[Tensor] = []
        self.logged: list[float] = []

    def _settings(self, module) -> tuple[float, float]:
        if self.rho is not None:
            return self.rho, self.eps
        return module.constraint.settings.rho, module.constraint.settings.eps

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        rho, eps = self._settings(pl_module)
        self.violation.append(rho * member_grad_norms(pl_module, batch[0]) - eps)
        if pl_module.constraint is not None:
            self.before.append(pl_module.constraint.lmbda.detach().clone())

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if pl_module.constraint is not None:
            self.after.append(pl_module.constraint.lmbda.detach().clone())
            self.logged.append(float(trainer.callback_metrics["train/violation"]))

    def check(self, settings: Ignite) -> None:
        """Every step: λ_after = λ_before + η_λ (ρ||∇h|| − ε) (clamped / fixed as configured),
        λ carried unchanged to the next step (also across epochs), and the logged violation is
        the members' mean reference violation."""
        assert len(self.after) == len(self.before) == len(self.violation) > 0
        for t, (lam0, lam1, viol) in enumerate(zip(self.before, self.after, self.violation, strict=True)):
            if settings.fixed_lambda:
                expected = lam0.double()
            else:
                expected = lam0.double() + settings.lambda_lr * viol
                if settings.clamp_lambda:
                    expected = expected.clamp_min(0.0)
            torch.testing.assert_close(lam1.double(), expected, rtol=1e-5, atol=1e-7, msg=f"λ update at step {t}")
            assert self.logged[t] == pytest.approx(viol.mean().item(), rel=1e-4, abs=1e-6), f"logged violation {t}"
            if t + 1 < len(self.before):
                assert torch.equal(self.before[t + 1], lam1), f"λ changed between step {t} and {t + 1}"

    @property
    def lambdas(self) -> Tensor:
        """``(steps, M)`` λ after every step."""
        return torch.stack(self.after)


# --------------------------------------------------------------------------- 1. the dual ascent on λ
def test_lambda_rises_while_constraint_violated():
    settings = Ignite(eps=0.0)  # ρ||∇h|| > 0 = ε: always violated
    check = DualCheck()
    model = _fit(settings, epochs=2, callbacks=[check])
    check.check(settings)
    viol = torch.stack(check.violation)
    assert (viol > 0).all()
    lam = torch.cat([torch.tensor([[settings.lambda_init]]), check.lambdas])[:, 0]
    assert len(lam) == 31  # 15 batches x 2 epochs: λ is carried over the epoch boundary
    assert (lam.diff() > 0).all(), "λ must rise at every step while the constraint is violated"
    assert model.constraint.lmbda.item() > settings.lambda_init + 0.5 * 30 * settings.lambda_lr * viol.min().item()


def test_lambda_falls_when_constraint_slack_and_may_go_negative():
    settings = Ignite(eps=10.0)  # ρ||∇h|| ≈ 0.15 << ε
    check = DualCheck()
    model = _fit(settings, epochs=2, callbacks=[check])
    check.check(settings)
    assert (torch.stack(check.violation) < 0).all()
    lam = torch.cat([torch.tensor([[settings.lambda_init]]), check.lambdas])[:, 0]
    assert (lam.diff() < 0).all(), "λ must fall at every step while the constraint is slack"
    # The faithful default never clamps: λ goes negative (≈ 1e-3 − 30·1e-3·9.85).
    assert model.constraint.lmbda.item() < -0.2


def test_clamped_lambda_reaches_zero_and_stays_there():
    settings = Ignite(eps=10.0, clamp_lambda=True)
    check = DualCheck()
    model = _fit(settings, epochs=2, callbacks=[check])
    check.check(settings)
    # One step of 1e-3 · (−9.85) takes λ_0 = 1e-3 below 0: it is projected to exactly 0.
    assert (check.lambdas == 0).all()
    assert model.constraint.lmbda.item() == 0.0


def test_clamped_lambda_from_zero_stays_zero_and_trains_like_plain():
    settings = Ignite(eps=10.0, clamp_lambda=True, lambda_init=0.0)
    check = DualCheck()
    ignite = _fit(settings, epochs=2, callbacks=[check])
    check.check(settings)
    assert (torch.stack(check.before) == 0).all() and (check.lambdas == 0).all()
    # λ = 0 throughout: the penalty is zero, so the weights are those of plain training.
    plain = _fit(None, epochs=2)
    for (name, p), q in zip(ignite.named_parameters(), plain.parameters(), strict=True):
        assert torch.equal(p, q), name


def test_fixed_lambda_never_changes_but_penalty_applies():
    # "IGNITE-2": fixed λ = 1e-2, ρ = r = 0.2; ε = 0 so that an ascent WOULD move λ.
    settings = Ignite(fixed_lambda=True, lambda_init=1e-2, rho=0.2, r=0.2, eps=0.0)
    check = DualCheck()
    ignite = _fit(settings, epochs=2, callbacks=[check])
    check.check(settings)
    assert (torch.stack(check.violation) > 0).all()
    lam = torch.stack(check.before + check.after)
    assert torch.equal(lam, torch.full_like(lam, 1e-2))
    plain = _fit(None, epochs=2)
    diff = max((p - q).abs().max().item() for p, q in zip(ignite.parameters(), plain.parameters(), strict=True))
    assert diff > 1e-5, "fixed λ ≠ 0 must still add the penalty to the weights' gradient"


@pytest.mark.parametrize("grad_mode", ["finite_difference", "exact"])
def test_ensemble_has_one_lambda_per_member(grad_mode):
    settings = Ignite(lambda_lr=0.1, grad_mode=grad_mode)
    check = DualCheck()
    model = _fit(settings, epochs=2, callbacks=[check], members=3)
    assert model.constraint.lmbda.shape == (3,)
    check.check(settings)  # per member: λ_m from member m's own ||∇h_m||
    first = check.after[0]
    assert (first != settings.lambda_init).all(), "all three λ must move in the first step"
    lam = model.constraint.lmbda
    gaps = (lam[:, None] - lam[None, :]).abs() + torch.eye(3)
    assert gaps.min() > 1e-4, f"members differ, so their λ must differ: {lam}"


def test_tri_mentoring_proxies_train_under_ignite():
    settings = Ignite(lambda_lr=0.1)
    dm = _datamodule(val_size=0.1)
    pl.seed_everything(0, verbose=False)
    model = TriMentoring(dm.input_dim, hidden=HIDDEN, lr=1e-3, ignite=settings)
    check = DualCheck()
    _trainer(1, [check]).fit(model, datamodule=dm)
    assert model.method_name().endswith("+ignite")
    assert model.constraint.lmbda.shape == (3,)
    check.check(settings)  # each proxy its own split, batch and λ
    lam = model.constraint.lmbda
    assert len(set(lam.tolist())) == 3


# --------------------------------------------------------------------------- 2. the descent step on ω
class StepRecorder(pl.Callback):
    def __init__(self) -> None:
        self.records: list[dict] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.records.append({
            "batch": [t.detach().clone() if torch.is_tensor(t) else t for t in batch],
            "params": {k: v.detach().clone() for k, v in pl_module.named_parameters()},
            "lambda": pl_module.constraint.lmbda.detach().clone(),
        })

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        rec = self.records[-1]
        rec["grads"] = {k: v.grad.detach().clone() for k, v in pl_module.named_parameters()}
        rec["params_after"] = {k: v.detach().clone() for k, v in pl_module.named_parameters()}
        rec["lambda_after"] = pl_module.constraint.lmbda.detach().clone()


def _reference_gradient(model: Surrogate, params: dict[str, Tensor], x: Tensor, y: Tensor, lam: Tensor,
                        settings: Ignite) -> tuple[dict[str, Tensor], dict[str, Tensor], Tensor]:
    """Data-loss gradient, penalty ``Σ_m λ_m ρ ∇||∇h_m||`` and norms, with torch.func."""

    def data_loss(p):
        mean, logstd = functional_call(model, p, (x,))
        nll = 0.5 * ((y - mean) / logstd.exp()) ** 2 + logstd + 0.5 * math.log(2 * math.pi)
        return nll.mean(-1).sum()

    def h(p, m):
        return functional_call(model, p, (x,))[0].mean(-1)[m]

    def norm(g):
        return torch.sqrt(sum((t**2).sum() for t in g.values()))

    data = grad(data_loss)(params)
    penalty = {k: torch.zeros_like(v) for k, v in params.items()}
    norms = []
    for m in range(lam.shape[0]):
        g = grad(h)(params, m)  # full tensors, other members' slices zero
        n = norm(g)
        norms.append(n)
        if settings.grad_mode == "exact":
            dn = grad(lambda p, m=m: norm(grad(h)(p, m)))(params)
        else:  # (∇h(ω + r u) − ∇h(ω)) / r, u = ∇h/||∇h||, shifting member m only
            shifted = {k: v + settings.r * g[k] / n for k, v in params.items()}
            gs = grad(h)(shifted, m)
            dn = {k: (gs[k] - g[k]) / settings.r for k in params}
        for k in params:
            penalty[k] = penalty[k] + lam[m] * settings.rho * dn[k]
    return data, penalty, torch.stack(norms)


@pytest.mark.parametrize("grad_mode", ["finite_difference", "exact"])
def test_training_step_is_adam_on_data_plus_penalty_gradient(grad_mode):
    # λ_0 = 2 (λρ = 0.1) and a fast dual step, so that the penalty is a sizeable part of the
    # gradient and λ differs between members from the second step on.
    settings = Ignite(lambda_init=2.0, lambda_lr=1.0, grad_mode=grad_mode)
    dm = _datamodule()
    model = _surrogate(dm, settings, members=2)
    rec = StepRecorder()
    _trainer(1, [rec], precision="64-true", limit_train_batches=3).fit(model, datamodule=dm)
    assert len(rec.records) == 3

    ref = {k: v.clone().requires_grad_(True) for k, v in rec.records[0]["params"].items()}
    adam = torch.optim.Adam(list(ref.values()), lr=model.hparams.lr)
    lam = rec.records[0]["lambda"].clone()
    assert lam.dtype == torch.float64
    for t, r in enumerate(rec.records):
        x, y = (v.double() for v in r["batch"][:2])
        for k in ref:  # the module's state before the step follows the reference trajectory
            torch.testing.assert_close(r["params"][k], ref[k].detach(), rtol=1e-9, atol=1e-12, msg=f"{k} step {t}")
        torch.testing.assert_close(r["lambda"], lam, rtol=1e-12, atol=1e-14)
        data, penalty, norms = _reference_gradient(model, {k: v.detach() for k, v in ref.items()}, x, y, lam,
                                                   settings)
        pen_norm = torch.sqrt(sum((v**2).sum() for v in penalty.values()))
        data_norm = torch.sqrt(sum((v**2).sum() for v in data.values()))
        assert pen_norm > 1e-3 * data_norm, "test setting too weak to see the penalty"
        for k in ref:
            total = data[k] + penalty[k]
            torch.testing.assert_close(r["grads"][k], total, rtol=1e-8, atol=1e-10, msg=f"grad of {k} at step {t}")
            ref[k].grad = total.clone()
        adam.step()
        lam = lam + settings.lambda_lr * (settings.rho * norms - settings.eps)
        torch.testing.assert_close(r["lambda_after"], lam, rtol=1e-10, atol=1e-12)
        for k in ref:
            torch.testing.assert_close(r["params_after"][k], ref[k].detach(), rtol=1e-9, atol=1e-12,
                                       msg=f"{k} after step {t}")
    assert (rec.records[-1]["lambda"][0] != rec.records[-1]["lambda"][1]).item()


# --------------------------------------------------------------------------- 3. checkpoints
class StopAfter(pl.Callback):
    """Stops training after ``epochs`` epochs without changing ``max_epochs`` (an interruption)."""

    def __init__(self, epochs: int) -> None:
        self.epochs = epochs

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if trainer.current_epoch + 1 >= self.epochs:
            trainer.should_stop = True


def _assert_same_state(a: pl.LightningModule, b: pl.LightningModule) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        torch.testing.assert_close(sa[k], sb[k], rtol=1e-6, atol=1e-7, equal_nan=True, msg=k)


def test_resume_from_last_checkpoint_equals_uninterrupted_run(tmp_path: Path):
    settings = Ignite(lambda_lr=1.0)

    def run(epochs, callbacks=(), ckpt_path=None, **trainer_kwargs):
        dm = _datamodule()
        model = _surrogate(dm, settings, members=2)
        check = DualCheck()
        trainer = _trainer(epochs, [check, *callbacks], limit_val_batches=None, **trainer_kwargs)
        trainer.fit(model, datamodule=dm, ckpt_path=ckpt_path)  # torch's default weights-only loading
        return model, check

    first, _ = run(2, [ModelCheckpoint(dirpath=tmp_path, save_last=True)], enable_checkpointing=True)
    last = tmp_path / "last.ckpt"
    assert last.exists()
    resumed, resumed_check = run(4, ckpt_path=str(last))
    full, full_check = run(4)
    assert len(resumed_check.after) == 30 and len(full_check.after) == 60
    # The resumed run starts from the saved λ, not λ_0 ...
    torch.testing.assert_close(resumed_check.before[0], first.constraint.lmbda, rtol=0, atol=0)
    assert (resumed_check.before[0] != settings.lambda_init).all()
    # ... and follows the uninterrupted run's λ trajectory and ends with its weights.
    torch.testing.assert_close(resumed_check.lambdas, full_check.lambdas[30:], rtol=1e-6, atol=1e-7)
    _assert_same_state(resumed, full)

    loaded = Surrogate.load_from_checkpoint(last)
    assert loaded.hparams.ignite == settings and loaded.constraint.settings == settings
    torch.testing.assert_close(loaded.constraint.lmbda, first.constraint.lmbda, rtol=0, atol=0)
    _assert_same_state(loaded, first)


def test_tri_mentoring_resume_with_cosine_schedule_and_best_state(tmp_path: Path):
    settings = Ignite(lambda_lr=1.0)

    def run(callbacks=(), ckpt_path=None, **trainer_kwargs):
        dm = _datamodule(val_size=0.1)
        pl.seed_everything(0, verbose=False)
        model = TriMentoring(dm.input_dim, hidden=HIDDEN, lr=1e-2, ignite=settings)
        trainer = _trainer(4, list(callbacks), limit_val_batches=None, **trainer_kwargs)
        trainer.fit(model, datamodule=dm, ckpt_path=ckpt_path)
        return model

    # Interrupted after 2 of 4 epochs (cosine T_max = max_epochs = 4 in both runs).
    first = run([ModelCheckpoint(dirpath=tmp_path, save_last=True), StopAfter(2)], enable_checkpointing=True)
    resumed = run(ckpt_path=str(tmp_path / "last.ckpt"))
    full = run()
    _assert_same_state(resumed, full)  # proxies (best epochs), best Pearson and λ
    assert not torch.equal(first.constraint.lmbda, full.constraint.lmbda)

    loaded = TriMentoring.load_from_checkpoint(tmp_path / "last.ckpt")
    assert loaded.constraint.settings == settings
    torch.testing.assert_close(loaded.constraint.lmbda, first.constraint.lmbda, rtol=0, atol=0)


def test_ignite_checkpoint_loads_weights_only(tmp_path: Path):
    """The Ignite dataclass in the saved hyper-parameters must pass torch.load(weights_only=True)
    (torch >= 2.6's default, used by `fit --ckpt_path` and load_from_checkpoint)."""
    dm = _datamodule()
    model = _surrogate(dm, Ignite(lambda_lr=1.0))
    trainer = _trainer(1, [ModelCheckpoint(dirpath=tmp_path, save_last=True)], enable_checkpointing=True,
                       limit_train_batches=2)
    trainer.fit(model, datamodule=dm)
    last = tmp_path / "last.ckpt"
    loaded = Surrogate.load_from_checkpoint(last, weights_only=True)
    assert loaded.hparams.ignite == Ignite(lambda_lr=1.0)
    torch.testing.assert_close(loaded.constraint.lmbda, model.constraint.lmbda, rtol=0, atol=0)
    resumed = _surrogate(dm, Ignite(lambda_lr=1.0))
    _trainer(2, limit_train_batches=2).fit(resumed, datamodule=dm, ckpt_path=str(last), weights_only=True)
    assert resumed.global_step == 4


# --------------------------------------------------------------------------- 4. the effect on ||∇h||
def test_default_settings_drive_violation_towards_zero():
    """TFBind8's IGNITE settings (ρ 0.05, ε 0.1, λ_0 1e-3, r 0.05, finite difference) but a dual
    step η_λ = 100 instead of 1e-3, so that λ reaches O(100) within 6 epochs of 15 batches
    (with η_λ = 1e-3 λ would move by ~1e-4 in that time and nothing would be visible)."""
    settings = Ignite(lambda_lr=100.0)
    epochs = 6
    plain_check = DualCheck(rho=settings.rho, eps=settings.eps)
    plain = _fit(None, epochs=epochs, callbacks=[plain_check])
    ignite_check = DualCheck()
    ignite = _fit(settings, epochs=epochs, callbacks=[ignite_check])
    ignite_check.check(settings)

    dm = _datamodule()
    dm.setup("fit")
    x_train = dm.x[dm.train_rows[0]]  # h: mean prediction over all 1800 training rows

    def violation(model):
        return (settings.rho * member_grad_norms(model, x_train) - settings.eps).item()

    v_plain, v_ignite = violation(plain), violation(ignite)
    assert v_plain > 0.02, f"plain training violates the constraint (ρ||∇h|| − ε = {v_plain:.4f})"
    assert abs(v_ignite) < 0.5 * v_plain, f"IGNITE {v_ignite:.4f} vs plain {v_plain:.4f}"
    # The same on the training batches of the last epoch (logged train/violation vs plain's).
    last_plain = torch.stack(plain_check.violation[-15:]).mean().item()
    last_ignite = sum(ignite_check.logged[-15:]) / 15
    assert abs(last_ignite) < 0.5 * last_plain, f"IGNITE {last_ignite:.4f} vs plain {last_plain:.4f}"
    assert ignite.constraint.lmbda.item() > 10.0  # violated throughout: λ accumulated
