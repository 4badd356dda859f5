"""``python -m lightning_mbo tasks`` (lightning_mbo.tasks.commands.listing): every task and where its data is."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from lightning_mbo.tasks import QUADRATIC, TASKS, io
from lightning_mbo.tasks.commands.listing import format_tasks, main, task_rows

TFBIND8, TFBIND10 = "TFBind8-Exact-v0", "TFBind10-Exact-v0"
DESIGN_BENCH_TASKS = [name for name, spec in TASKS.items() if spec.oracle != "closed_form"]


def _rows(data_dir=None) -> dict[str, dict]:
    return {row["name"]: row for row in task_rows(data_dir)}


@pytest.fixture
def no_reading(monkeypatch: pytest.MonkeyPatch) -> None:
    """Listing must not read a shard or the shipped file: any np.load fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError(f"listing read data: np.load{args}")
    monkeypatch.setattr(np, "load", refuse)


def test_every_design_bench_task_and_no_synthetic_one(no_reading):
    rows = task_rows()
    assert [row["name"] for row in rows] == DESIGN_BENCH_TASKS
    assert QUADRATIC not in {row["name"] for row in rows} and QUADRATIC in TASKS
    assert len(rows) == 8


def test_columns_without_data(no_reading):
    rows = _rows()
    t8, t10, gfp = rows[TFBIND8], rows[TFBIND10], rows["GFP-Transformer-v0"]
    assert (t8["found"], t8["data"], t8["origin"]) == (True, "shipped", "shipped with lightning_mbo")
    assert (t8["oracle"], t8["min_percentile"], t8["max_percentile"], t8["best_visible"]) == ("exact", 0, 50, 0.439)
    assert not t10["found"] and t10["best_visible"] == 0.467 and t10["expected_shards"] == 84
    assert t10["data"] == f"missing: put it at ${io.DATA_DIR_ENV}/tf_bind_10-pho4/tf_bind_10-{{x,y}}-<i>.npy"
    assert (gfp["oracle"], gfp["visible"], gfp["best_visible"], gfp["d_best"]) == ("design_bench", "50-60th pct",
                                                                                  None, "-")


def test_found_shards_are_located_not_read(tfbind10_shards, no_reading):
    root, _, _ = tfbind10_shards
    t10 = _rows(root)[TFBIND10]
    folder = root / "tf_bind_10-pho4"
    assert (t10["found"], t10["path"], t10["origin"], t10["shards"]) == (True, str(folder), "data_dir argument", 12)
    # 12 synthetic shards, not TFBind10's 84: found, but said to be incomplete.
    assert t10["problem"] == "12 of 84 shards" and t10["data"] == f"incomplete (12 of 84 shards): {folder}"


def test_complete_folder_from_the_environment(tmp_path, shard_writer, make_designs, monkeypatch, no_reading):
    d = make_designs(3)
    for folder, prefix in [("tf_bind_10-pho4", "tf_bind_10"), ("utr", "utr")]:
        shard_writer(tmp_path, [d], [np.zeros((3, 1), np.float32)], folder=folder, prefix=prefix)
    monkeypatch.setitem(TASKS, TFBIND10, replace(TASKS[TFBIND10], num_shards=1))
    monkeypatch.setenv(io.DATA_DIR_ENV, str(tmp_path))
    rows = _rows()
    for name, folder in [(TFBIND10, "tf_bind_10-pho4"), ("UTR-ResNet-v0", "utr")]:
        row = rows[name]
        assert row["found"] and row["problem"] is None and row["origin"] == f"${io.DATA_DIR_ENV}"
        assert row["data"] == f"{tmp_path / folder} (1 shards, ${io.DATA_DIR_ENV})"
    # Where the rest should go: under the environment's directory.
    assert rows["GFP-Transformer-v0"]["data"] == f"missing: put it at {tmp_path}/gfp/gfp-{{x,y}}-<i>.npy"


def test_a_data_dir_without_tfbind8_says_where_and_that_a_copy_is_shipped(tmp_path, no_reading):
    t8 = _rows(tmp_path)[TFBIND8]
    assert not t8["found"]
    assert t8["data"] == (f"missing: put it at {tmp_path}/tf_bind_8-SIX6_REF_R1/tf_bind_8-{{x,y}}-<i>.npy "
                          "(or omit --data_dir: a copy is shipped)")


def test_unusable_folder_is_reported_not_raised(tmp_path, shard_writer, make_designs, no_reading):
    shard_writer(tmp_path, [make_designs(3)], [])
    t10 = _rows(tmp_path)[TFBIND10]
    assert not t10["found"] and "has 1 x shards but 0 y shards" in t10["problem"]
    assert t10["data"].startswith("unusable: ")


def test_table_lines_up_and_names_the_mirror(no_reading):
    table = format_tasks(task_rows())
    lines = table.splitlines()
    assert lines[0].split() == ["task", "oracle", "visible", "D(best)", "data"]
    assert len(lines) == 1 + 8 + 1 and table.endswith("\n")
    data_col = lines[0].index("data")
    assert lines[1][data_col:] == "shipped" and lines[1].startswith(TFBIND8)
    assert all(line[data_col - 2:data_col] == "  " for line in lines[1:9])
    assert "0.439" in lines[1] and "0-50th pct" in lines[1] and "exact" in lines[1]
    assert io.HF_MIRROR in lines[-1] and io.DATA_DIR_ENV in lines[-1]


def test_table_without_anything_missing_has_no_download_line():
    rows = [row for row in task_rows() if row["name"] == TFBIND8]
    assert io.HF_MIRROR not in format_tasks(rows)


def test_main_prints_the_table(tfbind10_shards, capsys, no_reading):
    root, _, _ = tfbind10_shards
    assert main(["--data_dir", str(root)]) == 0
    out = capsys.readouterr().out
    assert out == format_tasks(task_rows(root))
    assert str(root / "tf_bind_10-pho4") in out
    assert main([]) == 0
    assert "shipped" in capsys.readouterr().out


def test_main_help_names_the_command(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    assert "python -m lightning_mbo tasks" in capsys.readouterr().out
