"""The command line's console: its own lines and Lightning's warnings, no banner, usage errors alone."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lightning_mbo import cli
from lightning_mbo.console import UnaskedLines, quiet_lightning
from lightning_mbo.validation import SettingsError

ROOT = Path(__file__).resolve().parents[1]


def test_ascend_without_a_checkpoint_prints_one_line_and_exits_2():
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "lightning_mbo", "ascend"], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, env=env, check=False)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.splitlines() == [f"lightning_mbo: error: {cli.ASCEND_NEEDS_CHECKPOINT}"]


def test_ascend_without_a_checkpoint_is_refused_before_the_trainer_is_built(monkeypatch):
    def no_trainer(*args, **kwargs):
        raise AssertionError("the Trainer was built before the usage error")

    monkeypatch.setattr(cli.MBOTrainer, "__init__", no_trainer)
    monkeypatch.setattr(sys, "argv", sys.argv[:1])
    with pytest.raises(SettingsError, match="ascend needs --ckpt_path"):
        cli.main(["ascend"])


@pytest.mark.parametrize(("level", "message", "kept"), [
    (logging.INFO, "GPU available: False, used: False", False),
    (logging.INFO, "TPU available: False, using: 0 TPU cores", False),
    (logging.INFO, "HPU available: False, using: 0 HPUs", False),
    (logging.INFO, "💡 Tip: For seamless cloud logging and experiment tracking, try installing [litlogger]", False),
    (logging.INFO, "[rank: 1] Seed set to 0", False),
    (logging.WARNING, "GPU available but not used. You can set it by doing `Trainer(accelerator='gpu')`.", True),
    (logging.INFO, "`Trainer.fit` stopped: `max_epochs=1` reached.", True),
])
def test_only_the_unasked_info_lines_are_dropped(level, message, kept):
    record = logging.LogRecord("pytorch_lightning.utilities.rank_zero", level, __file__, 1, message, None, None)
    assert UnaskedLines().filter(record) is kept


def test_quiet_lightning_filters_lightnings_loggers_once():
    quiet_lightning()
    quiet_lightning()
    logger = logging.getLogger("pytorch_lightning.utilities.rank_zero")
    assert sum(isinstance(f, UnaskedLines) for f in logger.filters) == 1
