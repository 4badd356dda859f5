"""A checkpoint when a run is interrupted, so it can resume (SLURM pre-emption, ``timeout``, Ctrl-C)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.utilities.exceptions import SIGTERMException


class CheckpointOnInterrupt(Callback):
    """On SIGTERM (what SLURM and ``timeout`` send before killing a job) or SIGINT (Ctrl-C), save
    ``last.ckpt`` where the run's checkpoints go, so ``fit ... --ckpt_path <it>`` resumes it.

    Lightning stops at the next batch boundary on SIGTERM; the checkpoint then holds the
    interrupted epoch's progress. Resuming from an epoch-end checkpoint reproduces an
    uninterrupted run exactly; resuming from a mid-epoch one replays the rest of that epoch with
    the epoch's data order from its start, so it is close to, not identical with, one.
    """

    #: The checkpoint the last interruption saved (for the command line's message).
    last_saved: Path | None = None

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if not isinstance(exception, (SIGTERMException, KeyboardInterrupt)):
            return
        path = checkpoint_dir(trainer) / "last.ckpt"
        trainer.save_checkpoint(path)
        CheckpointOnInterrupt.last_saved = path


def checkpoint_dir(trainer: Any) -> Path:
    """Where the run's checkpoints go: the ModelCheckpoint's folder, else ``<log_dir>/checkpoints``."""
    callback = trainer.checkpoint_callback
    if callback is not None and getattr(callback, "dirpath", None):
        return Path(callback.dirpath)
    return Path(trainer.log_dir or trainer.default_root_dir) / "checkpoints"
