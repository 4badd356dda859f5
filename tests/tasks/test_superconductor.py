"""Superconductor-RandomForest-v0 scored natively: design-bench's saved forest, its old pickle, its normalisation.

Every file is written by the test in design-bench 2.0.20's formats (tests/tasks/design_bench_files.py).
"""

from __future__ import annotations

import os
import pickle
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("sklearn")

from lightning_mbo.cli import main  # noqa: E402
from lightning_mbo.tasks import BadDataError, MissingDataError, Task  # noqa: E402
from lightning_mbo.tasks.forest.oracle import (  # noqa: E402
    INTERNAL_ROWS,
    read_forest_zip,
    released_normalization,
    split_normalization,
    split_validation,
)
from lightning_mbo.tasks.forest.sklearn_pickle import load_forest  # noqa: E402
from lightning_mbo.validation import SettingsError  # noqa: E402
from tests.conftest import REPO, read_result  # noqa: E402
from tests.tasks.design_bench_files import (  # noqa: E402
    SUPERCONDUCTOR,
    design_bench_statistics,
    write_superconductor,
    write_zip,
)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return write_superconductor(tmp_path_factory.mktemp("sc"))


@pytest.fixture(scope="module")
def old_files(tmp_path_factory):
    return write_superconductor(tmp_path_factory.mktemp("sc_old"), old_pickle=True)


def test_split_normalisation_is_the_fits(files):
    task = Task(SUPERCONDUCTOR, data_dir=files.root, oracle_normalization="split")
    x = files.x[::37]
    # Bit for bit: the forest sees the inputs it was fitted on, normalised as design-bench normalised them.
    np.testing.assert_array_equal(task.score(x), files.reference(x, files.fit_rows))
    info = task.oracle_info
    assert (info["kind"], info["canonical"], info["ported"]) == ("random_forest", True, False)
    assert (info["normalization"], info["normalization_rows"], info["normalization_seed"]) == ("split", 2000, None)


def test_released_normalisation_is_a_fresh_draw_of_the_full_dataset(files):
    x = files.x[::37]
    released = Task(SUPERCONDUCTOR, data_dir=files.root, seed=3)
    # design-bench's scoring-time draw: 2000 rows of ALL rows, uniformly without replacement.
    rows = np.random.default_rng(3).choice(len(files.y), size=INTERNAL_ROWS, replace=False)
    np.testing.assert_array_equal(released.score(x), files.reference(x, rows))
    assert released.oracle_info["normalization_seed"] == 3
    # Another draw, another oracle; the same seed, the same oracle.
    other = Task(SUPERCONDUCTOR, data_dir=files.root, seed=4).score(x)
    assert np.abs(other - released.score(x)).max() > 1e-3
    np.testing.assert_array_equal(Task(SUPERCONDUCTOR, data_dir=files.root, seed=3).score(x), released.score(x))
    split = Task(SUPERCONDUCTOR, data_dir=files.root, oracle_normalization="split").score(x)
    assert np.abs(split - released.score(x)).max() > 1e-3


def test_statistics_are_design_benchs_bit_for_bit(files):
    # Released: the draw's rows in dataset order, as design-bench's iterate_batches visits them.
    rows = np.sort(np.random.default_rng(5).choice(len(files.y), size=INTERNAL_ROWS, replace=False))
    for norm, picked in ((released_normalization(files.x, files.y, 5), rows),
                         # Split: train and validation rows interleaved in dataset order, as when fitting.
                         (split_normalization(read_forest_zip(files.root / "superconductor/superconductor/"
                                                              "random_forest.zip"), files.root, files.x, files.y),
                          files.fit_rows)):
        m, s = design_bench_statistics(files.x[picked])
        my, sy = design_bench_statistics(files.y[picked, None])
        np.testing.assert_array_equal(norm.x_mean, m[0])
        np.testing.assert_array_equal(norm.x_std, s[0])
        assert (norm.y_mean, norm.y_std) == (my[0, 0], sy[0, 0])


def test_old_pickle_needs_the_shims_and_predicts_the_same(old_files):
    blob = zipfile.ZipFile(old_files.root / "superconductor/superconductor/random_forest.zip").read("random_forest.pkl")
    with pytest.raises(ModuleNotFoundError, match="sklearn.ensemble.forest"):
        pickle.loads(blob)  # what a current scikit-learn does with design-bench's pickle
    loaded = load_forest(blob, "random_forest.pkl")
    assert loaded.pickled_with == "0.24.2"
    shims = "\n".join(loaded.shims)
    for expected in ("sklearn.ensemble.forest -> sklearn.ensemble._forest", "missing_go_to_left added",
                     "n_features_ -> n_features_in_", "'mse' -> 'squared_error'", "base_estimator -> estimator",
                     "max_features 'auto' -> 1.0", "monotonic_cst"):
        assert expected in shims, expected
    x = old_files.x[::11]
    np.testing.assert_array_equal(loaded.model.predict(x), old_files.model.predict(x))
    task = Task(SUPERCONDUCTOR, data_dir=old_files.root, oracle_normalization="split")
    np.testing.assert_array_equal(task.score(x), old_files.reference(x, old_files.fit_rows))
    assert task.oracle_info["pickled_with_sklearn"] == "0.24.2" and len(task.oracle_info["compat_shims"]) >= 7


def test_a_current_pickle_needs_no_shim(files):
    loaded = read_forest_zip(files.root / "superconductor/superconductor/random_forest.zip").forest
    assert loaded.shims == ()


class _RunsCode:
    def __reduce__(self):
        return os.system, ("touch pwned",)


@pytest.mark.parametrize(("members", "message"), [
    ({"model.pkl": b""}, "no random_forest.pkl"),
    ({"random_forest.pkl": pickle.dumps({"a": np.arange(3)})}, "holds a builtins.dict, not a scikit-learn random"),
    ({"random_forest.pkl": pickle.dumps(_RunsCode())}, r"needs posix.system.*could run code"),
    ({"random_forest.pkl": b"\x80\x04not a pickle"}, "not a readable pickle"),
])
def test_a_forest_in_an_unknown_format_is_a_clear_error(files, tmp_path, monkeypatch, members, message):
    monkeypatch.chdir(tmp_path)
    if sys.platform == "win32":
        pytest.skip("posix")
    path = write_zip(tmp_path / "superconductor/superconductor/random_forest.zip", b"", 0.0, members=members)
    with pytest.raises(BadDataError, match=message):
        read_forest_zip(path)
    assert not (tmp_path / "pwned").exists()


def test_not_a_zip_and_a_classifier_are_refused(tmp_path):
    from sklearn.ensemble import RandomForestClassifier  # noqa: PLC0415

    bad = tmp_path / "random_forest.zip"
    bad.write_bytes(b"PK not really")
    with pytest.raises(BadDataError, match="is not a zip archive"):
        read_forest_zip(bad)
    clf = RandomForestClassifier(n_estimators=2).fit(np.eye(4), [0, 1, 0, 1])
    with pytest.raises(BadDataError, match="RandomForestClassifier, not a scikit-learn random forest regressor"):
        load_forest(pickle.dumps(clf), "random_forest.pkl")


def test_missing_forest_names_the_download_and_the_refit(tmp_path):
    write_superconductor(tmp_path, n=300, internal=200, forest=False)
    task = Task(SUPERCONDUCTOR, data_dir=tmp_path)  # the shards alone load: nothing is fetched
    with pytest.raises(MissingDataError) as err:
        task.score(task.x[:2])
    text = str(err.value)
    assert f"python -m lightning_mbo data download {SUPERCONDUCTOR} --data_dir {tmp_path}" in text
    assert "data refit" in text and "NON-CANONICAL" in text


def test_split_normalisation_without_the_split_names_it(tmp_path):
    write_superconductor(tmp_path, n=300, internal=200, split=False)
    with pytest.raises(MissingDataError, match=r"split-train-\{x,y\}-<i>.npy, which is missing: download it with"):
        Task(SUPERCONDUCTOR, data_dir=tmp_path, oracle_normalization="split").score(np.zeros((1, 8), np.float32))
    # The released normalisation does not need it.
    assert Task(SUPERCONDUCTOR, data_dir=tmp_path).score(np.zeros((1, 8), np.float32)).shape == (1,)


def test_bad_designs_and_settings(files):
    task = Task(SUPERCONDUCTOR, data_dir=files.root)
    bad = files.x[:3].copy()
    bad[1, 2] = np.nan
    with pytest.raises(ValueError, match=r"1 designs hold NaN or inf \(first rows: \[1\]\)"):
        task.score(bad)
    with pytest.raises(ValueError, match=r"\(n, 8\)"):
        task.score(files.x[:2, :5])
    with pytest.raises(SettingsError, match="--data.oracle_normalization"):
        Task(SUPERCONDUCTOR, data_dir=files.root, oracle_normalization="fit")


def test_saved_split_reproduces_the_saved_rank_correlation(files):
    check = split_validation(read_forest_zip(files.root / "superconductor/superconductor/random_forest.zip"),
                             files.root, files.x, files.y)
    assert check["rows"] == 1000
    assert check["spearman"] == pytest.approx(files.rank_correlation, abs=1e-9)


def test_refit_is_opt_in_and_non_canonical(tmp_path, capsys):
    write_superconductor(tmp_path, n=2500, forest=False)
    main(["data", "refit", SUPERCONDUCTOR, "--data_dir", str(tmp_path), "--seed", "1"])
    assert "NON-CANONICAL" in capsys.readouterr().out
    refit = tmp_path / "superconductor/refit/random_forest.zip"
    assert refit.is_file() and not (tmp_path / "superconductor/superconductor/random_forest.zip").exists()
    task = Task(SUPERCONDUCTOR, data_dir=tmp_path, oracle_normalization="split")
    info = task.oracle_info
    assert (info["kind"], info["canonical"], info["file"]) == ("random_forest_refit", False, str(refit))
    # Fitted as design-bench fits its forest: 100 trees of depth <= 100 on 1000 rows, its split beside it.
    file = read_forest_zip(refit)
    assert file.forest.model.n_estimators == 100 and file.forest.model.max_depth == 100
    check = split_validation(file, tmp_path, task.x_all, task.y_all)
    assert check["rows"] == 1000 and check["spearman"] == pytest.approx(file.rank_correlation, abs=1e-9)
    assert check["spearman"] > 0.8  # a real fit of y = 10 x0 + ...
    with pytest.raises(SettingsError, match="has none"):
        main(["data", "refit", "TFBind8-Exact-v0"])


def test_quick_fit_records_the_oracle(files, tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["lightning-mbo"])
    cli = main(["fit", "--config", str(REPO / "configs/superconductor/grad_ascent.yaml"), "--config",
                str(REPO / "configs/quick.yaml"), "--data.data_dir", str(files.root), "--trainer.max_epochs", "1",
                "--model.init_args.hidden", "[32, 32]", "--trainer.enable_progress_bar", "false",
                "--trainer.logger.init_args.save_dir", str(tmp_path)])
    result = read_result(Path(cli.trainer.log_dir))
    assert result["task"] == SUPERCONDUCTOR and result["oracle"] == "random_forest"
    oracle = result["provenance"]["oracle"]
    assert oracle["canonical"] and oracle["normalization"] == "released" and oracle["normalization_seed"] == 0
    assert oracle["sha256"] == read_forest_zip(Path(oracle["file"])).sha256
    assert "scikit-learn" in result["provenance"]["versions"]
    designs = np.load(Path(cli.trainer.log_dir) / "designs.npy")
    scores = np.load(Path(cli.trainer.log_dir) / "scores.npy")
    assert designs.shape == (128, 8)
    # The scores written are the oracle's, with the run's seed (0) for the released draw.
    np.testing.assert_allclose(scores, Task(SUPERCONDUCTOR, data_dir=files.root, seed=0).score(designs), rtol=1e-6)



def test_tasks_listing_says_when_the_forest_is_missing(tmp_path, files):
    from lightning_mbo.tasks.commands.listing import task_rows  # noqa: PLC0415

    write_superconductor(tmp_path, n=300, internal=200, forest=False)
    rows = {row["name"]: row for row in task_rows(tmp_path)}
    assert rows[SUPERCONDUCTOR]["problem"] == "no oracle file superconductor/superconductor/random_forest.zip"
    rows = {row["name"]: row for row in task_rows(files.root)}
    assert rows[SUPERCONDUCTOR]["problem"] is None and rows[SUPERCONDUCTOR]["oracle"] == "random_forest"
