"""Launching a DDP worker script for the data-parallel tests, and loading it to run one process."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

#: Variables a launcher sets; a worker started from a test must not inherit them.
LAUNCHER_VARS = ("MASTER_ADDR", "MASTER_PORT", "LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "GLOBAL_RANK")


def load_worker(path: Path) -> ModuleType:
    """The worker script as a module (its ``train`` runs the one-process reference in the test)."""
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def launch(worker: Path, out: Path, *args: str) -> None:
    """Run ``worker --devices 2 --out out *args`` (2 DDP processes) and fail the test if it fails."""
    env = {k: v for k, v in os.environ.items() if k not in LAUNCHER_VARS}
    env["PYTHONWARNINGS"] = "ignore"
    cmd = [sys.executable, str(worker), "--devices", "2", "--out", str(out), *args]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"DDP run failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
