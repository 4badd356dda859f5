"""``python -m lightning_mbo data check``: re-scoring dataset rows with the oracle, on files written in
design-bench's formats."""

from __future__ import annotations

import json
import pickle
import sys
import types

import numpy as np
import pytest

pytest.importorskip("sklearn")

from lightning_mbo.tasks import MissingDataError, Task  # noqa: E402
from lightning_mbo.tasks.commands.check import agreement, check  # noqa: E402
from lightning_mbo.tasks.commands.data import main as data_main  # noqa: E402
from lightning_mbo.tasks.oracles import MissingDependencyError  # noqa: E402
from tests.tasks.design_bench_files import SUPERCONDUCTOR, write_superconductor, write_zip  # noqa: E402

ANT = "AntMorphology-Exact-v0"


@pytest.fixture(scope="module")
def sc(tmp_path_factory):
    return write_superconductor(tmp_path_factory.mktemp("sc"))


def test_superconductor_check_reproduces_the_saved_validation_score(sc, tmp_path, capsys):
    out = tmp_path / "check.json"
    code = data_main(["check", SUPERCONDUCTOR, "--data_dir", str(sc.root), "--rows", "300", "--json", str(out)])
    text = capsys.readouterr().out
    assert code == 0 and "PASSED" in text and "1000 validation rows" in text
    result = json.loads(out.read_text())
    assert result["passed"] is True and result["rows"] == 300 and result["dataset_rows"] == 3000
    # design-bench's own number, to the last bit: same rows, same statistics, same forest.
    assert result["split"]["spearman"] == pytest.approx(sc.rank_correlation, abs=1e-12)
    assert result["split"]["difference"] < 1e-12
    assert result["oracle"]["kind"] == "random_forest" and result["oracle"]["normalization"] == "released"
    # The stored scores are the "measurements"; the forest a fit to some of them.
    idx = np.sort(np.random.default_rng(0).choice(3000, size=300, replace=False))
    scored = Task(SUPERCONDUCTOR, data_dir=sc.root).score(sc.x[idx])
    expected = agreement(scored, sc.y[idx], 185.0 - 0.00021)
    assert result["agreement"] == pytest.approx(expected)
    assert 0.9 < result["agreement"]["pearson"] < 1


def test_a_forest_that_does_not_reproduce_its_saved_score_fails(sc, tmp_path, capsys):
    import shutil  # noqa: PLC0415

    root = tmp_path / "data"
    shutil.copytree(sc.root, root)
    write_zip(root / "superconductor/superconductor/random_forest.zip", pickle.dumps(sc.model), 0.5)
    assert data_main(["check", SUPERCONDUCTOR, "--data_dir", str(root), "--rows", "10"]) == 1
    assert "FAILED" in capsys.readouterr().out
    assert check(SUPERCONDUCTOR, root, rows=10, tolerance=0.5)["passed"] is True


def test_without_the_split_the_forests_own_check_is_skipped(tmp_path, capsys):
    write_superconductor(tmp_path, n=400, internal=300, split=False)
    assert data_main(["check", SUPERCONDUCTOR, "--data_dir", str(tmp_path), "--rows", "0"]) == 0
    text = capsys.readouterr().out
    assert "re-scored 400 of 400" in text and "check skipped" in text
    assert "PASSED" not in text and "FAILED" not in text


def test_exact_oracle_reproduces_all_but_repeated_designs():
    result = check("TFBind8-Exact-v0", rows=2000, seed=1)
    task = Task("TFBind8-Exact-v0")
    idx = np.sort(np.random.default_rng(1).choice(len(task.y_all), size=2000, replace=False))
    # An independent lookup: the last occurrence of each design in shard order.
    last = {tuple(row): y for row, y in zip(task.x_all.tolist(), task.y_all.tolist(), strict=True)}
    same = np.mean([last[tuple(task.x_all[i].tolist())] == task.y_all[i] for i in idx])
    assert result["agreement"]["exact_share"] == pytest.approx(same)
    assert 0.95 < same <= 1 and result["passed"] is None and result["oracle"]["kind"] == "exact"


@pytest.fixture
def ant_dir(tmp_path, shard_writer):
    x = np.random.default_rng(0).uniform(-0.5, 0.5, size=(40, 60)).astype(np.float32)
    shard_writer(tmp_path, [x], [x.sum(1, keepdims=True)], folder="ant_morphology", prefix="ant_morphology")
    return tmp_path, x


def test_ported_rollouts_are_wired_and_marked(ant_dir, monkeypatch, capsys):
    root, x = ant_dir
    calls = []

    class FakeMorphologyOracle:  # the interface of lightning_mbo.tasks.morphology.rollout.MorphologyOracle
        def __init__(self, task_name, policy_path):
            calls.append((task_name, policy_path))

        def __call__(self, designs):
            assert designs.dtype == np.float32 and designs.shape[1] == 60
            return designs.sum(1, keepdims=True)  # (n, 1)

    fake = types.ModuleType("lightning_mbo.tasks.morphology.rollout")
    fake.MorphologyOracle = FakeMorphologyOracle
    monkeypatch.setitem(sys.modules, "lightning_mbo.tasks.morphology.rollout", fake)
    with pytest.raises(MissingDataError, match=f"ant_oracle.pkl, which is missing; download it with: python -m "
                                               f"lightning_mbo data download {ANT} --data_dir {root}"):
        Task(ANT, data_dir=root).score(x[:1])
    (root / "ant_morphology/ant_oracle.pkl").write_bytes(b"policy")
    assert data_main(["check", ANT, "--data_dir", str(root), "--rows", "0"]) == 0
    text = capsys.readouterr().out
    assert "mujoco_port oracle" in text and "Pearson 1.0000" in text and "100.0% equal" in text
    assert calls[-1] == (ANT, root / "ant_morphology/ant_oracle.pkl")
    info = Task(ANT, data_dir=root).oracle_info
    assert (info["kind"], info["canonical"], info["ported"]) == ("mujoco_port", True, True)
    monkeypatch.setitem(sys.modules, "lightning_mbo.tasks.morphology.rollout", None)  # the port or mujoco absent
    with pytest.raises(MissingDependencyError, match=r"pip install 'lightning_mbo\[continuous\]'"):
        Task(ANT, data_dir=root).score(x[:1])


def test_the_real_port_scores_through_the_task(ant_dir, monkeypatch):
    # Skipped only if the port (or mujoco) is absent.
    morphology = pytest.importorskip("lightning_mbo.tasks.morphology.rollout")
    root, x = ant_dir
    rng = np.random.default_rng(0)
    sizes = [(8, 179), (8, 8), (24, 8)]  # the Ant's observation (179) -> 2 x 12 actions
    policy = {}
    for i, (out, inp) in zip((0, 2, 4), sizes, strict=True):
        policy[f"base_network.network.{i}.weight"] = rng.normal(scale=0.1, size=(out, inp)).astype(np.float32)
        policy[f"base_network.network.{i}.bias"] = np.zeros(out, np.float32)
    (root / "ant_morphology/ant_oracle.pkl").write_bytes(pickle.dumps(policy))
    monkeypatch.setattr(morphology, "available_cores", lambda: 1)  # rollouts in this process
    task = Task(ANT, data_dir=root)
    scores = task.score(x[:2])
    direct = morphology.MorphologyOracle(ANT, root / "ant_morphology/ant_oracle.pkl", workers=1)(x[:2])
    np.testing.assert_array_equal(scores, direct.reshape(-1))
    assert task.oracle_info["kind"] == "mujoco_port"
