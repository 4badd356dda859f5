"""What the command line prints: the project's own lines and Lightning's warnings, not its banner.

Lightning logs, at INFO level, lines a user did not ask for: which accelerators exist (``GPU available:
...``, ``TPU available: ...``, ``HPU available: ...``), the seed it set (a run's seed is in its
``config.yaml`` and ``results.json``) and an advertisement for a logging service. :func:`quiet_lightning`
drops those lines and nothing else: Lightning's warnings (``GPU available but not used``, ...) still
print. The command line calls it (``python -m lightning_mbo``); code that builds a ``Trainer`` itself
keeps Lightning's defaults.
"""

from __future__ import annotations

import logging

#: The starts of the INFO lines dropped (a rank prefix such as ``[rank: 1] `` may come before them).
UNASKED = ("GPU available:", "TPU available:", "HPU available:", "💡 Tip:", "Seed set to")
#: The loggers Lightning writes those lines with, under both of its package names.
LOGGERS = tuple(f"{package}.utilities.{module}"
                for package in ("pytorch_lightning", "lightning_fabric", "lightning.pytorch", "lightning.fabric")
                for module in ("rank_zero", "seed"))


class UnaskedLines(logging.Filter):
    """Drops the INFO (or lower) records whose message is one of :data:`UNASKED`; keeps warnings."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno > logging.INFO:
            return True
        message = record.getMessage()
        if message.startswith("[rank"):
            message = message.split("] ", 1)[-1]
        return not message.startswith(UNASKED)


def quiet_lightning() -> None:
    """Attach :class:`UnaskedLines` to Lightning's loggers (once; calling again changes nothing)."""
    for name in LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, UnaskedLines) for f in logger.filters):
            logger.addFilter(UnaskedLines())
