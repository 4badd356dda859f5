"""benchmarks/published_cost.py: its smoke run (the real fit and search code paths on tiny slices) and
the arithmetic it extrapolates and decides by, on hand numbers."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.scripts import load_benchmark

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "published_cost.py"


@pytest.fixture(scope="module")
def pc():
    return load_benchmark("published_cost")


def test_training_extrapolation_on_hand_numbers(pc) -> None:
    # A slice of 2 epochs x 6 batches: fit 2.0 s, 0.1 s per batch, the last epoch 0.8 s in all.
    fixed, per_epoch = pc.slice_train(2.0, 0.1, 0.8, 6, 2)
    assert per_epoch == pytest.approx(0.2)  # 0.8 - 6 x 0.1
    assert fixed == pytest.approx(0.4)  # 2.0 - 2 x (0.2 + 0.6)
    # Released: 100 epochs of 327 batches: 0.4 + 100 x (0.2 + 327 x 0.1).
    assert pc.extrapolate_train(fixed, 0.1, per_epoch, 327, 100) == pytest.approx(0.4 + 100 * 32.9)
    assert pc.extrapolate_train(10.0, 0.005, 0.5, 327, 100) == pytest.approx(223.5)
    # A noisy slice never gives a negative part.
    assert pc.slice_train(1.0, 0.2, 0.5, 6, 2) == (0.0, 0.0)


def test_search_extrapolation_on_hand_numbers(pc) -> None:
    # One knob: 3.0 s at 2 iterations, 5.0 s at 6: 0.5 s per iteration, 2.0 s fixed; 100 released.
    fixed, per_unit = pc.fit_search({"iterations": 2}, 3.0, {"iterations": (4, 5.0)})
    assert fixed == pytest.approx(2.0)
    assert per_unit == {"iterations": pytest.approx(0.5)}
    assert pc.extrapolate_search(fixed, per_unit, {"iterations": 100}) == pytest.approx(52.0)
    # Two knobs (CbAS): base 0 offline epochs, 1 iteration, 4 s; +1 offline epoch 10 s; +1 iteration 5 s.
    fixed, per_unit = pc.fit_search({"offline": 0, "it": 1}, 4.0, {"offline": (1, 10.0), "it": (1, 5.0)})
    assert (fixed, per_unit) == (pytest.approx(3.0), {"offline": pytest.approx(6.0), "it": pytest.approx(1.0)})
    assert pc.extrapolate_search(fixed, per_unit, {"offline": 200, "it": 20}) == pytest.approx(1223.0)
    # A slope below the noise is 0, not negative.
    assert pc.fit_search({"it": 1}, 3.0, {"it": (1, 2.5)}) == (3.0, {"it": 0.0})


def test_eight_seeds_and_the_decision(pc) -> None:
    assert pc.eight_seeds(100.0, 10.0, None, None) == (800.0, 80.0, 880.0)  # separate jobs: 8 x one seed
    assert pc.eight_seeds(100.0, 10.0, 300.0, 90.0) == (300.0, 90.0, 390.0)  # stacked: the stacked run's
    assert pc.decide(1200.0) == pc.CPU  # 20 minutes fit
    assert pc.decide(1200.5) == pc.GPU  # a cell over the threshold goes to the GPU check
    assert pc.decide(880.0, threshold_min=10) == pc.GPU
    train, search, total = pc.eight_seeds(150.0, 20.0, None, None)
    assert pc.decide(total) == pc.GPU  # 8 x 170 s = 22.7 min


@pytest.mark.slow  # real fits of several cells (about a minute)
def test_smoke_run_writes_the_table(tmp_path: Path) -> None:
    out = tmp_path / "out"
    env = {**{k: v for k, v in os.environ.items() if k != "LIGHTNING_MBO_DATA_DIR"}, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(SCRIPT), "--smoke", "--out", str(out)], cwd=REPO,
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.loads((out / "cost.json").read_text())
    columns = ["method", "task", "IGNITE", "1 seed train s", "1 seed search s", "8 stacked train s",
               "8 seeds search s", "8 seeds total min", "training GFLOP", "where"]
    assert record["columns"] == columns
    text = (out / "table.md").read_text()
    header = next(line for line in text.splitlines() if line.startswith("|"))
    assert [c.strip() for c in header.strip("|").split("|")] == columns
    assert "load average" in text and "load average" in proc.stdout
    cells = {c["id"]: c for c in record["cells"]}
    assert list(cells) == ["tfbind8/cma_es", "tfbind8/cma_es+ignite", "tfbind8/grad_ascent"]
    threshold = record["meta"]["threshold_min"]
    for cid in ("tfbind8/cma_es", "tfbind8/cma_es+ignite"):
        c = cells[cid]
        assert c["kind"] == "measured" and c["eight_as"].startswith("stacked")
        for key in ("train_one_s", "search_one_s", "train_8_s", "search_8_s"):
            assert math.isfinite(c[key]) and c[key] > 0, (cid, key)
        assert c["total_8_s"] == pytest.approx(c["train_8_s"] + c["search_8_s"])
        assert c["where"] == ("CPU grid" if c["total_8_s"] <= threshold * 60 else "GPU check")
        assert c["train_gflop"] > 0 and c["one"]["loader_batches"] == 327  # 32,698 rows in batches of 100
    # IGNITE's cell reuses its pair's search; its training costs more FLOPs per step.
    assert cells["tfbind8/cma_es+ignite"]["search_one_s"] == cells["tfbind8/cma_es"]["search_one_s"]
    assert cells["tfbind8/cma_es+ignite"]["train_gflop"] > cells["tfbind8/cma_es"]["train_gflop"]
    big = cells["tfbind8/grad_ascent"]
    assert big["kind"] == "flops" and big["where"] == "GPU check" and big["train_gflop"] > 0
