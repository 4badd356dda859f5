"""The command line: ``python -m lightning_mbo fit --config configs/<task>/<method>.yaml``.

Where outputs go: ``<save_dir>/<task>/<method>/version_N/`` (``save_dir``: the configs' ``logs``,
or ``--trainer.default_root_dir`` when given), holding ``config.yaml``, the TensorBoard events,
``checkpoints/last.ckpt`` (every epoch at the default widths), ``designs.npy``, ``scores.npy``
and ``results.json``. ``fit ... --ckpt_path <run>/checkpoints/last.ckpt`` resumes a run in its
own folder; SIGTERM or Ctrl-C saves ``last.ckpt`` first and exits non-zero.
"""

from __future__ import annotations

import sys

from pytorch_lightning.utilities.exceptions import SIGTERMException

from lightning_mbo.callbacks.preemption import CheckpointOnInterrupt
from lightning_mbo.checkpoint import CheckpointError
from lightning_mbo.fit import (  # noqa: F401 - the layer below, and its names as they were
    ASCEND_NEEDS_CHECKPOINT,
    DEFAULT_CONFIG,
    DEFAULT_SAVE_DIR,
    MBOCLI,
    TRAINER_DEFAULTS,
    MBODataModule,
    MBOTrainer,
    Surrogate,
    run_cli,
    run_name,
    with_default_config,
)
from lightning_mbo.tasks import BadDataError, DesignNotFoundError, MissingDataError, UnknownTaskError
from lightning_mbo.tasks.commands.download import DownloadError
from lightning_mbo.tasks.oracles import MissingDependencyError
from lightning_mbo.validation import SettingsError

#: Errors that mean bad input (settings, task name, data, designs, checkpoints, a missing oracle
#: package, a failed download): reported as one ``lightning_mbo: error:`` line on the command line, exit status 2.
USER_ERRORS = (UnknownTaskError, MissingDataError, BadDataError, DesignNotFoundError, SettingsError, CheckpointError,
               MissingDependencyError, DownloadError)

#: Exit status of a run stopped by SIGTERM (128 + 15, as a shell reports it).
EXIT_SIGTERM = 143


def main(args: list[str] | None = None, run: bool = True) -> MBOCLI | None:
    """Entry point; ``args`` lets tests run the CLI in-process.

    Subcommands: LightningCLI's (``fit``, ``validate``, ...), ``ascend`` (design search on a saved
    checkpoint), ``benchmark`` (a grid of runs and its table, see :mod:`lightning_mbo.benchmark`),
    ``results`` (every ``results.json`` below a folder as one table), ``tasks`` (the registered
    tasks and where their data is) and ``data`` (download a task's files, check its oracle; see
    :mod:`lightning_mbo.tasks.commands.data`).
    """
    from_command_line = args is None
    args = list(sys.argv[1:] if args is None else args)
    if args and args[0] not in TOOLS:
        args = with_default_config(args)
        if from_command_line:
            # DDP re-launches the other ranks from sys.argv, so the filled-in command line goes there.
            sys.argv[1:] = args
    try:
        if args and args[0] in TOOLS:
            code = TOOLS[args[0]](args[1:])
            if from_command_line and code:
                raise SystemExit(code)
            return None
        return run_cli(None if from_command_line else args, run)
    except Exception as err:
        cause = _user_error(err)
        if cause is None:
            raise
        if not from_command_line:
            raise cause from None
        # Bad input from the command line: the message names the problem and the fix, no traceback.
        message = cause.args[0] if isinstance(cause, KeyError) and cause.args else str(cause)
        print(f"lightning_mbo: error: {message}", file=sys.stderr)
        raise SystemExit(2) from None
    except SIGTERMException:
        print(f"lightning_mbo: interrupted by SIGTERM; resume with the same command and --ckpt_path "
              f"{_interrupt_checkpoint()}", file=sys.stderr)
        raise SystemExit(EXIT_SIGTERM) from None


def _user_error(err: BaseException) -> BaseException | None:
    """The bad-input error behind ``err`` (jsonargparse wraps what a class's ``__init__`` raised)."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, USER_ERRORS):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


def _interrupt_checkpoint() -> str:
    """The checkpoint the last interrupted trainer saved (see :class:`CheckpointOnInterrupt`)."""
    return str(CheckpointOnInterrupt.last_saved or "<run>/checkpoints/last.ckpt")


def _benchmark(args: list[str]) -> int:
    from lightning_mbo.benchmark import main as benchmark_main  # noqa: PLC0415

    return benchmark_main(args)


def _tasks(args: list[str]) -> int:
    from lightning_mbo.tasks.commands.listing import main as tasks_main  # noqa: PLC0415

    return tasks_main(args)


def _results(args: list[str]) -> int:
    from lightning_mbo.table import collect_main  # noqa: PLC0415

    return collect_main(args)


def _data(args: list[str]) -> int:
    from lightning_mbo.tasks.commands.data import main as data_main  # noqa: PLC0415

    return data_main(args)


#: Subcommands besides LightningCLI's: each takes its arguments and returns an exit status.
TOOLS = {"benchmark": _benchmark, "tasks": _tasks, "results": _results, "data": _data}
