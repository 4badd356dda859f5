"""The shard reader, data search and the exact oracle on synthetic TFBind10 shards (METHODS 1.1).

The synthetic shards are far smaller than TFBind10's 84 shards of 8.3 M rows, so this module reads
them as TFBind10 without the registry's expected size (tests/tasks/test_data_source.py checks it).
"""

from __future__ import annotations

import numpy as np
import pytest

from lightning_mbo.tasks import BadDataError, DesignNotFoundError, MissingDataError, Task
from lightning_mbo.tasks.io import DATA_DIR_ENV, HF_MIRROR

TFBIND10 = "TFBind10-Exact-v0"


@pytest.fixture(autouse=True)
def _small_tfbind10(tfbind10_of_any_size: None) -> None:
    """Every test here reads small synthetic TFBind10 shards."""


def _y(values) -> np.ndarray:
    return np.asarray(values, dtype=np.float32).reshape(-1, 1)


# --- reading shards ----------------------------------------------------------------------
def test_shards_concatenate_in_numeric_order(tfbind10_shards):
    root, xs, ys = tfbind10_shards
    task = Task(TFBIND10, data_dir=root)
    np.testing.assert_array_equal(task.x_all, np.concatenate(xs))
    np.testing.assert_array_equal(task.y_all, np.concatenate(ys).reshape(-1))
    # Shard 10 follows shard 9 (string order would put it after shard 1).
    np.testing.assert_array_equal(task.y_all[50:55], np.float32([10.0, 10.1, 10.2, 10.3, 10.4]))
    assert task.x_all.dtype == np.int32 and task.y_all.dtype == np.float32
    assert task.y_all.shape == (60,)


def test_last_occurrence_wins_in_shard_order(tmp_path, shard_writer, make_designs):
    d = make_designs(40, seed=2)
    dup, dup2 = d[0], d[1]
    xs = [d[2 + 3 * i:5 + 3 * i].copy() for i in range(11)]
    ys = [_y([i, i, i]) for i in range(11)]
    xs[0][0], ys[0][0] = dup, 0.5   # first occurrence
    xs[9][1], ys[9][1] = dup, 9.5   # last in string order (0, 1, 10, 2, ..., 9)
    xs[10][2], ys[10][2] = dup, 10.5  # last in numeric order: this one wins
    xs[3][0], ys[3][0] = dup2, 3.25  # twice within one shard: the later row wins
    xs[3][2], ys[3][2] = dup2, 3.75
    shard_writer(tmp_path, xs, ys)
    task = Task(TFBIND10, data_dir=tmp_path)
    assert task.x_all.shape == (33, 10)
    np.testing.assert_array_equal(task.score(np.stack([dup, dup2])), np.float32([10.5, 3.75]))
    # 33 rows, two designs three times and twice: 30 distinct keys.
    assert len(task.oracle) == 30
    # Every other design scores its own row.
    singles = np.ones(33, dtype=bool)
    singles[[0, 9 * 3 + 1, 10 * 3 + 2, 9, 11]] = False
    np.testing.assert_array_equal(task.score(task.x_all[singles]), task.y_all[singles])


def test_design_not_in_table_raises(tfbind10_shards, make_designs):
    root, xs, _ = tfbind10_shards
    task = Task(TFBIND10, data_dir=root)
    known = {tuple(r) for r in np.concatenate(xs)}
    unknown = next(r for r in make_designs(100, seed=99) if tuple(r) not in known)
    with pytest.raises(DesignNotFoundError, match="not in the oracle's table") as err:
        task.score(np.stack([xs[0][0], unknown]))
    assert isinstance(err.value, KeyError)
    assert str(unknown.tolist()) in str(err.value)


def test_shard_index_gap_is_an_error(tmp_path, shard_writer, make_designs):
    d = make_designs(9)
    shard_writer(tmp_path, [d[:3], d[3:6], d[6:]], [_y([0] * 3)] * 3, x_indices=[0, 1, 3], y_indices=[0, 1, 3])
    with pytest.raises(BadDataError, match=r"shards \[2\] are missing"):
        Task(TFBIND10, data_dir=tmp_path)


# --- the visible split and subsampling -----------------------------------------------------
def test_visible_split_keeps_ties_at_the_percentile(tmp_path, shard_writer, make_designs):
    y = np.float32([3, 0, 6, 3, 1, 4, 3, 2, 5, 3])  # median 3, four rows tie at it
    d = make_designs(10)
    shard_writer(tmp_path, [d[:3], d[3:6], d[6:]], [_y(y[:3]), _y(y[3:6]), _y(y[6:])])
    task = Task(TFBIND10, data_dir=tmp_path)
    np.testing.assert_array_equal(task.visible, [0, 1, 3, 4, 6, 7, 9])
    np.testing.assert_array_equal(task.y, np.float32([3, 0, 3, 1, 3, 2, 3]))
    np.testing.assert_array_equal(task.x, d[[0, 1, 3, 4, 6, 7, 9]])


def test_visible_split_linear_percentile(tmp_path, shard_writer, make_designs):
    # Linear percentile of (0, 1, 2, 3) at 50 is 1.5: two rows, however the tie rule goes.
    shard_writer(tmp_path, [make_designs(4)], [_y([3, 0, 2, 1])])
    assert sorted(Task(TFBIND10, data_dir=tmp_path).y.tolist()) == [0.0, 1.0]


def test_fixture_visible_half(tfbind10_shards):
    root, _, _ = tfbind10_shards
    task = Task(TFBIND10, data_dir=root)
    np.testing.assert_array_equal(task.visible, np.arange(30))  # y < 5.7 = linear median of 60 rows
    assert task.y.max() == np.float32(5.4)


def test_max_samples_reproducible_per_seed(tfbind10_shards):
    root, _, _ = tfbind10_shards
    a = Task(TFBIND10, data_dir=root, max_samples=10, seed=0)
    b = Task(TFBIND10, data_dir=root, max_samples=10, seed=0)
    c = Task(TFBIND10, data_dir=root, max_samples=10, seed=1)
    assert len(a.visible) == 10 and len(np.unique(a.visible)) == 10
    assert np.all(a.visible < 30)  # drawn from the visible rows only
    np.testing.assert_array_equal(a.visible, b.visible)
    np.testing.assert_array_equal(a.x, b.x)
    assert not np.array_equal(a.visible, c.visible)
    np.testing.assert_array_equal(a.y, a.y_all[a.visible])
    # The oracle and the score range still cover the FULL dataset.
    assert len(a.oracle) == 60
    assert a.y_min == c.y_min == -1.8585268


@pytest.mark.parametrize("n", [0, 30, 1000])
def test_max_samples_zero_or_large_keeps_all_visible(tfbind10_shards, n):
    root, _, _ = tfbind10_shards
    np.testing.assert_array_equal(Task(TFBIND10, data_dir=root, max_samples=n).visible, np.arange(30))


def test_stride_subsample(tfbind10_shards):
    root, _, ys = tfbind10_shards
    a = Task(TFBIND10, data_dir=root, max_samples=4, subsample="stride", seed=0)
    b = Task(TFBIND10, data_dir=root, max_samples=4, subsample="stride", seed=7)
    np.testing.assert_array_equal(a.visible, b.visible)  # no randomness
    visible_sorted = np.sort(np.concatenate(ys).reshape(-1)[:30])
    positions = np.searchsorted(visible_sorted, np.sort(a.y))
    # Evenly spread over the y-sorted visible rows, from the lowest to the highest.
    assert positions[0] == 0 and positions[-1] == 29
    gaps = np.diff(positions)
    assert len(positions) == 4 and gaps.max() - gaps.min() <= 1
    np.testing.assert_array_equal(positions, [0, 10, 19, 29])


def test_unknown_subsample_errors(tfbind10_shards):
    root, _, _ = tfbind10_shards
    with pytest.raises(ValueError, match="'random' or 'stride'"):
        Task(TFBIND10, data_dir=root, max_samples=4, subsample="every_other")


# --- where data is looked for -------------------------------------------------------------
def _write_offset(root, shard_writer, make_designs, offset: float):
    shard_writer(root, [make_designs(6)], [_y(np.arange(6) + offset)])


def test_data_dir_beats_environment(tmp_path, shard_writer, make_designs, monkeypatch):
    _write_offset(tmp_path / "arg", shard_writer, make_designs, 0.0)
    _write_offset(tmp_path / "env", shard_writer, make_designs, 100.0)
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path / "env"))
    assert Task(TFBIND10, data_dir=tmp_path / "arg").y_all[0] == 0.0
    assert Task(TFBIND10).y_all[0] == 100.0
    # A data_dir given without this task's data is an error, not a fall-through to the environment.
    (tmp_path / "nothing").mkdir()
    with pytest.raises(MissingDataError, match="no TFBind10-Exact-v0 data in data_dir"):
        Task(TFBIND10, data_dir=tmp_path / "nothing")


def test_missing_data_names_files_and_mirror(tmp_path, monkeypatch):
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path / "env"))
    monkeypatch.setattr("lightning_mbo.tasks.io.design_bench_data_dir", lambda: tmp_path / "pkg")
    with pytest.raises(MissingDataError) as err:
        Task(TFBIND10)
    message = str(err.value)
    assert isinstance(err.value, FileNotFoundError)
    assert f"{tmp_path / 'env' / 'tf_bind_10-pho4'}/tf_bind_10-{{x,y}}-<i>.npy" in message
    assert f"{tmp_path / 'pkg' / 'tf_bind_10-pho4'}/tf_bind_10-{{x,y}}-<i>.npy" in message
    assert message.index(str(tmp_path / "env")) < message.index(str(tmp_path / "pkg"))
    assert "beckhamc/design_bench_data" in message and HF_MIRROR in message
    assert "--data.data_dir" in message and DATA_DIR_ENV in message


def test_missing_data_without_any_directory():
    with pytest.raises(MissingDataError, match="no data directory given"):
        Task(TFBIND10)


# --- bad data ------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_scores_are_bad_data(tmp_path, shard_writer, make_designs, bad):
    d = make_designs(6)
    y1 = _y([0, 1, 2])
    y1[1, 0] = bad
    shard_writer(tmp_path, [d[:3], d[3:]], [_y([0, 1, 2]), y1])
    with pytest.raises(BadDataError, match=r"1 rows of y hold NaN or inf \(first rows: \[4\]\)"):
        Task(TFBIND10, data_dir=tmp_path)


def test_y_shard_with_other_row_count(tmp_path, shard_writer, make_designs):
    d = make_designs(6)
    shard_writer(tmp_path, [d[:3], d[3:]], [_y([0, 1, 2]), _y([0, 1])])
    message = r"tf_bind_10-x-1\.npy has 3 rows but tf_bind_10-y-1\.npy has shape \(2, 1\)"
    with pytest.raises(BadDataError, match=message):
        Task(TFBIND10, data_dir=tmp_path)


def test_y_shard_with_two_columns(tmp_path, shard_writer, make_designs):
    shard_writer(tmp_path, [make_designs(3)], [np.zeros((3, 2), dtype=np.float32)])
    with pytest.raises(BadDataError, match=r"must be \(rows, 1\)"):
        Task(TFBIND10, data_dir=tmp_path)


def test_x_shards_with_other_width(tmp_path, shard_writer, make_designs):
    shard_writer(tmp_path, [make_designs(3), make_designs(3, length=9)], [_y([0, 1, 2])] * 2)
    with pytest.raises(BadDataError, match=r"tf_bind_10-x-1\.npy has shape \(3, 9\)"):
        Task(TFBIND10, data_dir=tmp_path)


def test_x_and_y_shard_counts_differ(tmp_path, shard_writer, make_designs):
    d = make_designs(9)
    shard_writer(tmp_path, [d[:3], d[3:6], d[6:]], [_y([0, 1, 2])] * 2)
    with pytest.raises(BadDataError, match=r"do not pair up: x shards \[0, 1, 2\], y shards \[0, 1\]"):
        Task(TFBIND10, data_dir=tmp_path)


def test_only_x_shards(tmp_path, shard_writer, make_designs):
    shard_writer(tmp_path, [make_designs(3)], [])
    with pytest.raises(BadDataError, match="has 1 x shards but 0 y shards"):
        Task(TFBIND10, data_dir=tmp_path)


def test_float_designs_for_a_discrete_task(tmp_path, shard_writer, make_designs):
    shard_writer(tmp_path, [make_designs(3).astype(np.float32)], [_y([0, 1, 2])])
    with pytest.raises(BadDataError, match="discrete"):
        Task(TFBIND10, data_dir=tmp_path)


# --- normalised scores ---------------------------------------------------------------------
def test_normalised_score_uses_full_dataset_constants(tfbind10_shards):
    root, _, _ = tfbind10_shards
    task = Task(TFBIND10, data_dir=root)
    # The spec's constants, not the (synthetic) data's own range 0..11.4.
    assert (task.y_min, task.y_max) == (-1.8585268, 2.1287067)
    got = task.normalize_score(np.array([0.135, -1.8585268, 2.1287067, 0.0]))
    expected = [(0.135 + 1.8585268) / (2.1287067 + 1.8585268), 0.0, 1.0, 1.8585268 / 3.9872335]
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    assert got[0] == pytest.approx(0.4999774, abs=1e-7)
    assert task.best_visible == pytest.approx((5.4 + 1.8585268) / 3.9872335, rel=1e-6)
