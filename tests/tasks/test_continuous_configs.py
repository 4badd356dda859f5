"""One quick CPU fit through the command line per shipped Superconductor, Ant and D'Kitty config.

The data and oracle files are small stand-ins written in design-bench's formats (a forest zip for
Superconductor; for Ant and D'Kitty a policy of random weights rolled out by the MuJoCo port).
Each config runs as shipped but for the quick overlay's widths and epochs and a smaller search
budget; one config per kind of method runs by default, the rest are marked slow.
"""

from __future__ import annotations

import pickle
import sys
from pathlib import Path

import numpy as np
import pytest

from lightning_mbo.cli import main
from tests.conftest import REPO, read_result, write_shards

#: Searchers' budgets small enough for a CPU test.
QUICK = {
    "cma_es": ["--ascent.searcher.init_args.iterations", "2"],
    "bo_qei": ["--ascent.searcher.init_args.rounds", "1", "--ascent.searcher.init_args.q", "4",
               "--ascent.searcher.init_args.restarts", "1", "--ascent.searcher.init_args.raw_samples", "8",
               "--ascent.searcher.init_args.maxiter", "5"],
    "reinforce": ["--ascent.searcher.init_args.iterations", "2", "--ascent.searcher.init_args.batch", "64"],
}
TASKS = {"superconductor": "Superconductor-RandomForest-v0", "ant": "AntMorphology-Exact-v0",
         "dkitty": "DKittyMorphology-Exact-v0"}
#: The configs run by default (one per kind of method; D'Kitty's rollouts are slow, all its runs are marked slow).
FAST = {("superconductor", "grad_ascent_ignite"), ("superconductor", "tri_mentoring"), ("superconductor", "reinforce"),
        ("ant", "ens_mean")}


def _params() -> list:
    """Every method config, alone and under the IGNITE overlay (``<stem>_ignite`` in :data:`FAST`)."""
    out = []
    for folder in TASKS:
        for path in sorted((REPO / "configs" / folder).glob("*.yaml")):
            for ignite in (False, True):
                stem = path.stem + ("_ignite" if ignite else "")
                marks = () if (folder, stem) in FAST else pytest.mark.slow
                out.append(pytest.param(path, ignite, id=f"{folder}/{stem}", marks=marks))
    return out


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """All three tasks' files under one data directory."""
    pytest.importorskip("sklearn")
    from tests.tasks.design_bench_files import write_superconductor  # noqa: PLC0415

    root = tmp_path_factory.mktemp("continuous")
    write_superconductor(root)
    rng = np.random.default_rng(0)
    for folder, dim, obs in (("ant_morphology", 60, 179), ("dkitty_morphology", 56, 108)):
        x = rng.uniform(-0.5, 0.5, size=(1000, dim)).astype(np.float32)
        write_shards(root, [x], [x[:, :4].sum(1, keepdims=True)], folder=folder, prefix=folder)
        policy = {}  # design-bench's policy file: the MLP's arrays, observation -> 2 x 12 outputs
        for i, (out, inp) in zip((0, 2, 4), [(8, obs), (8, 8), (24, 8)], strict=True):
            policy[f"base_network.network.{i}.weight"] = rng.normal(scale=0.1, size=(out, inp)).astype(np.float32)
            policy[f"base_network.network.{i}.bias"] = np.zeros(out, np.float32)
        (root / folder / f"{folder.split('_')[0]}_oracle.pkl").write_bytes(pickle.dumps(policy))
    return root


@pytest.mark.parametrize(("config", "ignite"), _params())
def test_every_continuous_config_fits(config, ignite, data, tmp_path, monkeypatch):
    folder, name = config.parent.name, config.stem
    if folder != "superconductor":
        morphology = pytest.importorskip("lightning_mbo.tasks.morphology.rollout")
        monkeypatch.setattr(morphology, "available_cores", lambda: 1)  # rollouts in this process
    monkeypatch.setattr(sys, "argv", ["lightning-mbo"])
    tri = name in ("tri_mentoring", "mean_of_3_proxies")
    overlay = REPO / "configs" / ("quick_tri_mentoring.yaml" if tri else "quick.yaml")
    extra = ["--ascent.steps", "3"] if tri else QUICK.get(name, [])
    # Few candidates where each costs a rollout.
    extra += [] if folder == "superconductor" else ["--ascent.num_candidates", "8"]
    stack = ["--config", str(config), *(["--config", str(REPO / "configs" / "ignite.yaml")] if ignite else [])]
    cli = main(["fit", *stack, "--config", str(overlay), "--data.data_dir", str(data),
                "--trainer.max_epochs", "1", "--data.max_samples", "600", "--model.init_args.hidden",
                "[8]" if "[256]" in config.read_text() else "[8, 8]", "--trainer.enable_progress_bar", "false",
                "--trainer.logger.init_args.save_dir", str(tmp_path), *extra])
    result = read_result(Path(cli.trainer.log_dir))
    assert result["task"] == TASKS[folder]
    assert result["oracle"] == ("random_forest" if folder == "superconductor" else "mujoco_port")
    assert result["provenance"]["oracle"]["canonical"] is True
    assert np.isfinite([result["score_100th"], result["score_50th"]]).all()
    assert ("ignite" in result) == ignite
