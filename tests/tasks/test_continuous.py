"""Continuous tasks: the synthetic quadratic, Superconductor's shards, and a task still scored by the
design_bench package (Hopper). Superconductor's forest: tests/tasks/test_superconductor.py."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from lightning_mbo.tasks import QUADRATIC, BadDataError, Task
from lightning_mbo.tasks.synthetic import quadratic_oracle

SUPERCONDUCTOR = "Superconductor-RandomForest-v0"
HOPPER = "HopperController-Exact-v0"


@pytest.fixture(scope="module")
def quadratic() -> Task:
    return Task(QUADRATIC)


def test_quadratic_oracle_hand_values(quadratic):
    x = np.array([[0.5] * 6, [0.0] * 6, [1.5, 0.5, 0.5, 0.5, 0.5, -0.5]], dtype=np.float32)
    np.testing.assert_allclose(quadratic.score(x), [0.0, -1.5, -2.0], rtol=0, atol=1e-7)
    np.testing.assert_allclose(quadratic.score(quadratic.x_all[:50]), quadratic.y_all[:50], rtol=1e-6)


def test_quadratic_data_and_split(quadratic):
    assert quadratic.x_all.shape == (4096, 6) and quadratic.x_all.dtype == np.float32
    assert quadratic.x_all.min() >= -2.0 and quadratic.x_all.max() <= 2.0
    np.testing.assert_allclose(quadratic.y_all, -((quadratic.x_all.astype(np.float64) - 0.5) ** 2).sum(1), rtol=1e-6)
    # max_percentile 50 over 4096 distinct scores: the lower 2048.
    assert len(quadratic.y) == 2048
    assert quadratic.y.max() < np.median(quadratic.y_all) < np.sort(quadratic.y_all)[2048]
    # Same data on every call (fixed seed).
    np.testing.assert_array_equal(Task(QUADRATIC).x_all, quadratic.x_all)


def test_quadratic_score_range_from_data(quadratic):
    assert quadratic.y_min == pytest.approx(float(quadratic.y_all.min()))
    assert quadratic.y_max == pytest.approx(float(quadratic.y_all.max()))
    assert quadratic.y_max <= 0.0
    assert quadratic.normalize_score(np.array([quadratic.y_all.min()]))[0] == pytest.approx(0.0, abs=1e-6)


def test_quadratic_encode_decode_identity(quadratic):
    assert not quadratic.is_discrete
    assert quadratic.input_dim == 6 and quadratic.encoded_shape == (6,)
    x = quadratic.x[:10]
    z = quadratic.encode(x)
    assert z.dtype == torch.float32
    np.testing.assert_array_equal(z.numpy(), x)
    back = quadratic.decode(z + 0.25)
    assert back.dtype == np.float32
    np.testing.assert_array_equal(back, x + np.float32(0.25))
    with pytest.raises(AttributeError, match="continuous"):
        _ = quadratic.num_classes


def test_quadratic_oracle_checks_shape():
    with pytest.raises(ValueError, match=r"\(n, 6\)"):
        quadratic_oracle(np.zeros((2, 5)))


@pytest.fixture
def superconductor_dir(tmp_path, shard_writer):
    # design-bench's five shards (SUPERCONDUCTOR_FILES), small ones.
    rng = np.random.default_rng(0)
    xs = [rng.normal(size=(n, 81)).astype(np.float32) for n in (15, 15, 10, 5, 5)]
    y = rng.permutation(50).astype(np.float32)
    ys = np.split(y[:, None], np.cumsum([15, 15, 10, 5])[:4])
    shard_writer(tmp_path, xs, ys, folder="superconductor", prefix="superconductor")
    return tmp_path, np.concatenate(xs), y


def test_superconductor_needs_its_five_shards(tmp_path, shard_writer):
    x = np.zeros((4, 81), dtype=np.float32)
    shard_writer(tmp_path, [x, x], [np.zeros((4, 1), np.float32)] * 2, folder="superconductor",
                 prefix="superconductor")
    with pytest.raises(BadDataError, match="has 5 shards"):
        Task(SUPERCONDUCTOR, data_dir=tmp_path)


def test_superconductor_loads(superconductor_dir):
    root, x, y = superconductor_dir
    task = Task(SUPERCONDUCTOR, data_dir=root)
    np.testing.assert_array_equal(task.x_all, x)
    np.testing.assert_array_equal(task.y_all, y)
    # 80th linear percentile of 0..49 is 39.2: scores 0..39 stay visible.
    assert len(task.y) == 40 and task.y.max() == 39.0
    assert task.input_dim == 81
    np.testing.assert_array_equal(task.decode(task.encode(task.x)), task.x)
    assert task.normalize_score(np.array([185.0]))[0] == pytest.approx(1.0)


def test_design_bench_oracle_without_design_bench(tmp_path, shard_writer, monkeypatch):
    x = np.random.default_rng(0).normal(size=(20, 5)).astype(np.float32)
    shard_writer(tmp_path, [x], [np.arange(20, dtype=np.float32)[:, None]], folder="hopper_controller",
                 prefix="hopper_controller")
    # `import design_bench` fails whether or not it is installed.
    monkeypatch.setitem(sys.modules, "design_bench", None)
    task = Task(HOPPER, data_dir=tmp_path)
    with pytest.raises(RuntimeError, match="pip install") as err:
        task.score(x[:2])
    message = str(err.value)
    assert "design-bench" in message and HOPPER in message
    with pytest.raises(RuntimeError, match="design-bench"):
        _ = task.oracle


def test_non_finite_continuous_designs_are_bad_data(tmp_path, shard_writer):
    x = np.zeros((4, 81), dtype=np.float32)
    x[2, 5] = np.nan
    shard_writer(tmp_path, [x], [np.arange(4, dtype=np.float32)[:, None]], folder="hopper_controller",
                 prefix="hopper_controller")
    with pytest.raises(BadDataError, match=r"1 rows of x hold NaN or inf \(first rows: \[2\]\)"):
        Task(HOPPER, data_dir=tmp_path)
