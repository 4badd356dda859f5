"""Tests of the RoMA LightningModule (lightning_mbo.methods.roma; Yu et al., NeurIPS 2021).

The equations have their own tests (tests/functional/test_roma.py). Here: one pre-training step
and a short search against independent re-writings of the released ``train_step`` and
``init_step``/``fix_step``/``update_step`` (``design_baselines/safeweight/trainers.py``) on one
network in Keras' tensor layout; IGNITE inside the step; replicates; settings; and one quick CLI
fit per config. Small networks, float64 where results are compared to rounding.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import Tensor
from torch.nn import functional as F

from lightning_mbo.cli import MBOTrainer, main
from lightning_mbo.data.datamodule import MBODataModule
from lightning_mbo.methods.ignite import Ignite
from lightning_mbo.methods.roma import RoMA
from lightning_mbo.search import SearchSettings, gradient_ascent
from lightning_mbo.validation import SettingsError
from tests.conftest import distinct_designs, read_result, shipped_tfbind8, write_shards

REPO = Path(__file__).resolve().parents[2]
F64 = torch.float64
HIDDEN = (6, 5)
C = 4  # candidates per replicate
TOL = {"rtol": 1e-9, "atol": 1e-11}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def dm() -> MBODataModule:
    """300 shipped TFBind8 rows in float64, taken by stride (a random subsample would differ between the
    stacked replicates' seeds, which the datamodule refuses)."""
    return shipped_tfbind8(300, F64, val_size=20, batch_size=64, subsample="stride")


def make_model(dm: MBODataModule, seed: int = 0, **kwargs: Any) -> RoMA:
    torch.manual_seed(seed)
    return RoMA(dm.input_dim, hidden=HIDDEN, **kwargs).to(F64)


# --- one network in the released (Keras) layout --------------------------------------------------
def keras_network(model: RoMA, r: int) -> dict[str, Tensor]:
    """Network ``r``'s tensors as the released model holds them: kernels ``(in, out)``, biases
    ``(out,)``, log-std bounds ``(1, 1)``."""
    out = {}
    for i, layer in enumerate(model.net.layers):
        out[f"kernel{i}"] = layer.weight[r].detach().clone()
        out[f"bias{i}"] = layer.bias[r, 0].detach().clone()
    out["max_logstd"] = model.max_logstd[r].detach().view(1, 1).clone()
    out["min_logstd"] = model.min_logstd[r].detach().view(1, 1).clone()
    return out


def distribution(p: dict[str, Tensor], x: Tensor) -> torch.distributions.Normal:
    """The released ``DoubleheadModel.get_distribution`` (softplus MLP, softly bounded log-std)."""
    h = x
    n = sum(k.startswith("kernel") for k in p)
    for i in range(n):
        h = h @ p[f"kernel{i}"] + p[f"bias{i}"]
        if i < n - 1:
            h = F.softplus(h)
    mean, logstd = h[:, 0], h[:, 1]
    logstd = p["max_logstd"][0] - F.softplus(p["max_logstd"][0] - logstd)
    logstd = p["min_logstd"][0] + F.softplus(logstd - p["min_logstd"][0])
    return torch.distributions.Normal(mean, logstd.exp())


def released_train_steps(p: dict[str, Tensor], batches: list[tuple[Tensor, Tensor]], lmbda: float | None = None,
                         ignite: Ignite | None = None, steps: int = 20, inner_lr: float = 5e-3, lr: float = 1e-3,
                         clip: float = 1.0) -> tuple[dict[str, Tensor], float | None]:
    """``train_step`` (trainers.py:60-112) on one network, batch after batch; with ``ignite``,
    IGNITE's exact penalty at the perturbed weights. Returns the new tensors and the new λ."""
    w = {k: v.clone().requires_grad_(True) for k, v in p.items()}
    opt = torch.optim.Adam(list(w.values()), lr=lr, eps=1e-7)
    for x, y in batches:
        w0 = {k: v.detach().clone() for k, v in w.items()}
        for _ in range(steps):
            loglik = distribution(w, x).log_prob(y).mean()
            grads = torch.autograd.grad(loglik, list(w.values()), allow_unused=True)
            with torch.no_grad():
                for (k, t), g in zip(w.items(), grads, strict=True):
                    if t.shape[0] > 1:
                        t -= (inner_lr / steps) * (w0[k].norm() / g.norm()) * g
        perturbation = {k: w[k].detach() - w0[k] for k in w}
        d = distribution(w, x)
        grads = list(torch.autograd.grad(-d.log_prob(y).mean(), list(w.values()), retain_graph=ignite is not None))
        if ignite is not None:
            gh = torch.autograd.grad(d.mean.mean(), list(w.values()), create_graph=True, allow_unused=True)
            gh = [torch.zeros_like(t) if g is None else g for t, g in zip(w.values(), gh, strict=True)]
            norm = torch.sqrt(sum((g * g).sum() for g in gh))
            penalty = torch.autograd.grad(norm, list(w.values()), allow_unused=True)
            grads = [g + lmbda * ignite.rho * (0 if q is None else q) for g, q in zip(grads, penalty, strict=True)]
            lmbda = lmbda + ignite.lambda_lr * (ignite.rho * float(norm) - ignite.eps)
        grads = [g * (clip / max(float(g.norm()), clip)) for g in grads]  # tf.clip_by_norm(g, clip)
        for t, g in zip(w.values(), grads, strict=True):
            t.grad = g
        opt.step()
        with torch.no_grad():
            for k, t in w.items():
                t -= perturbation[k]
    return {k: v.detach() for k, v in w.items()}, lmbda


def released_search(p: dict[str, Tensor], x0: Tensor, y0: Tensor, steps: int, adapt: int, inner_lr: float = 5e-3,
                    alpha: float = 1.0, region: float = 4.0, lr: float = 3e-3) -> tuple[Tensor, list[Tensor]]:
    """``init_step``, ``fix_step`` (adaptation) and ``update_step`` (trainers.py:129-202) on one
    network, ``steps`` times; returns the designs and the labels each adaptation used."""
    with torch.no_grad():
        mu0 = distribution(p, x0).mean
    x = x0.clone().requires_grad_(True)
    opt = torch.optim.Adam([x], lr=lr)  # the framework's design step (torch's epsilon)
    labels, used = y0.clone(), []
    for _ in range(steps):
        used.append(labels.clone())
        temp = {k: v.clone() for k, v in p.items()}
        for _ in range(adapt):
            leaves = {k: v.clone().requires_grad_(True) for k, v in temp.items()}
            xs = x.detach().requires_grad_(True)
            d = distribution(leaves, xs)
            (gx,) = torch.autograd.grad(d.mean.sum(), xs, create_graph=True)
            loss = gx.norm(dim=1).mean() + alpha * (-d.log_prob(labels)).mean()
            grads = torch.autograd.grad(loss, list(leaves.values()), allow_unused=True)
            for (k, t), g in zip(leaves.items(), grads, strict=True):
                if t.shape[0] > 1:
                    temp[k] = (t - (inner_lr / adapt) * (p[k].norm() / (g.norm() + 1e-6)) * g).detach()
        mean = distribution(temp, x).mean
        loss = (-mean + (mean - mu0) ** 2 / (2 * region)).sum()
        (x.grad,) = torch.autograd.grad(loss, x)
        opt.step()
        with torch.no_grad():
            labels = distribution(temp, x).mean
    return x.detach(), used


# --- settings --------------------------------------------------------------------------------------
def test_defaults_are_the_released_ant_settings(dm: MBODataModule) -> None:
    model = RoMA(dm.input_dim)
    hp = model.hparams
    assert tuple(hp.hidden) == (64, 64) and hp.activation == "softplus" and hp.init == "glorot"
    assert (hp.lr, hp.noise_std, hp.perturb_steps, hp.inner_lr, hp.grad_clip) == (1e-3, 0.2, 20, 5e-3, 1.0)
    assert (hp.adapt_steps, hp.alpha, hp.region) == (100, 1.0, 4.0)
    assert model.search_defaults(dm.search_data()) == SearchSettings(steps=500, lr=3e-3, optimizer="adam")
    assert model.num_members == 1 and model.head == "gaussian"
    assert model.method_name() == "roma"
    assert RoMA(dm.input_dim, ignite=Ignite()).method_name() == "roma+ignite"
    opt = model.configure_optimizers()
    assert opt.defaults["eps"] == 1e-7 and opt.defaults["lr"] == 1e-3


@pytest.mark.parametrize(("name", "value"), [("noise_std", -0.1), ("perturb_steps", -1), ("inner_lr", -1e-3),
                                             ("grad_clip", 0.0), ("adapt_steps", -1), ("alpha", -1.0),
                                             ("region", 0.0)])
def test_bad_settings_name_the_option(name: str, value: float) -> None:
    with pytest.raises(SettingsError, match=rf"^{name} \(--model.init_args.{name}\) must be"):
        RoMA(24, **{name: value})


def test_bad_setting_on_the_command_line_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SettingsError, match=r"region \(--model.init_args.region\) must be > 0"):
        main(["fit", "--config", str(REPO / "configs/tfbind8/roma.yaml"), "--model.init_args.region", "-4",
              "--trainer.logger.init_args.save_dir", str(tmp_path / "logs")])
    assert not any(tmp_path.iterdir())


def test_adapted_tensors_follow_the_released_first_dimension_rule() -> None:
    names = [n for n, _ in RoMA(24, hidden=(8, 8)).adapted_parameters()]
    # Keras kernels (in, out) with in > 1 and biases (out,) with out > 1, even the (2,) output bias;
    # never the (1, 1) log-std bounds.
    assert names == [f"net.layers.{i}.{k}" for i in range(3) for k in ("weight", "bias")]
    narrow = [n for n, _ in RoMA(1, hidden=(1, 4)).adapted_parameters()]
    # kernel0 (1, 1), bias0 (1,) and kernel1 (1, 4) have a first dimension of 1
    assert narrow == ["net.layers.1.bias", "net.layers.2.weight", "net.layers.2.bias"]


# --- pre-training -----------------------------------------------------------------------------------
def assert_network_is(model: RoMA, r: int, expected: dict[str, Tensor]) -> None:
    got = keras_network(model, r)
    for k in expected:
        torch.testing.assert_close(got[k], expected[k], **TOL, msg=lambda m, k=k: f"network {r} {k}: {m}")


def fit_batches(dm: MBODataModule, model: RoMA, batches: int) -> list[tuple[Tensor, Tensor]]:
    """``batches`` training steps through the trainer; returns each step's noisy batch ``(M, b, D)``
    and its scores ``(M, b)``."""
    seen: list[tuple[Tensor, Tensor]] = []
    unpack, noisy = model._unpack, model.noisy
    ys: list[Tensor] = []

    def record_unpack(batch):
        out = unpack(batch)
        ys.append(out[1].clone())
        return out

    def record_noisy(x, rows=None):
        out = noisy(x, rows)
        seen.append((out.clone(), ys[-1]))
        return out

    model._unpack, model.noisy = record_unpack, record_noisy
    trainer = MBOTrainer(max_epochs=1, limit_train_batches=batches, limit_val_batches=0, num_sanity_val_steps=0,
                         accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(model, dm)
    return seen


def max_diff(a: dict[str, Tensor], b: dict[str, Tensor]) -> float:
    return max(float((a[k] - b[k]).abs().max()) for k in a)


@pytest.mark.parametrize("ignite", [False, True])
def test_training_step_is_the_released_train_step(dm: MBODataModule, ignite: bool) -> None:
    """Two stacked networks (replicates), each stepped as the released code steps its one network:
    20 NLL-raising steps scaled by ‖w₀‖/‖g‖ per tensor of its own, the NLL gradient there (with
    IGNITE's penalty at the perturbed weights), clipped per tensor, Adam, perturbation removed.
    ``inner_lr`` 0.2 (the released 5e-3 hardly shows after Adam's normalised steps), 3 batches (so
    Adam's state sees the clip)."""
    settings = Ignite(grad_mode="exact", lambda_lr=0.5) if ignite else None
    model = make_model(dm, replicates=2, ignite=settings, inner_lr=0.2)
    model.connect_data(dm)  # each replicate's weights from its seed, as the trainer's fit sets them again
    before = [keras_network(model, r) for r in range(2)]
    batches = fit_batches(dm, model, 3)
    assert len(batches) == 3 and batches[0][0].shape == (2, 64, dm.input_dim)
    lmbda0 = 1e-3 if ignite else None
    for r in range(2):
        own = [(x[r], y[r]) for x, y in batches]
        expected, lmbda = released_train_steps(before[r], own, lmbda0, settings, inner_lr=0.2)
        assert_network_is(model, r, expected)
        if ignite:
            assert float(model.constraint.lmbda[r]) == pytest.approx(lmbda, rel=1e-9)
            assert abs(lmbda - lmbda0) > 1e-3
    # What the comparison can tell apart: no perturbation, no clip.
    own = [(x[0], y[0]) for x, y in batches]
    got = keras_network(model, 0)
    assert max_diff(got, before[0]) > 1e-3  # the steps did something
    assert max_diff(released_train_steps(before[0], own, lmbda0, settings, steps=0)[0], got) > 1e-6
    assert max_diff(released_train_steps(before[0], own, lmbda0, settings, inner_lr=0.2, clip=1e9)[0], got) > 1e-6


def test_input_noise_has_the_released_std(dm: MBODataModule) -> None:
    model = make_model(dm, noise_std=0.2)
    x = torch.zeros(1, 20000, 3, dtype=F64)
    assert float(model.noisy(x).std()) == pytest.approx(0.2, rel=0.02)
    assert torch.equal(make_model(dm, noise_std=0.0).noisy(x), x)


# --- search ----------------------------------------------------------------------------------------
def run_search(model: RoMA, dm: MBODataModule, x0: Tensor, ids: Tensor, num_total: int, steps: int,
               **settings: Any) -> tuple[Tensor, list[Tensor]]:
    search = model.search_objective(x0, dm.search_data(), ids, num_total)
    state = search.score.__self__
    labels: list[Tensor] = []

    def hook(x: Tensor, t: int) -> dict[str, float]:
        stats = search.before_step(x, t)
        labels.append(state.labels.clone())
        return stats

    cfg = model.search_defaults(dm.search_data())
    result = gradient_ascent(x0, search.score, steps, settings.get("lr", cfg.lr), cfg.optimizer, hook)
    assert set(result.stats) == {"adapt_loss_start", "adapt_loss_end"}
    return result.x, labels


@pytest.mark.parametrize("lr", [3e-3, 0.3])
def test_search_is_the_released_adaptation_and_update(dm: MBODataModule, lr: float) -> None:
    """Each design step: a fresh copy adapted 5 times (smoothness + label NLL, steps scaled by the
    model's own norms), Adam on the trust-region score, labels ← the copy's prediction; the
    first labels are the visible scores. ``lr`` 0.3 makes the designs move far."""
    model = make_model(dm, adapt_steps=5, inner_lr=0.05).eval()
    x0 = dm.starting_designs(C).to(F64)
    y0 = torch.sort(dm.y, descending=True).values[:C]
    got, labels = run_search(model, dm, x0, torch.arange(C), C, steps=3, lr=lr)
    expected, used = released_search(keras_network(model, 0), x0, y0, steps=3, adapt=5, inner_lr=0.05, lr=lr)
    torch.testing.assert_close(got, expected, **TOL)
    assert len(labels) == 3
    torch.testing.assert_close(labels[0], y0, rtol=0, atol=0)
    for a, b in zip(labels, used, strict=True):
        torch.testing.assert_close(a, b, **TOL)
    assert float((labels[2] - labels[1]).abs().max()) > 1e-6  # the labels do follow the copies


def test_search_never_changes_the_model(dm: MBODataModule) -> None:
    model = make_model(dm, adapt_steps=3, inner_lr=0.5).eval()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    x0 = dm.starting_designs(C).to(F64)
    search = model.search_objective(x0, dm.search_data(), torch.arange(C), C)
    search.before_step(x0, 0)
    adapted = search.score.__self__.temp
    assert max(float((adapted[k] - state[k]).abs().max()) for k in adapted) > 1e-4  # the copy moved
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())


def test_each_replicate_adapts_its_own_copy_on_its_own_candidates(dm: MBODataModule) -> None:
    """Two replicates searched together = each replicate's network searched alone; a process holding
    only the second block (DDP) uses the second network and the second block's labels."""
    settings = {"adapt_steps": 3, "inner_lr": 0.05}
    both = make_model(dm, replicates=2, **settings).eval()
    alone = []
    for r in range(2):
        single = make_model(dm, **settings).eval()
        single.load_state_dict({k: v[r:r + 1] for k, v in both.state_dict().items()})
        alone.append(single)
    x0 = dm.starting_designs(C).to(F64)
    together, _ = run_search(both, dm, x0.repeat(2, 1), torch.arange(2 * C), 2 * C, steps=3, lr=0.3)
    separate = [run_search(m, dm, x0, torch.arange(C), C, steps=3, lr=0.3)[0] for m in alone]
    torch.testing.assert_close(together, torch.cat(separate), **TOL)
    assert float((separate[0] - separate[1]).abs().max()) > 1e-4  # the networks differ
    second, _ = run_search(both, dm, x0, torch.arange(C, 2 * C), 2 * C, steps=3, lr=0.3)
    torch.testing.assert_close(second, separate[1], **TOL)


def test_starting_designs_must_be_the_top_visible_designs(dm: MBODataModule) -> None:
    model = make_model(dm)
    x0 = dm.starting_designs(C).to(F64)
    with pytest.raises(ValueError, match="top 4 visible designs"):
        model.search_objective(x0.flip(0), dm.search_data(), torch.arange(C), C)


# --- the command line ------------------------------------------------------------------------------
QUICK = ["--model.init_args.hidden", "[16,16]", "--model.init_args.adapt_steps", "2", "--ascent.steps", "3",
         "--trainer.enable_model_summary", "false"]


@pytest.mark.parametrize(("config", "method"), [("tfbind8/roma.yaml", "roma"),
                                                (["tfbind8/roma.yaml", "ignite.yaml"], "roma+ignite")])
def test_cli_fit_tfbind8(quick_fit, config: str | list[str], method: str) -> None:
    run, row = quick_fit(config, *QUICK)
    assert row["method"] == method and row["task"] == "TFBind8-Exact-v0"
    assert row["ascent"] == {"steps": 3, "lr": 0.003, "optimizer": "adam"}
    assert row["roma"]["adapt_steps"] == 2 and "unverified" in row["roma"]["settings"]
    assert ("ignite" in row) == method.endswith("ignite")
    if "ignite" in row:
        assert len(row["ignite"]["lambda"]) == 1 and row["ignite"]["lambda"][0] != 1e-3
    assert all(math.isfinite(row[k]) for k in ("score_100th", "score_50th", "mean_predicted_final"))
    assert np.load(run / "designs.npy").shape == (128, 8)


def test_cli_fit_is_reproducible(quick_fit) -> None:
    a_run, a = quick_fit("tfbind8/roma.yaml", *QUICK)
    b_run, b = quick_fit("tfbind8/roma.yaml", *QUICK)
    c_run, c = quick_fit("tfbind8/roma.yaml", *QUICK, "--seed_everything", "1")
    assert a["mean_predicted_final"] == b["mean_predicted_final"]
    assert np.array_equal(np.load(a_run / "designs.npy"), np.load(b_run / "designs.npy"))
    assert c["mean_predicted_final"] != a["mean_predicted_final"]


@pytest.mark.parametrize(("config", "method"), [("tfbind10/roma.yaml", "roma"),
                                                (["tfbind10/roma.yaml", "ignite.yaml"], "roma+ignite")])
def test_cli_fit_tfbind10(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tfbind10_of_any_size: None,
                          config: str | list[str], method: str) -> None:
    """TFBind10 is not shipped: synthetic shards in design-bench's layout stand in."""
    data = tmp_path / "data"
    write_shards(data, [distinct_designs(2000, seed=1)], [np.linspace(-1, 1, 2000, dtype=np.float32)[:, None]])
    monkeypatch.chdir(tmp_path)
    files = [config] if isinstance(config, str) else config
    stack = [a for c in files for a in ("--config", str(REPO / "configs" / c))]
    cli = main(["fit", *stack, "--data.data_dir", str(data),
                "--data.max_samples", "1000", "--trainer.max_epochs", "1", "--trainer.enable_progress_bar", "false",
                "--trainer.logger.init_args.save_dir", str(tmp_path / "logs"), *QUICK])
    row = read_result(Path(cli.trainer.log_dir))
    assert row["method"] == method and row["task"] == "TFBind10-Exact-v0"
    assert np.load(Path(cli.trainer.log_dir) / "designs.npy").shape == (128, 10)
