"""MBODataModule and MemberBatches (lightning_mbo.data)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import lightning_mbo.data.datamodule as datamodule_module
from lightning_mbo.data import MBODataModule, MemberBatches
from lightning_mbo.tasks import QUADRATIC, Task

N_VISIBLE = 32_898  # TFBind8's visible rows


def _attach(dm: MBODataModule, members: int = 3, per_member_split: bool = False, epoch: int = 0) -> SimpleNamespace:
    """Connect ``dm`` for ``members`` stacked networks and attach a stand-in trainer (its epoch)."""
    dm.connect(members=members, per_member_split=per_member_split)
    trainer = SimpleNamespace(current_epoch=epoch)
    dm.trainer = trainer
    return trainer


def _batches(dm: MBODataModule) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return list(dm.train_dataloader())


@pytest.fixture(scope="module")
def dm() -> MBODataModule:
    """A read-only TFBind8 datamodule (tests that attach a trainer build their own)."""
    return MBODataModule()


def test_input_dim_right_after_construction(dm):
    assert dm.input_dim == 24
    assert dm.x.shape == (N_VISIBLE, 24) and dm.y.shape == (N_VISIBLE,)


def test_train_batches_are_member_major():
    dm = MBODataModule(batch_size=128)
    _attach(dm, members=3)
    dm.setup("fit")
    batches = _batches(dm)
    n_train = N_VISIBLE - 200
    assert len(batches) == math.ceil(n_train / 128) == 256
    x, y, rows = batches[0]
    assert rows == 128
    assert x.shape == (3, 128, 24) and y.shape == (3, 128)
    assert x.dtype == y.dtype == torch.float32
    assert batches[-1][0].shape == (3, n_train - 255 * 128, 24)
    # Each member sees each of its training rows exactly once per epoch, in its own order.
    ys = torch.cat([b[1] for b in batches], dim=1)
    expected = torch.sort(dm.y[dm.train_rows[0]]).values
    for m in range(3):
        torch.testing.assert_close(torch.sort(ys[m]).values, expected, rtol=0, atol=0)
    assert not torch.equal(ys[0], ys[1]) and not torch.equal(ys[1], ys[2])


def test_batches_pair_features_with_their_scores():
    dm = MBODataModule(batch_size=64)
    _attach(dm, members=2)
    ds = MemberBatches(dm.x, dm.y, dm.split(2, False)[0], 64, True, 0)
    order = ds.order(0)
    x, y, _ = next(iter(ds))
    torch.testing.assert_close(x, dm.x[order[:, :64]], rtol=0, atol=0)
    torch.testing.assert_close(y, dm.y[order[:, :64]], rtol=0, atol=0)


def test_one_member_by_default():
    dm = MBODataModule()
    x, y, _ = next(iter(dm.train_dataloader()))
    assert x.shape == (1, 128, 24) and y.shape == (1, 128)


def test_same_seed_same_batches_other_seed_other_batches():
    runs = []
    for seed in (0, 0, 1):
        dm = MBODataModule(seed=seed)
        _attach(dm, members=3)
        dm.setup("fit")
        runs.append(next(iter(dm.train_dataloader())))
    assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1], runs[1][1])
    assert not torch.equal(runs[0][1], runs[2][1])


def test_epochs_draw_new_orders():
    dm = MBODataModule()
    trainer = _attach(dm, members=2)
    dm.setup("fit")
    loader = dm.train_dataloader()
    first = next(iter(loader))[1]
    again = next(iter(loader))[1]
    trainer.current_epoch = 1
    second = next(iter(loader))[1]
    assert torch.equal(first, again)  # the order depends on (seed, epoch) only
    assert not torch.equal(first, second)
    # The same rows, in another order.
    ds = MemberBatches(dm.x, dm.y, dm.train_rows, 128, True, 0)
    assert torch.equal(ds.order(0).sort(1).values, ds.order(1).sort(1).values)
    assert not torch.equal(ds.order(0), ds.order(1))


def test_no_shuffle_keeps_row_order():
    rows = torch.arange(10).reshape(1, 10)
    ds = MemberBatches(torch.arange(10.0)[:, None], torch.arange(10.0), rows, 4, False, 0, drop_last=True)
    assert len(ds) == 2
    assert [b[1].tolist() for b in ds] == [[[0.0, 1.0, 2.0, 3.0]], [[4.0, 5.0, 6.0, 7.0]]]


@pytest.mark.parametrize("batch_size", [128, 7])
def test_two_ranks_split_the_global_batch(monkeypatch, batch_size):
    dm = MBODataModule(batch_size=batch_size)
    _attach(dm, members=3)
    dm.setup("fit")
    single = _batches(dm)
    per_rank = []
    for rank in (0, 1):
        monkeypatch.setattr(datamodule_module, "dist_rank_world", lambda rank=rank: (rank, 2))
        per_rank.append(_batches(dm))
    assert len(per_rank[0]) == len(per_rank[1]) == len(single)
    for (x, y, n), (x0, y0, n0), (x1, y1, n1) in zip(single, *per_rank, strict=True):
        assert n == n0 == n1 == x.shape[1]  # every rank knows the global batch's size
        assert torch.equal(torch.cat([x0, x1], dim=1), x)
        assert torch.equal(torch.cat([y0, y1], dim=1), y)
    assert per_rank[0][0][0].shape[1] == math.ceil(batch_size / 2)


def test_validation_split(dm):
    dm2 = MBODataModule()
    _attach(dm2, members=3)
    dm2.setup("fit")
    train, val = dm2.train_rows, dm2.val_rows
    assert train.shape == (3, N_VISIBLE - 200) and val.shape == (3, 200)
    # One split shared by all members, disjoint, covering every visible row.
    assert torch.equal(val[0], val[1]) and torch.equal(train[0], train[2])
    assert torch.equal(torch.sort(torch.cat([train[0], val[0]])).values, torch.arange(N_VISIBLE))
    (x, y, _), = list(dm2.val_dataloader())
    assert x.shape == (3, 200, 24) and y.shape == (3, 200)
    torch.testing.assert_close(y[0], dm2.y[val[0]], rtol=0, atol=0)


def test_per_member_split():
    dm = MBODataModule()
    _attach(dm, members=3, per_member_split=True)
    dm.setup("fit")
    assert dm.val_rows.shape == (3, 200)
    assert not torch.equal(dm.val_rows[0], dm.val_rows[1])
    for m in range(3):
        rows = torch.cat([dm.train_rows[m], dm.val_rows[m]])
        assert torch.equal(torch.sort(rows).values, torch.arange(N_VISIBLE))


def test_fractional_val_size_and_too_large():
    dm = MBODataModule(val_size=0.1)
    assert dm.n_val == round(0.1 * N_VISIBLE) == 3290
    with pytest.raises(ValueError, match="leaves no training rows"):
        MBODataModule(val_size=N_VISIBLE)
    with pytest.raises(ValueError, match="batch_size"):
        MBODataModule(batch_size=0)


def test_normalised_features_and_scores(dm):
    x, y = dm.x.double(), dm.y.double()
    torch.testing.assert_close(x.mean(0), torch.zeros(24, dtype=torch.float64), rtol=0, atol=1e-5)
    torch.testing.assert_close(x.std(0, unbiased=False), torch.ones(24, dtype=torch.float64), rtol=0, atol=1e-5)
    assert abs(y.mean().item()) < 1e-5 and abs(y.std(unbiased=False).item() - 1) < 1e-5
    # Statistics of the visible rows' logits, in float64 numpy.
    feats = Task("TFBind8-Exact-v0").encode(Task("TFBind8-Exact-v0").x).numpy().astype(np.float64)
    np.testing.assert_allclose(dm.x_mean.numpy(), feats.mean(0), rtol=0, atol=1e-5)
    np.testing.assert_allclose(dm.x_std.numpy(), feats.std(0), rtol=1e-5)
    torch.testing.assert_close(dm.denormalize_y(dm.y), torch.as_tensor(dm.task.y), rtol=0, atol=1e-6)


def test_without_normalisation():
    dm = MBODataModule(normalize_x=False, normalize_y=False)
    torch.testing.assert_close(dm.x[:5], dm.task.encode(dm.task.x[:5]), rtol=0, atol=0)
    torch.testing.assert_close(dm.y, torch.as_tensor(dm.task.y), rtol=0, atol=0)


def test_starting_designs_decode_to_top_visible(dm):
    z = dm.starting_designs(128)
    assert z.shape == (128, 24)
    top_x, top_y = dm.task.top_k(128)
    designs = dm.decode(z)
    np.testing.assert_array_equal(designs, top_x)
    np.testing.assert_array_equal(dm.score(designs), top_y)
    assert top_y[0] == np.float32(0.43929616)
    # Normalised: the raw logits are back after de-normalising.
    torch.testing.assert_close(dm.denormalize_x(z), dm.task.encode(top_x), rtol=0, atol=1e-5)


def test_continuous_starting_designs_round_trip():
    dm = MBODataModule(task=QUADRATIC, val_size=100)
    assert dm.input_dim == 6
    top_x, _ = dm.task.top_k(16)
    np.testing.assert_allclose(dm.decode(dm.starting_designs(16)), top_x, rtol=0, atol=1e-6)
    assert dm.normalize_score(np.array([dm.task.y_max]))[0] == pytest.approx(1.0)


def test_state_dict_round_trip(dm, tmp_path):
    state = dm.state_dict()
    assert set(state) == {"x_mean", "x_std", "y_mean", "y_std"}
    assert state["x_mean"].shape == (24,)
    torch.save(state, tmp_path / "dm.pt")
    other = MBODataModule()
    other.load_state_dict(torch.load(tmp_path / "dm.pt"))
    for key, value in state.items():
        assert torch.equal(getattr(other, key), value)


def test_state_dict_mismatch_is_an_error(dm):
    other = MBODataModule(max_samples=1000)
    with pytest.raises(ValueError, match="normalisation statistic x_mean differs"):
        other.load_state_dict(dm.state_dict())
    unnormalised = MBODataModule(normalize_x=False)
    with pytest.raises(ValueError, match="trained on other data"):
        unnormalised.load_state_dict(dm.state_dict())


def test_bootstrap_weights_are_per_member_resample_counts():
    """design-baselines' bootstrap: member m's weight of a row is how often it is drawn in n draws
    with replacement from its n training rows; held-out rows weigh 0."""
    dm = MBODataModule(max_samples=1000, bootstrap=True)
    _attach(dm, members=3)
    dm.setup("fit")
    w = dm.bootstrap_weights()
    n_train = dm.train_rows.shape[1]
    assert w.shape == (3, 1000)
    assert torch.all(w.sum(1) == n_train) and torch.all(w == w.round()) and w.min() >= 0
    assert torch.all(w[:, dm.val_rows[0]] == 0)
    assert not torch.equal(w[0], w[1])  # each member its own resample
    assert torch.equal(w, dm.bootstrap_weights())  # seeded
    # About 1/e of the rows are never drawn.
    assert abs(float((w[:, dm.train_rows[0]] == 0).float().mean()) - math.exp(-1)) < 0.05
    # Batches carry each row's weight and the global batch's total.
    x, y, rows, bw, total = next(iter(dm.train_dataloader()))
    assert bw.shape == y.shape == (3, rows) and torch.equal(total, bw.sum(1))
    plain = MBODataModule(max_samples=1000)
    _attach(plain, members=3)
    assert len(next(iter(plain.train_dataloader()))) == 3
