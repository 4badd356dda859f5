"""Where a task's data comes from: an explicit data_dir, the expected size, corrupt shards, provenance."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from lightning_mbo.tasks import QUADRATIC, TASKS, BadDataError, MissingDataError, Task, get_spec
from lightning_mbo.tasks.io import DATA_DIR_ENV, HF_MIRROR, locate_task_data, read_task_data

TFBIND8, TFBIND10 = "TFBind8-Exact-v0", "TFBind10-Exact-v0"
SHIPPED = Path(__file__).resolve().parents[2] / "lightning_mbo" / "tasks" / "data" / "tf_bind_8.npz"


def _y(values) -> np.ndarray:
    return np.asarray(values, dtype=np.float32).reshape(-1, 1)


def _sized(monkeypatch: pytest.MonkeyPatch, name: str, **sizes: int | None) -> None:
    """Register ``name`` with other expected sizes for this test."""
    monkeypatch.setitem(TASKS, name, replace(TASKS[name], **sizes))


def _any_size(monkeypatch: pytest.MonkeyPatch) -> None:
    _sized(monkeypatch, TFBIND10, num_shards=None, num_rows=None)


# --- an explicit data_dir ------------------------------------------------------------------
def test_missing_data_dir_is_an_error_naming_it(tmp_path):
    missing = tmp_path / "no_such_dir"
    with pytest.raises(MissingDataError) as err:
        Task(TFBIND10, data_dir=missing)
    message = str(err.value)
    assert f"data_dir {missing} does not exist" in message
    assert "tf_bind_10-pho4/" in message and HF_MIRROR in message and "--data.data_dir" in message
    assert "\n" not in message


def test_data_dir_without_the_task_does_not_fall_back_to_the_environment(tmp_path, shard_writer, make_designs,
                                                                         monkeypatch):
    _any_size(monkeypatch)
    shard_writer(tmp_path / "env", [make_designs(6)], [_y(np.arange(6))])
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path / "env"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(MissingDataError) as err:
        Task(TFBIND10, data_dir=tmp_path / "empty")
    message = str(err.value)
    assert message.startswith(f"no TFBind10-Exact-v0 data in data_dir {tmp_path / 'empty'}: expected "
                              f"{tmp_path / 'empty' / 'tf_bind_10-pho4'}/tf_bind_10-{{x,y}}-<i>.npy")
    assert str(tmp_path / "env") not in message and HF_MIRROR in message and "\n" not in message


def test_data_dir_without_tfbind8_does_not_fall_back_to_the_shipped_copy(tmp_path):
    with pytest.raises(MissingDataError, match=r"no TFBind8-Exact-v0 data in data_dir .*shipped with lightning_mbo"):
        Task(TFBIND8, data_dir=tmp_path)
    with pytest.raises(MissingDataError, match="does not exist"):
        Task(TFBIND8, data_dir=tmp_path / "missing")


def test_no_data_dir_still_uses_the_shipped_tfbind8():
    where = locate_task_data(get_spec(TFBIND8))
    assert where.shipped and where.path == SHIPPED


def test_data_dir_may_be_the_task_folder_itself(tfbind10_shards, monkeypatch):
    _any_size(monkeypatch)
    root, xs, _ = tfbind10_shards
    task = Task(TFBIND10, data_dir=root / "tf_bind_10-pho4")
    np.testing.assert_array_equal(task.x_all, np.concatenate(xs))
    assert task.source["path"] == str(root / "tf_bind_10-pho4")


def test_data_dir_holding_the_shards_directly_is_the_folder(tmp_path, shard_writer, make_designs, monkeypatch):
    _any_size(monkeypatch)
    shard_writer(tmp_path, [make_designs(4)], [_y([0, 1, 2, 3])], folder="downloaded")
    task = Task(TFBIND10, data_dir=tmp_path / "downloaded")
    assert task.y_all.tolist() == [0, 1, 2, 3] and task.source["path"] == str(tmp_path / "downloaded")


def test_empty_task_folder_given_as_data_dir_names_no_doubled_path(tmp_path):
    folder = tmp_path / "tf_bind_10-pho4"
    folder.mkdir()
    with pytest.raises(MissingDataError) as err:
        Task(TFBIND10, data_dir=folder)
    assert f"expected {folder}/tf_bind_10-{{x,y}}-<i>.npy" in str(err.value)
    assert "tf_bind_10-pho4/tf_bind_10-pho4" not in str(err.value)


# --- the expected size -------------------------------------------------------------------
def test_too_few_tfbind10_shards_is_an_incomplete_download(tfbind10_shards):
    root, _, _ = tfbind10_shards
    with pytest.raises(BadDataError) as err:
        Task(TFBIND10, data_dir=root)
    assert str(err.value) == (
        f"{root / 'tf_bind_10-pho4'} holds shards 0..11 (60 rows) but TFBind10-Exact-v0 has 84 shards "
        f"(8,321,066 rows): the download is incomplete; fetch the missing shards from {HF_MIRROR} into "
        f"{root / 'tf_bind_10-pho4'}")


def test_right_shards_with_other_rows_are_not_design_benchs(tfbind10_shards, monkeypatch):
    root, _, _ = tfbind10_shards
    _sized(monkeypatch, TFBIND10, num_shards=12, num_rows=59)
    with pytest.raises(BadDataError, match=r"holds shards 0\.\.11 \(60 rows\) but TFBind10-Exact-v0 has 12 shards "
                                           r"\(59 rows\): these are not design-bench's shards"):
        Task(TFBIND10, data_dir=root)
    _sized(monkeypatch, TFBIND10, num_shards=12, num_rows=61)
    with pytest.raises(BadDataError, match="the download is incomplete"):
        Task(TFBIND10, data_dir=root)
    _sized(monkeypatch, TFBIND10, num_shards=12, num_rows=60)
    assert len(Task(TFBIND10, data_dir=root).y_all) == 60


def test_tfbind8_shards_of_the_wrong_size(tmp_path, shard_writer, make_designs):
    shard_writer(tmp_path, [make_designs(5, length=8)], [_y(np.arange(5))], folder="tf_bind_8-SIX6_REF_R1",
                 prefix="tf_bind_8")
    with pytest.raises(BadDataError, match=r"holds shards 0\.\.0 \(5 rows\) but TFBind8-Exact-v0 has 1 shards "
                                           r"\(65,792 rows\)"):
        Task(TFBIND8, data_dir=tmp_path)


def test_shipped_tfbind8_has_the_registered_size():
    data = read_task_data(get_spec(TFBIND8))
    assert len(data.x) == len(data.y) == get_spec(TFBIND8).num_rows


# --- corrupt shards ----------------------------------------------------------------------
def _corrupt(path: Path, how: str) -> None:
    raw = path.read_bytes()
    if how == "truncated":
        path.write_bytes(raw[: len(raw) - 7])
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "header":
        path.write_bytes(b"\x93NUMPY\x01\x00\x10\x00{'descr': <nonsense" + raw[26:])
    else:  # an HTML error page saved under the shard's name
        path.write_bytes(b"<!DOCTYPE html><html>404</html>")


@pytest.mark.parametrize("how", ["truncated", "empty", "header", "html"])
@pytest.mark.parametrize("kind", ["x", "y"])
def test_corrupt_shard_names_the_file(tfbind10_shards, monkeypatch, how, kind):
    _any_size(monkeypatch)
    root, _, _ = tfbind10_shards
    bad = root / "tf_bind_10-pho4" / f"tf_bind_10-{kind}-10.npy"
    _corrupt(bad, how)
    with pytest.raises(BadDataError) as err:
        Task(TFBIND10, data_dir=root)
    message = str(err.value)
    assert message.startswith(f"{bad} is corrupt or truncated (")
    assert message.endswith(f"delete it and download it again from {HF_MIRROR}")


# --- provenance ----------------------------------------------------------------------------
def _sha256(paths) -> str:
    digest = hashlib.sha256()
    for p in paths:
        digest.update(Path(p).read_bytes())
    return digest.hexdigest()


def test_shipped_tfbind8_source():
    assert Task(TFBIND8).source == {"origin": "shipped with lightning_mbo", "path": str(SHIPPED), "files": 1,
                                    "sha256": _sha256([SHIPPED])}


def test_shard_source_hashes_x_then_y_per_shard_in_order(tfbind10_shards, monkeypatch):
    _any_size(monkeypatch)
    root, _, _ = tfbind10_shards
    folder = root / "tf_bind_10-pho4"
    source = Task(TFBIND10, data_dir=root).source
    files = [folder / f"tf_bind_10-{k}-{i}.npy" for i in range(12) for k in "xy"]
    assert source == {"origin": "data_dir argument", "path": str(folder), "files": 24, "sha256": _sha256(files)}
    # Not the order of file names (x-10 sorts before x-2) nor all x before all y.
    assert source["sha256"] != _sha256(sorted(files))
    assert source["sha256"] != _sha256([f for f in files if "-x-" in f.name] + [f for f in files if "-y-" in f.name])


def test_different_shards_different_digests(tmp_path, shard_writer, make_designs, monkeypatch):
    _any_size(monkeypatch)
    d = make_designs(6)
    shard_writer(tmp_path / "a", [d[:3], d[3:]], [_y([0, 1, 2]), _y([3, 4, 5])])
    shard_writer(tmp_path / "b", [d[:3], d[3:]], [_y([0, 1, 2]), _y([3, 4, 6])])
    shard_writer(tmp_path / "c", [d[:3], d[3:]], [_y([0, 1, 2]), _y([3, 4, 5])])
    a, b, c = (Task(TFBIND10, data_dir=tmp_path / k).source for k in "abc")
    assert a["sha256"] != b["sha256"] and a["sha256"] == c["sha256"]
    assert len(a["sha256"]) == 64 and a["files"] == 4


def test_source_names_the_environment_variable(tmp_path, shard_writer, make_designs, monkeypatch):
    _any_size(monkeypatch)
    shard_writer(tmp_path, [make_designs(3)], [_y([0, 1, 2])])
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path))
    source = Task(TFBIND10).source
    assert source["origin"] == f"${DATA_DIR_ENV}" and source["path"] == str(tmp_path / "tf_bind_10-pho4")


def test_source_names_an_installed_design_bench(tmp_path, shard_writer, make_designs, monkeypatch):
    _any_size(monkeypatch)
    shard_writer(tmp_path, [make_designs(3)], [_y([0, 1, 2])])
    monkeypatch.setattr("lightning_mbo.tasks.io.design_bench_data_dir", lambda: tmp_path)
    assert Task(TFBIND10).source["origin"] == "installed design_bench package"


def test_closed_form_task_source():
    assert Task(QUADRATIC).source == {"origin": "closed form", "path": None, "files": 0, "sha256": None}
