"""Tests of the Tri-mentoring LightningModule (lightning_mbo.methods.tri_mentoring; Chen et al., NeurIPS 2023).

The pure mentoring math has its own tests (tests/functional/test_tri_mentoring.py). Here: the
module's design ascent (per-candidate proxy copies mentored by a per-step hook, backends
``batched`` and ``higher``), its ablation flags, its independence from how candidates are
split over processes, its proxy pre-training (per-member splits, best-epoch selection, cosine
schedule) and a run of the command line.

Ascent tests use tiny untrained proxies (hidden (16, 16)) on a few hundred TFBind8 rows in
float64, so the two backends can be compared to rounding. Most of them use β and λ_s far
above the released 1e-3 and 0.1 (``LOUD``): mentoring then moves the proxy copies, the soft
labels and the designs by much more than rounding error, so every comparison below can fail
on a wrong implementation. The backends must agree for any β and λ_s.
"""

from __future__ import annotations

import inspect
import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from torch import Tensor

from lightning_mbo.cli import MBOTrainer, main
from lightning_mbo.data.datamodule import MBODataModule
from lightning_mbo.methods.tri_mentoring import TriMentoring
from lightning_mbo.nn import member_module, member_params
from lightning_mbo.search import SearchData, SearchSettings, gradient_ascent
from tests.conftest import read_result, shipped_tfbind8

REPO_ROOT = Path(__file__).resolve().parents[2]
F64 = torch.float64
HIDDEN = (16, 16)
ROWS = 300  # visible TFBind8 rows: all of them enter the outer MSE of the soft-label step
C = 4  # candidates
STEPS = 4  # ascent steps
LOUD = {"beta": 0.05, "lambda_s": 1000.0}
TOL = {"rtol": 1e-9, "atol": 1e-11}


# ----------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------


pytestmark = pytest.mark.usefixtures("one_thread")


def tfbind8(max_samples: int, dtype: torch.dtype = torch.float32, **kwargs: Any) -> MBODataModule:
    """The shipped TFBind8, 90/10 split, ``x`` and ``y`` cast to ``dtype``."""
    return shipped_tfbind8(max_samples, dtype, val_size=0.1, **kwargs)


@pytest.fixture(scope="module")
def dm64() -> MBODataModule:
    return tfbind8(ROWS, F64)


@pytest.fixture(scope="module")
def x0(dm64: MBODataModule) -> Tensor:
    return dm64.starting_designs(2 * C).to(F64)


def make_model(dm: MBODataModule, dtype: torch.dtype = F64, **kwargs: Any) -> TriMentoring:
    torch.manual_seed(0)
    model = TriMentoring(dm.input_dim, hidden=HIDDEN, **kwargs).to(dtype)
    return model.eval()


def proxy_copies(objective) -> dict[str, Tensor]:
    """The candidates' own proxy copies, ``(C, P, ...)`` in StackedMLP's layout, read from the
    ascent objective's closure (``state`` of the batched backend, ``proxies`` of ``higher``)."""
    captured = inspect.getclosurevars(objective).nonlocals
    if "state" in captured:
        return {n: t.detach().clone() for n, t in captured["state"].items()}
    if "proxies" in captured:
        per = [[member_params(m) for m in row] for row in captured["proxies"]]
        return {n: torch.stack([torch.stack([p[n] for p in row]) for row in per]) for n in per[0][0]}
    raise AssertionError(f"cannot find the proxy copies in the objective's closure: {sorted(captured)}")


def run_ascent(
    model: TriMentoring,
    dm: MBODataModule,
    x0: Tensor,
    ids: list[int] | None = None,
    num_total: int | None = None,
    steps: int = STEPS,
) -> SimpleNamespace:
    """The module's ascent exactly as DesignAscent runs it, recording the proxy copies after
    every mentoring step."""
    ids_t = torch.arange(len(x0)) if ids is None else torch.as_tensor(ids)
    data = dm.search_data()
    search = model.search_objective(x0, data, ids_t, num_total or len(x0))
    objective, hook = search.score, search.before_step
    cfg = model.search_defaults(data)
    copies: list[dict[str, Tensor]] = []

    def recording_hook(x: Tensor, t: int) -> dict[str, float] | None:
        stats = hook(x, t)
        copies.append(proxy_copies(objective))
        return stats

    result = gradient_ascent(x0, objective, steps, cfg.lr, cfg.optimizer, recording_hook if hook else None)
    return SimpleNamespace(x=result.x, trajectory=result.trajectory, stats=result.stats, copies=copies, hook=hook)


def initial_copies(model: TriMentoring, c: int) -> dict[str, Tensor]:
    return {n: v.detach().unsqueeze(0).expand(c, *v.shape).clone() for n, v in model.net.named_parameters()}


def max_diff(a: dict[str, Tensor], b: dict[str, Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[n] - b[n]).abs().max()) for n in a)


def assert_copies_close(a: dict[str, Tensor], b: dict[str, Tensor], **tol: float) -> None:
    assert a.keys() == b.keys()
    for n in a:
        torch.testing.assert_close(a[n], b[n], **(tol or TOL), msg=lambda m, n=n: f"{n}: {m}")


# ----------------------------------------------------------------------------------------------
# Settings
# ----------------------------------------------------------------------------------------------


def test_defaults_method_names_and_validation(dm64: MBODataModule) -> None:
    model = TriMentoring(dm64.input_dim, hidden=HIDDEN)
    assert model.search_defaults(dm64.search_data()) == SearchSettings(steps=100, lr=0.1, optimizer="adam")
    continuous = SearchData(dm64.x, dm64.y, discrete=False)
    assert model.search_defaults(continuous) == SearchSettings(steps=200, lr=1e-3, optimizer="adam")
    hp = model.hparams
    assert (hp.members, hp.neighbours, hp.delta, hp.beta, hp.lambda_s) == (3, 10, 0.1, 1e-3, 0.1)
    assert (hp.lr, hp.lr_schedule, hp.select_best, hp.voting, hp.soft_labels) == (0.1, "cosine", True, True, True)
    assert model.method_name() == "tri_mentoring"
    assert TriMentoring(dm64.input_dim, hidden=HIDDEN, mentoring=False).method_name() == "mean_of_3_proxies"
    assert TriMentoring.per_member_split
    with pytest.raises(ValueError, match="neighbours"):
        TriMentoring(dm64.input_dim, hidden=HIDDEN, neighbours=1)
    with pytest.raises(ValueError, match="backend"):
        TriMentoring(dm64.input_dim, hidden=HIDDEN, backend="vmap")  # type: ignore[arg-type]


def test_configs_hold_the_released_settings() -> None:
    common = ["--data.max_samples", "500", "--trainer.logger", "false"]
    tri = main(["--config", str(REPO_ROOT / "configs/tfbind8/tri_mentoring.yaml"), *common], run=False)
    hp = tri.model.hparams
    assert isinstance(tri.model, TriMentoring) and tri.model.method_name() == "tri_mentoring"
    assert tuple(hp.hidden) == (2048, 2048) and hp.activation == "relu" and hp.members == 3
    assert (hp.lr, hp.lr_schedule, hp.weight_decay, hp.select_best) == (0.1, "cosine", 0.0, True)
    assert (hp.neighbours, hp.delta, hp.beta, hp.lambda_s, hp.backend) == (10, 0.1, 1e-3, 0.1, "batched")
    assert tri.model.search_defaults(tri.datamodule.search_data()) == SearchSettings(100, 0.1, "adam")
    assert tri.trainer.max_epochs == 200
    assert (tri.datamodule.hparams.batch_size, tri.datamodule.hparams.val_size) == (128, 0.1)
    mean3 = main(["--config", str(REPO_ROOT / "configs/tfbind8/mean_of_3_proxies.yaml"), *common], run=False)
    assert not mean3.model.hparams.mentoring and mean3.model.method_name() == "mean_of_3_proxies"
    for key in ("members", "hidden", "lr", "lr_schedule", "select_best"):
        assert mean3.model.hparams[key] == hp[key], key


# ----------------------------------------------------------------------------------------------
# Ascent without mentoring is mean-ensemble ascent
# ----------------------------------------------------------------------------------------------


def test_no_mentoring_is_mean_ensemble_adam_ascent(dm64: MBODataModule, x0: Tensor) -> None:
    model = make_model(dm64, mentoring=False)
    search = model.search_objective(x0, dm64.search_data(), torch.arange(len(x0)), len(x0))
    assert search.before_step is None
    cfg = model.search_defaults(dm64.search_data())
    got = gradient_ascent(x0, search.score, **cfg.as_dict())

    # The same stacked proxies, averaged: bit-identical designs.
    stacked = gradient_ascent(x0, lambda x: model.net(x)[..., 0].mean(0), 100, 0.1, "adam")
    assert torch.equal(got.x, stacked.x) and torch.equal(got.trajectory, stacked.trajectory)

    # An independent reference: each proxy as a plain nn.Sequential, mean of the three.
    params = dict(model.net.named_parameters())
    members = [member_module({n: v[p].detach() for n, v in params.items()}) for p in range(3)]

    def mean_of_members(x: Tensor) -> Tensor:
        return torch.stack([m(x)[:, 0] for m in members]).mean(0)

    ref = gradient_ascent(x0, mean_of_members, 100, 0.1, "adam")
    torch.testing.assert_close(got.x, ref.x, rtol=0, atol=1e-9)
    torch.testing.assert_close(got.trajectory, ref.trajectory, rtol=0, atol=1e-9)  # the mean, not the sum
    assert float((got.x - x0).abs().max()) > 1.0  # the designs did move


# ----------------------------------------------------------------------------------------------
# The two backends
# ----------------------------------------------------------------------------------------------

VARIANTS = {
    "default": {},
    "no_voting": {"voting": False},
    "hard_labels": {"soft_labels": False},
    "five_members_k5": {"members": 5, "neighbours": 5},
}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_backends_agree_step_by_step(dm64: MBODataModule, x0: Tensor, variant: str) -> None:
    kwargs = {**LOUD, **VARIANTS[variant]}
    runs = {b: run_ascent(make_model(dm64, backend=b, **kwargs), dm64, x0[:C]) for b in ("batched", "higher")}
    b, h = runs["batched"], runs["higher"]
    assert len(b.copies) == len(h.copies) == STEPS
    for t in range(STEPS):
        assert_copies_close(b.copies[t], h.copies[t])
    torch.testing.assert_close(b.x, h.x, **TOL)
    torch.testing.assert_close(b.trajectory, h.trajectory, **TOL)
    assert b.stats.keys() == h.stats.keys() == {"disagreement", "soft_label_drift"}
    for key in b.stats:
        assert len(b.stats[key]) == len(h.stats[key]) == STEPS
        np.testing.assert_allclose(b.stats[key], h.stats[key], rtol=1e-9, atol=1e-12, err_msg=key)

    # The comparison is not vacuous: the proxies disagreed, were mentored, and (with soft labels)
    # the labels were refined.
    start = initial_copies(make_model(dm64, **kwargs), C)
    assert max_diff(b.copies[-1], start) > 1e-3
    assert min(b.stats["disagreement"]) > 0
    if kwargs.get("soft_labels", True):
        assert min(b.stats["soft_label_drift"]) > 1e-4


def test_backends_agree_float32_released_settings() -> None:
    dm = tfbind8(ROWS)
    x0 = dm.starting_designs(C)
    runs = {b: run_ascent(make_model(dm, torch.float32, backend=b), dm, x0, steps=3) for b in ("batched", "higher")}
    b, h = runs["batched"], runs["higher"]
    torch.testing.assert_close(b.x, h.x, rtol=0, atol=1e-5)
    for t in range(3):
        assert_copies_close(b.copies[t], h.copies[t], rtol=0, atol=1e-5)
    assert b.stats["disagreement"] == h.stats["disagreement"]
    np.testing.assert_allclose(b.stats["soft_label_drift"], h.stats["soft_label_drift"], rtol=1e-3, atol=1e-9)
    start = initial_copies(make_model(dm, torch.float32), C)
    assert max_diff(b.copies[-1], start) > 1e-6  # β = 1e-3 moves the copies only a little, but it does


# ----------------------------------------------------------------------------------------------
# Mentoring changes copies, never the trained proxies
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["batched", "higher"])
def test_trained_proxies_untouched_by_ascent(dm64: MBODataModule, x0: Tensor, backend: str) -> None:
    model = make_model(dm64, backend=backend, **LOUD)
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    first = run_ascent(model, dm64, x0[:C])
    after = model.state_dict()
    assert before.keys() == after.keys()
    for k in before:
        assert torch.equal(before[k], after[k]), k
    assert all(p.grad is None for p in model.parameters())
    assert max_diff(first.copies[-1], initial_copies(model, C)) > 1e-3  # the copies were mentored
    # A second ascent starts from fresh copies of the (unchanged) proxies: identical results.
    second = run_ascent(model, dm64, x0[:C])
    assert torch.equal(first.x, second.x)
    assert first.stats == second.stats


def test_a_single_proxy_is_never_mentored(dm64: MBODataModule, x0: Tensor) -> None:
    # With one proxy the consensus is its own labels: no disagreement, so its copies stay the
    # trained proxy bit for bit and ascent is plain ascent on it (mentoring acts only on P_m).
    model = make_model(dm64, members=1, **LOUD)
    run = run_ascent(model, dm64, x0[:C])
    assert run.stats["disagreement"] == [0.0] * STEPS and run.stats["soft_label_drift"] == [0.0] * STEPS
    assert max_diff(run.copies[-1], initial_copies(model, C)) == 0.0
    plain = run_ascent(make_model(dm64, members=1, mentoring=False), dm64, x0[:C])
    torch.testing.assert_close(run.x, plain.x, **TOL)


# ----------------------------------------------------------------------------------------------
# Ablations
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def default_run(dm64: MBODataModule, x0: Tensor) -> SimpleNamespace:
    return run_ascent(make_model(dm64, **LOUD), dm64, x0[:C])


ABLATIONS = {
    "voting": {"voting": False},
    "soft_labels": {"soft_labels": False},
    "neighbours": {"neighbours": 5},
    "delta": {"delta": 0.5},
    "members": {"members": 5},
    "mentoring": {"mentoring": False},
}


@pytest.mark.parametrize("name", list(ABLATIONS))
def test_ablation_flags_change_behaviour(
    dm64: MBODataModule, x0: Tensor, default_run: SimpleNamespace, name: str
) -> None:
    kwargs = ABLATIONS[name]
    model = make_model(dm64, **LOUD, **kwargs)
    run = run_ascent(model, dm64, x0[:C])
    assert torch.isfinite(run.x).all()
    assert float((run.x - default_run.x).abs().max()) > 1e-6, "the designs did not change"
    if name == "mentoring":
        assert run.hook is None and run.copies == []
        return
    members = kwargs.get("members", 3)
    assert run.copies[-1]["layers.0.weight"].shape == (C, members, dm64.input_dim, HIDDEN[0])
    if name != "members":  # same proxies, other mentoring: other copies
        assert max_diff(run.copies[-1], default_run.copies[-1]) > 1e-6
    assert run.stats["disagreement"] != default_run.stats["disagreement"] or name == "soft_labels"
    drift = run.stats["soft_label_drift"]
    if name == "soft_labels":
        assert default_run.stats["disagreement"][0] == run.stats["disagreement"][0]  # same first labels
        assert drift == [0.0] * STEPS and min(default_run.stats["soft_label_drift"]) > 1e-4
    else:
        assert min(drift) > 1e-4
    if name == "neighbours":
        # K = 5 gives 10 pairs, so at most 10 disagreements per proxy (K = 10 exceeds that here).
        assert max(run.stats["disagreement"]) <= 10 < max(default_run.stats["disagreement"])


def test_voting_and_summed_rank_consensus(dm64: MBODataModule) -> None:
    """The module's consensus: majority vote, or the ranking of the summed prediction."""
    pred = torch.tensor([[0.0, 1.0, 5.0], [0.0, 1.0, -5.0], [3.0, 0.0, 0.0]])  # 3 proxies, K = 3
    vote, vote_mask = make_model(dm64)._consensus(pred)
    summed, summed_mask = make_model(dm64, voting=False)._consensus(pred)
    # pairs (0,1), (0,2), (1,2); labels [0,0,0], [0,1,1], [1,1,0]; votes 1/3, 2/3, 1/3
    assert vote.tolist() == [0.0, 1.0, 0.0]
    # sums [3, 2, 0]: 0 > 1, 0 > 2, 1 > 2
    assert summed.tolist() == [1.0, 1.0, 1.0]
    assert vote_mask.tolist() == [[False, True, False], [False, False, True], [True, False, False]]
    assert summed_mask.tolist() == [[True, True, True], [True, False, False], [False, False, True]]


# ----------------------------------------------------------------------------------------------
# Candidates split over processes (DDP)
# ----------------------------------------------------------------------------------------------

SPLITS = {
    "halves": ([0, 1, 2, 3], [4, 5, 6, 7]),
    "uneven_interleaved": ([0, 3, 6], [1, 2, 4, 5, 7]),
}


@pytest.mark.parametrize("split", list(SPLITS))
def test_split_over_processes_gives_the_same_designs(dm64: MBODataModule, x0: Tensor, split: str) -> None:
    n = len(x0)
    together = run_ascent(make_model(dm64, **LOUD), dm64, x0)
    x = torch.empty_like(x0)
    for part in SPLITS[split]:
        x[part] = run_ascent(make_model(dm64, **LOUD), dm64, x0[part], ids=part, num_total=n).x
    torch.testing.assert_close(x, together.x, **TOL)
    # The noise really is per candidate index: the second half ascended as if it were the first
    # (wrong indices) ends elsewhere.
    wrong = run_ascent(make_model(dm64, **LOUD), dm64, x0[4:], ids=[0, 1, 2, 3], num_total=n).x
    assert float((wrong - together.x[4:]).abs().max()) > 1e-6


@pytest.mark.slow
def test_split_over_processes_higher_backend(dm64: MBODataModule, x0: Tensor) -> None:
    n = len(x0)
    together = run_ascent(make_model(dm64, backend="higher", **LOUD), dm64, x0)
    parts = [run_ascent(make_model(dm64, backend="higher", **LOUD), dm64, x0[p], ids=p, num_total=n).x
             for p in SPLITS["halves"]]
    torch.testing.assert_close(torch.cat(parts), together.x, **TOL)


# ----------------------------------------------------------------------------------------------
# Pre-training
# ----------------------------------------------------------------------------------------------

EPOCHS = 8


class Recorder(pl.Callback):
    """Per epoch: the lr in use, and after validation each member's weights and validation
    Pearson correlation (computed here, independently of the module's torchmetrics)."""

    def __init__(self) -> None:
        self.lrs: list[float] = []
        self.pearson: list[list[float]] = []
        self.weights: list[dict[str, Tensor]] = []

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.lrs.append(trainer.optimizers[0].param_groups[0]["lr"])

    @torch.no_grad()
    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        dm = trainer.datamodule
        row = []
        for m in range(pl_module.num_members):
            rows = dm.val_rows[m]
            pred = pl_module(dm.x[rows])[0][m]
            r = torch.corrcoef(torch.stack([pred, dm.y[rows]]))[0, 1]
            row.append(float(torch.nan_to_num(r, nan=-1.0)))
        self.pearson.append(row)
        self.weights.append({k: v.detach().clone() for k, v in pl_module.named_parameters()})


@pytest.fixture(scope="module")
def pretrained() -> SimpleNamespace:
    dm = tfbind8(1000, batch_size=128)
    torch.manual_seed(0)
    model = TriMentoring(dm.input_dim, hidden=HIDDEN)  # released lr 0.1, cosine, best Pearson
    init = {k: v.detach().clone() for k, v in model.named_parameters()}
    rec = Recorder()
    trainer = MBOTrainer(
        max_epochs=EPOCHS, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, callbacks=[rec],
    )
    trainer.fit(model, dm)
    return SimpleNamespace(dm=dm, model=model, rec=rec, trainer=trainer, init=init)


def test_each_proxy_has_its_own_split_and_init(pretrained: SimpleNamespace) -> None:
    dm, n = pretrained.dm, len(pretrained.dm.y)
    assert dm.train_rows.shape == (3, 900) and dm.val_rows.shape == (3, 100)
    for m in range(3):
        train, val = set(dm.train_rows[m].tolist()), set(dm.val_rows[m].tolist())
        assert not train & val and len(train | val) == n
    for a, b in ((0, 1), (0, 2), (1, 2)):
        assert set(dm.val_rows[a].tolist()) != set(dm.val_rows[b].tolist())
        assert not torch.equal(pretrained.init["net.layers.0.weight"][a], pretrained.init["net.layers.0.weight"][b])
    shared_train, _ = dm.split(3, per_member=False)
    assert all(torch.equal(shared_train[0], shared_train[m]) for m in range(3))  # the non-Tri-mentoring case
    for m in range(3):
        assert f"members/val_pearson_m{m}" in pretrained.trainer.callback_metrics


def test_select_best_restores_each_proxys_best_epoch(pretrained: SimpleNamespace) -> None:
    rec, model = pretrained.rec, pretrained.model
    pearson = torch.tensor(rec.pearson)  # (epochs, members)
    assert pearson.shape == (EPOCHS, 3)
    torch.testing.assert_close(model.best.score, pearson.max(0).values, rtol=0, atol=1e-4)
    best = pearson.argmax(0).tolist()
    assert min(best) < EPOCHS - 1, f"best epochs {best}: every proxy peaked last, the test would not discriminate"
    params = dict(model.named_parameters())
    for m in range(3):
        # The restored weights are one snapshot of a best (to 1e-5) epoch, and not the last one if
        # that one is worse.
        near_best = [e for e in range(EPOCHS) if pearson[e, m] >= pearson[:, m].max() - 1e-5]
        matches = [e for e in near_best if all(torch.equal(params[k][m], rec.weights[e][k][m]) for k in params)]
        assert matches, f"proxy {m}: restored weights match no best epoch {near_best}"
        if best[m] != EPOCHS - 1 and pearson[-1, m] < pearson[:, m].max() - 1e-5:
            assert not torch.equal(params["net.layers.0.weight"][m], rec.weights[-1]["net.layers.0.weight"][m])


def test_cosine_schedule_decays_to_zero(pretrained: SimpleNamespace) -> None:
    lrs, lr0 = pretrained.rec.lrs, 0.1
    assert len(lrs) == EPOCHS
    expected = [lr0 * 0.5 * (1 + math.cos(math.pi * e / EPOCHS)) for e in range(EPOCHS)]
    np.testing.assert_allclose(lrs, expected, rtol=1e-12, atol=1e-15)
    assert all(a > b for a, b in zip(lrs, lrs[1:], strict=False))
    assert lrs[-1] < 0.05 * lr0  # the last epoch trains at lr0 (1 - cos(pi / T)) / 2
    assert pretrained.trainer.optimizers[0].param_groups[0]["lr"] < 1e-15  # and the schedule ends at 0


# ----------------------------------------------------------------------------------------------
# The command line
# ----------------------------------------------------------------------------------------------


QUICK = str(REPO_ROOT / "configs/quick.yaml")


def cli_fit(tmp_path: Path, config: str, *extra: str) -> dict[str, Any]:
    main([
        "fit", "--config", str(REPO_ROOT / "configs/tfbind8" / config), "--config", QUICK,
        "--trainer.max_epochs", "1", "--ascent.steps", "3", "--data.max_samples", "2000",
        "--trainer.logger.init_args.save_dir", str(tmp_path), "--trainer.enable_progress_bar", "false", *extra,
    ])
    (path,) = tmp_path.rglob("results.json")
    return {"results": read_result(path.parent), "dir": path.parent}


@pytest.mark.parametrize(("config", "method"), [("tri_mentoring.yaml", "tri_mentoring"),
                                                ("mean_of_3_proxies.yaml", "mean_of_3_proxies")])
def test_cli_fit_writes_results(tmp_path: Path, config: str, method: str) -> None:
    out = cli_fit(tmp_path, config, "--model.init_args.hidden", "[16,16]")
    res = out["results"]
    assert res["method"] == method and res["task"] == "TFBind8-Exact-v0"
    assert res["ascent"] == {"steps": 3, "lr": 0.1, "optimizer": "adam"} and res["num_candidates"] == 128
    assert all(math.isfinite(res[k]) for k in ("score_100th", "score_80th", "score_50th", "mean_predicted_final"))
    assert np.load(out["dir"] / "designs.npy").shape == (128, 8)
    assert np.load(out["dir"] / "scores.npy").shape == (128,)


@pytest.mark.slow
def test_cli_fit_quick_width(tmp_path: Path) -> None:
    """The same run at quick.yaml's width (2x256), as in the README."""
    res = cli_fit(tmp_path, "tri_mentoring.yaml")["results"]
    assert res["method"] == "tri_mentoring" and res["ascent"]["steps"] == 3


def test_ascend_on_checkpoint_reproduces_fit(tmp_path: Path) -> None:
    # The mean-of-3 baseline shares Tri-mentoring's pre-training and best-epoch selection, and
    # ascends fast; which proxies ascend is what is checked here.
    common = [
        "--config", str(REPO_ROOT / "configs/tfbind8/mean_of_3_proxies.yaml"), "--config", QUICK,
        "--ascent.steps", "3", "--data.max_samples", "2000", "--model.init_args.hidden", "[16,16]",
        "--trainer.logger.init_args.save_dir", str(tmp_path), "--trainer.enable_progress_bar", "false",
    ]
    main(["fit", *common, "--trainer.max_epochs", "6"])
    (fit_dir,) = [p.parent for p in tmp_path.rglob("results.json")]
    ckpt = torch.load(fit_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert "best_state" in ckpt
    main(["ascend", *common, "--ckpt_path", str(fit_dir / "checkpoints" / "last.ckpt")])
    (ascend_dir,) = [p.parent for p in tmp_path.rglob("results.json") if p.parent != fit_dir]
    fit, again = (read_result(d) for d in (fit_dir, ascend_dir))
    assert again["mean_predicted_final"] == pytest.approx(fit["mean_predicted_final"], rel=1e-6)


def test_shared_proxies_mode(dm64: MBODataModule, x0: Tensor) -> None:
    """Shared mode (not the released behaviour): with one candidate it IS per-candidate mentoring
    (the pooled pairs are that candidate's pairs); with several, one set of proxies moves for all."""
    per_candidate = run_ascent(make_model(dm64, **LOUD), dm64, x0[:1])
    shared_model = make_model(dm64, shared_proxies=True, **LOUD)
    assert shared_model.method_name() == "tri_mentoring_shared"
    shared = run_ascent(shared_model, dm64, x0[:1])
    torch.testing.assert_close(shared.x, per_candidate.x, **TOL)
    for key, values in per_candidate.stats.items():
        assert shared.stats[key] == pytest.approx(values, rel=1e-9), key
    for a, b in zip(shared.copies, per_candidate.copies, strict=True):
        assert_copies_close(a, b, **TOL)
    # Several candidates: one (1, P, ...) set, mentored on the pooled within-candidate pairs, which
    # differs from every candidate mentoring its own copies; the trained proxies stay untouched.
    before = {k: v.clone() for k, v in shared_model.state_dict().items()}
    many = run_ascent(shared_model, dm64, x0)
    assert next(iter(many.copies[-1].values())).shape[0] == 1
    assert not torch.allclose(many.x, run_ascent(make_model(dm64, **LOUD), dm64, x0).x)
    assert all(torch.equal(v, shared_model.state_dict()[k]) for k, v in before.items())


@pytest.mark.parametrize("backend", ["batched", "higher"])
def test_method_neighbourhood_is_x_plus_delta_times_its_seeded_noise(
    dm64: MBODataModule, x0: Tensor, backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The points each candidate's proxies are mentored on: ``x + δ ε`` with ``ε ~ N(0, I)``
    drawn ``(num_total, K, D)`` from ``mentoring_seed`` (paper Section 3.1; δ = 0.5 here, so
    δ² or 2δ would show)."""
    from lightning_mbo.methods import tri_mentoring

    seen: list[Tensor] = []
    name = "mentor_batched" if backend == "batched" else "mentor_proxy_higher"
    real = getattr(tri_mentoring, name)

    def spy(*args: Any, **kwargs: Any) -> Any:
        seen.append(args[1].detach().clone())  # x_nb: (C, K, D) batched, (K, D) per candidate
        return real(*args, **kwargs)

    monkeypatch.setattr(tri_mentoring, name, spy)
    delta, k = 0.5, 10
    model = make_model(dm64, delta=delta, neighbours=k, backend=backend, mentoring_seed=7)
    ids = torch.tensor([1, 3, 4])  # three of six candidates, as one process of a split run
    x = x0[ids]
    model.search_objective(x, dm64.search_data(), ids, 6).before_step(x, 0)
    noise = torch.randn((6, k, x.shape[1]), generator=torch.Generator().manual_seed(7))[ids].to(F64)
    expected = x.unsqueeze(1) + delta * noise
    if backend == "batched":
        got = seen[0]
    else:  # one call per candidate and proxy that disagrees somewhere; each sees its candidate's points
        assert seen
        got = None
        for points in seen:
            assert any(torch.equal(points, e) for e in expected)
    if got is not None:
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)
    assert abs(float(noise.std()) - 1.0) < 0.1
