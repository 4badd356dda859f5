"""The command line, in-process (lightning_mbo.cli): every shipped config, errors, real runs."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from lightning_mbo.cli import DEFAULT_CONFIG, main
from lightning_mbo.data import MBODataModule
from lightning_mbo.tasks import Task, UnknownTaskError
from tests.conftest import distinct_designs, read_result, write_shards

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((REPO_ROOT / "configs").rglob("*.yaml"))
QUICK = REPO_ROOT / "configs" / "quick.yaml"
ENS_MEAN = REPO_ROOT / "configs" / "tfbind8" / "ens_mean.yaml"
QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
#: The continuous tasks' folder (= shard prefix), design size and shard count (design-bench 2.0.20).
CONTINUOUS = {"Superconductor-RandomForest-v0": ("superconductor", 86, 5), "AntMorphology-Exact-v0": ("ant_morphology",
              60, 1), "DKittyMorphology-Exact-v0": ("dkitty_morphology", 56, 1)}


def _load(path: Path) -> dict:
    return yaml.safe_load(path.read_text()) or {}


def _kind(path: Path) -> str:
    """``benchmark`` (a grid for ``lightning_mbo benchmark``), ``method`` (names a model class) or
    ``overlay`` (changes a few settings of another config)."""
    cfg = _load(path)
    if "runs" in cfg:
        return "benchmark"
    return "method" if "class_path" in (cfg.get("model") or {}) else "overlay"


METHODS = [p for p in CONFIGS if _kind(p) == "method"]
OVERLAYS = [p for p in CONFIGS if _kind(p) == "overlay"]
BENCHMARKS = [p for p in CONFIGS if _kind(p) == "benchmark"]


@pytest.fixture(autouse=True)
def _no_pytest_argv(monkeypatch):
    # LightningCLI warns when it is given args while sys.argv holds pytest's own arguments.
    monkeypatch.setattr(sys, "argv", ["lightning-mbo"])


def _ids(paths: list[Path]) -> list[str]:
    return [str(p.relative_to(REPO_ROOT)) if p.is_relative_to(REPO_ROOT) else p.name for p in paths]


def _print_config(stack: list[Path], capsys) -> dict:
    """``fit --config ... --print_config``: parse the stack without building anything."""
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", *[a for p in stack for a in ("--config", str(p))], "--print_config"])
    assert exit_info.value.code in (0, None)
    return yaml.safe_load(capsys.readouterr().out)


def _check_merged(printed: dict, stack: list[Path]) -> None:
    """The printed config is the merge of the stack, later files winning."""
    model_class, model_args, trainer, data = None, {}, {}, {}
    for p in stack:
        cfg = _load(p)
        model = cfg.get("model") or {}
        model_class = model.get("class_path", model_class)
        model_args.update(model.get("init_args") or {})
        trainer.update({k: v for k, v in (cfg.get("trainer") or {}).items() if not isinstance(v, dict | list)})
        data.update(cfg.get("data") or {})
    assert printed["model"]["class_path"] == model_class
    for key, value in model_args.items():
        got = printed["model"]["init_args"][key]
        if isinstance(value, dict):
            got = {k: got[k] for k in value}
        assert got == value, key
    for key, value in trainer.items():
        assert printed["trainer"][key] == value, key
    for key, value in data.items():
        assert printed["data"][key] == value, key


def test_configs_found():
    assert QUICK in OVERLAYS
    assert ENS_MEAN in METHODS
    assert len(METHODS) >= 6


def _applies(overlay: Path, method: Path) -> bool:
    """Whether an overlay is meant for a method config: its model settings are arguments of the
    method's class, and a searcher it configures is the one the method's config runs."""
    import importlib  # noqa: PLC0415
    import inspect  # noqa: PLC0415

    over, cfg = _load(overlay), _load(method)
    module, name = cfg["model"]["class_path"].rsplit(".", 1)
    params = inspect.signature(getattr(importlib.import_module(module), name)).parameters
    if not set((over.get("model") or {}).get("init_args") or {}) <= set(params):
        return False
    searcher = ((over.get("ascent") or {}).get("searcher") or {}).get("class_path")
    return searcher is None or searcher == ((cfg.get("ascent") or {}).get("searcher") or {}).get("class_path")


#: TFBind8's configs (the task that ships) in the default suite; the other tasks' are ``slow`` (each config
#: alone is resolved in the default suite by tests/test_config_snapshot.py all the same).
METHOD_PARAMS = [p if p.parent.name == "tfbind8" else pytest.param(p, marks=pytest.mark.slow) for p in METHODS]


@pytest.mark.parametrize("path", METHOD_PARAMS, ids=_ids(METHODS))
def test_method_config_parses_alone_and_with_each_overlay_meant_for_it(path, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for stack in [[path], *([path, o] for o in OVERLAYS if _applies(o, path))]:
        _check_merged(_print_config(stack, capsys), stack)


@pytest.mark.parametrize("path", OVERLAYS, ids=_ids(OVERLAYS))
def test_every_overlay_is_meant_for_some_tfbind8_config(path):
    assert any(_applies(path, m) for m in METHODS if m.parent.name == "tfbind8"), path


@pytest.mark.parametrize("path", OVERLAYS, ids=_ids(OVERLAYS))
def test_overlay_parses_over_the_default_config(path, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    stack = [DEFAULT_CONFIG, path]
    _check_merged(_print_config(stack, capsys), stack)


@pytest.mark.slow  # every run of every grid resolved (minutes); tests/test_grid_configs.py checks them cheaply
@pytest.mark.parametrize("path", BENCHMARKS, ids=_ids(BENCHMARKS))
def test_benchmark_config_parses_and_its_runs_parse(path, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(["benchmark", "--config", str(path), "--print_config"])
    assert exit_info.value.code in (0, None)
    printed = yaml.safe_load(capsys.readouterr().out)
    cfg = _load(path)
    assert [r["name"] for r in printed["runs"]] == [r["name"] for r in cfg["runs"]]
    assert printed["seeds"] == cfg["seeds"]
    for run in cfg["runs"]:
        stack = [REPO_ROOT / c for c in run["configs"]]  # relative to the repository root
        assert all(p.is_file() for p in stack), run["configs"]
        _check_merged(_print_config(stack, capsys), stack)


@pytest.mark.parametrize("path", [*METHODS, DEFAULT_CONFIG], ids=[*_ids(METHODS), "default.yaml"])
def test_config_instantiates_with_linked_input_dim(path, tmp_path, monkeypatch, request):
    cfg = _load(path)
    extra, input_dim = [], 24
    if cfg["data"]["task"] == "TFBind10-Exact-v0":
        request.getfixturevalue("tfbind10_of_any_size")
        # TFBind10 is not shipped: synthetic shards in design-bench's layout stand in.
        data = tmp_path.parent / f"{tmp_path.name}_data"
        write_shards(data, [distinct_designs(20000, seed=1)], [np.linspace(-1, 1, 20000, dtype=np.float32)[:, None]])
        extra, input_dim = ["--data.data_dir", str(data)], 30
    elif cfg["data"]["task"] in CONTINUOUS:
        # Nor are the continuous tasks: random designs of their sizes, in their shard counts.
        folder, dim, shards = CONTINUOUS[cfg["data"]["task"]]
        data = tmp_path.parent / f"{tmp_path.name}_data"
        x = np.random.default_rng(0).normal(size=(2000, dim)).astype(np.float32)
        ys = np.split(np.linspace(0, 1, 2000, dtype=np.float32)[:, None], shards)
        write_shards(data, np.split(x, shards), ys, folder=folder, prefix=folder)
        extra, input_dim = ["--data.data_dir", str(data)], dim
    monkeypatch.chdir(tmp_path)
    if cfg["data"].get("encoding") == "integers":  # the class ids themselves, not their logits
        input_dim //= 3
    cli = main(["--config", str(path), "--trainer.logger.init_args.save_dir", str(tmp_path), *extra], run=False)
    assert isinstance(cli.datamodule, MBODataModule)
    assert cli.model.hparams.input_dim == cli.datamodule.input_dim == input_dim
    assert type(cli.model).__name__ == cfg["model"]["class_path"].rsplit(".", 1)[1]
    for key, value in (cfg["model"].get("init_args") or {}).items():
        if not isinstance(value, dict):
            got = cli.model.hparams[key]
            assert (list(got) if isinstance(value, list) else got) == value, key
    assert cli.model.num_members == (cfg["model"].get("init_args") or {}).get("members", 1)
    assert cli.trainer.max_epochs == (cfg.get("trainer") or {}).get("max_epochs", 1000)  # Lightning's default: 1000
    assert not any(tmp_path.iterdir())  # building writes nothing


def test_misspelt_key_exits_with_a_clear_message(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(ENS_MEAN), "--model.init_args.hiden", "[8]"])
    assert exit_info.value.code not in (0, None)
    err = capsys.readouterr().err
    assert "hiden" in err and "not accepted" in err


def test_unknown_data_key_exits(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--data.batchsize", "64"])
    assert exit_info.value.code not in (0, None)
    assert "batchsize" in capsys.readouterr().err


def test_unknown_task_lists_known_tasks(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UnknownTaskError, match=r"'TFBind9-Exact-v0'.*known tasks: .*TFBind8-Exact-v0"):
        main(["fit", "--data.task", "TFBind9-Exact-v0", "--trainer.logger.init_args.save_dir", str(tmp_path)])
    assert not any(tmp_path.iterdir())


def test_unknown_task_on_the_command_line_is_one_message(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["lightning-mbo", "fit", "--data.task", "TFBind9-Exact-v0",
                                      "--trainer.logger.init_args.save_dir", str(tmp_path)])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "lightning_mbo: error: unknown task 'TFBind9-Exact-v0'; known tasks:" in err
    assert "Traceback" not in err


def test_ascend_needs_a_checkpoint(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="--ckpt_path"):
        main(["ascend", "--trainer.logger.init_args.save_dir", str(tmp_path), *QUIET])


# --- real runs ---------------------------------------------------------------------------------
def _quick_fit(save_dir: Path, *extra: str):
    return main(["fit", "--config", str(ENS_MEAN), "--config", str(QUICK), "--trainer.max_epochs", "2",
                 "--trainer.logger.init_args.save_dir", str(save_dir), *QUIET, *extra])


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """One quick Ens-Mean fit (5 members of 2x256, 2 epochs): its log directory and results."""
    root = tmp_path_factory.mktemp("quick")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        cli = _quick_fit(root / "logs")
    log_dir = Path(cli.trainer.log_dir)
    return root, log_dir, read_result(log_dir)


@pytest.fixture(scope="module")
def tfbind8() -> Task:
    return Task("TFBind8-Exact-v0")


def test_quick_fit_writes_designs_scores_and_results(quick_run, tfbind8):
    root, log_dir, results = quick_run
    assert log_dir == root / "logs" / "tfbind8" / "ens_mean" / "version_0"
    designs, scores = np.load(log_dir / "designs.npy"), np.load(log_dir / "scores.npy")
    assert designs.shape == (128, 8) and np.issubdtype(designs.dtype, np.integer)
    assert designs.min() >= 0 and designs.max() <= 3
    assert scores.shape == (128,)
    np.testing.assert_array_equal(scores, tfbind8.score(designs))
    # Ascent moved designs away from the top-128 starting points.
    start, _ = tfbind8.top_k(128)
    assert not np.array_equal(designs, start)

    assert results["task"] == "TFBind8-Exact-v0"
    assert results["method"] == "ens_mean"
    assert results["seed"] == 0
    normalized = tfbind8.normalize_score(scores)
    for q in (100, 80, 50):
        assert results[f"score_{q}th"] == pytest.approx(float(np.percentile(normalized, q)), abs=1e-9)
    assert results["score_100th"] >= results["score_80th"] >= results["score_50th"]
    assert results["best_visible"] == pytest.approx(0.43929616, abs=1e-7)
    assert results["wall_seconds"] > 0
    assert (log_dir / "checkpoints" / "last.ckpt").is_file()
    # Nothing was written outside the run's folder.
    assert sorted(p.name for p in root.iterdir()) == ["logs"]


def test_quick_fit_same_seed_same_scores(quick_run, tmp_path, monkeypatch):
    _, log_dir, first = quick_run
    monkeypatch.chdir(tmp_path)
    cli = _quick_fit(tmp_path / "logs")
    second = read_result(Path(cli.trainer.log_dir))
    for key in ("score_100th", "score_80th", "score_50th", "mean_predicted_final"):
        assert second[key] == first[key], key
    np.testing.assert_array_equal(np.load(Path(cli.trainer.log_dir) / "designs.npy"), np.load(log_dir / "designs.npy"))


def test_ascend_from_checkpoint_reproduces_fit(quick_run, tmp_path, monkeypatch):
    _, log_dir, fit_results = quick_run
    monkeypatch.chdir(tmp_path)
    cli = main(["ascend", "--config", str(ENS_MEAN), "--config", str(QUICK), "--ckpt_path",
                str(log_dir / "checkpoints" / "last.ckpt"), "--trainer.logger.init_args.save_dir",
                str(tmp_path / "logs"), *QUIET])
    out = Path(cli.trainer.log_dir)
    assert out.is_relative_to(tmp_path)
    results = read_result(out)
    for key in ("score_100th", "score_80th", "score_50th"):
        assert results[key] == fit_results[key], key
    np.testing.assert_array_equal(np.load(out / "designs.npy"), np.load(log_dir / "designs.npy"))
    np.testing.assert_array_equal(np.load(out / "scores.npy"), np.load(log_dir / "scores.npy"))


@pytest.mark.slow  # 20 full epochs (1-1.5 min on 2 shared cores); the default command itself runs in test_docs_commands
def test_default_run_reaches_095(tmp_path, monkeypatch):
    """``python -m lightning_mbo fit``: TFBind8, one 2x256 surrogate, 20 epochs (about 30 s on a CPU)."""
    monkeypatch.chdir(tmp_path)
    cli = main(["fit", "--trainer.logger.init_args.save_dir", str(tmp_path / "logs"), *QUIET])
    results = read_result(Path(cli.trainer.log_dir))
    assert results["task"] == "TFBind8-Exact-v0" and results["method"] == "grad_ascent"
    assert results["score_100th"] >= 0.95


def test_ascend_search_settings_from_the_command_line(quick_run, tmp_path, monkeypatch):
    """``ascend --ckpt_path ... --ascent.steps 20``: the search runs 20 steps (the method's default
    is 200) at the given step size, and results.json says so."""
    _, log_dir, _ = quick_run
    monkeypatch.chdir(tmp_path)
    cli = main(["ascend", "--config", str(ENS_MEAN), "--config", str(QUICK), "--ckpt_path",
                str(log_dir / "checkpoints" / "last.ckpt"), "--trainer.logger.init_args.save_dir",
                str(tmp_path / "logs"), "--ascent.steps", "20", "--ascent.lr", "0.1", *QUIET])
    out = Path(cli.trainer.log_dir)
    results = read_result(out)
    assert results["ascent"] == {"steps": 20, "lr": 0.1, "optimizer": "sgd"}
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(out), size_guidance={"scalars": 0})
    acc.Reload()
    assert len(acc.Scalars("design/predicted_mean")) == 21  # one point per step plus the end


def test_fit_search_settings_from_the_command_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cli = main(["fit", "--config", str(ENS_MEAN), "--config", str(QUICK), "--trainer.max_epochs", "1",
                "--data.max_samples", "1000", "--model.init_args.hidden", "[16, 16]", "--ascent.steps", "7",
                "--ascent.optimizer", "adam", "--trainer.logger.init_args.save_dir", str(tmp_path / "logs"), *QUIET])
    results = read_result(Path(cli.trainer.log_dir))
    assert results["ascent"] == {"steps": 7, "lr": pytest.approx(0.01 * 24**0.5), "optimizer": "adam"}


@pytest.mark.parametrize("bad", [["--ascent.steps", "-1"], ["--ascent.lr", "-0.1"], ["--ascent.optimizer", "lbfgs"]])
def test_bad_search_settings_are_refused(bad, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises((SystemExit, ValueError)):  # before anything trains
        main(["fit", "--config", str(ENS_MEAN), "--config", str(QUICK), "--trainer.max_epochs", "1",
              "--data.max_samples", "1000", "--model.init_args.hidden", "[16, 16]", *bad,
              "--trainer.logger.init_args.save_dir", str(tmp_path / "logs"), *QUIET])
