"""benchmarks/gpu_check.py: its smoke run (the device check's code path at tiny sizes, on the CPU) and its plan."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.scripts import load_benchmark

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "gpu_check.py"


def _module():
    return load_benchmark("gpu_check")


@pytest.mark.slow  # the whole GPU check at smoke scale on the CPU (minutes)
def test_smoke_run_writes_every_cell_and_the_comparison(tmp_path):
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if k not in ("OUT", "LIGHTNING_MBO_DATA_DIR")}
    proc = subprocess.run([sys.executable, str(SCRIPT), "--smoke", "--out", str(out)], cwd=REPO,
                          capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.loads((out / "cells.json").read_text())
    mod = _module()
    assert [c["cell"] for c in record["cells"]] == [c.name for c in mod.cells()]
    assert all(c["status"] == "done" and c["seconds"] > 0 for c in record["cells"]), record
    table = (out / "table.md").read_text()
    for name in ("tfbind8_ens_min_ignite", "tfbind10_ens_min", "tfbind10_coms_ignite", "tfbind8_tri_mentoring"):
        assert f"| {name} |" in table
    assert "## With and without IGNITE" in table
    # Ens-Min searched the Ens-Mean fit's members: no second training run.
    assert not (out / "runs" / "tfbind8_ens_min" / "checkpoints").exists()
    assert (out / "runs" / "tfbind8_ens_mean" / "checkpoints" / "last.ckpt").exists()


def test_plan_gives_a_pair_equal_seeds_and_skips_what_cannot_fit():
    mod = _module()
    ens8 = mod.groups()[0]
    assert [c.name for c in ens8] == ["tfbind8_ens_mean", "tfbind8_ens_mean_ignite"]
    full = sum(mod.estimate_seconds(c, mod.ASSUMED_TFLOPS) for c in ens8)
    assert mod.plan(ens8, full + 1, mod.ASSUMED_TFLOPS) is None
    assert [c.replicates for c in ens8] == [16, 16]
    assert mod.plan(ens8, full * 0.6, mod.ASSUMED_TFLOPS) is None
    seeds = {c.replicates for c in ens8}
    assert len(seeds) == 1 and mod.MIN_SEEDS <= seeds.pop() < 16
    assert f"at {mod.MIN_SEEDS} seeds > 1 s left" in mod.plan(ens8, 1.0, mod.ASSUMED_TFLOPS)
    # An IGNITE fit costs more than its baseline; Ens (80 members) more than GA (16).
    base, ignite = ens8
    assert mod.estimate_seconds(ignite, 36.0) > mod.estimate_seconds(base, 36.0)
    ga = mod.groups()[2][0]
    assert mod.flops(base) / base.replicates == 5 * mod.flops(ga) / ga.replicates  # per seed (plan changed base's)
