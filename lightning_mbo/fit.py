"""The fit layer under the command line and the benchmark runner: the LightningCLI subclass, the
trainer with ``ascend``, the shared trainer defaults, and one function that runs a fit (or
resolves its config) from command-line arguments.

``lightning_mbo.cli`` (the command line: subcommands, error lines, exit statuses) and
``lightning_mbo.benchmark`` (grids) both call :func:`run_cli` and :func:`resolved_config`; this
module imports neither.
"""

from __future__ import annotations

import contextlib
import io
import sys
import warnings
from pathlib import Path
from typing import Any

from pytorch_lightning import LightningModule, Trainer
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI

from lightning_mbo.callbacks.design_ascent import DesignAscent
from lightning_mbo.callbacks.preemption import CheckpointOnInterrupt
from lightning_mbo.checkpoint import check_matches, load_checkpoint
from lightning_mbo.data.datamodule import MBODataModule
from lightning_mbo.methods.surrogate import Surrogate
from lightning_mbo.validation import SettingsError

#: The config of a plain `python -m lightning_mbo fit`: TFBind8, small enough for a laptop CPU.
DEFAULT_CONFIG = Path(__file__).parent / "default.yaml"

#: The logger folder the shipped configs name; ``--trainer.default_root_dir`` replaces it.
DEFAULT_SAVE_DIR = "logs"

#: ``ascend``'s usage error without a checkpoint.
ASCEND_NEEDS_CHECKPOINT = ("ascend needs --ckpt_path: the checkpoint whose model should search, e.g. "
                           "--ckpt_path logs/<task>/<method>/version_0/checkpoints/last.ckpt")


#: The trainer's settings every method shares (parser defaults; a config or ``--trainer.*`` overrides
#: them): one device, TensorBoard under ``logs/<task>/<method>`` (see :func:`run_name`), ``last.ckpt``
#: every epoch (a method with large networks sets ``every_n_epochs`` in its config).
TRAINER_DEFAULTS = {
    "trainer.devices": 1,
    "trainer.logger": {
        "class_path": "pytorch_lightning.loggers.TensorBoardLogger",
        # name: run_name; default_hp_metric off: the HParams tab gets the final design scores instead
        "init_args": {"save_dir": DEFAULT_SAVE_DIR, "name": None, "default_hp_metric": False},
    },
    "trainer.callbacks": [
        {"class_path": "pytorch_lightning.callbacks.ModelCheckpoint",
         "init_args": {"save_last": True, "every_n_epochs": 1}},
    ],
}


def run_name(config_files: list[Any], model: Any) -> str:
    """The logger's name for a run: ``<task folder>/<config stem>`` of the first config file
    (``configs/tfbind8/cma_es.yaml``: ``tfbind8/cma_es``), with ``_ignite`` when the model trains under
    IGNITE and the stem does not say so (``--config configs/ignite.yaml``); ``default`` without a config."""
    if not config_files:
        return "default"
    first = Path(str(config_files[0]))
    name = f"{first.parent.name}/{first.stem}"
    ignite = (model.get("init_args") or {}).get("ignite") if hasattr(model, "get") else None
    return name + "_ignite" if ignite is not None and not name.endswith("_ignite") else name


class MBOTrainer(Trainer):
    """A Trainer that connects the datamodule to the model before fitting, saves a checkpoint
    when interrupted, and has one more entry point: design search on a saved checkpoint."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        callbacks = kwargs.pop("callbacks", None) or []
        callbacks = list(callbacks) if isinstance(callbacks, (list, tuple)) else [callbacks]
        if not any(isinstance(c, CheckpointOnInterrupt) for c in callbacks):
            callbacks.append(CheckpointOnInterrupt())
        super().__init__(*args, callbacks=callbacks, **kwargs)

    def fit(self, model: LightningModule, train_dataloaders: Any = None, val_dataloaders: Any = None,
            datamodule: Any = None, *args: Any, **kwargs: Any) -> None:
        """``Trainer.fit``, after telling an :class:`MBODataModule` how many stacked members the
        model trains and whether each gets its own split."""
        dm = datamodule if datamodule is not None else train_dataloaders
        if isinstance(dm, MBODataModule) and isinstance(model, Surrogate):
            model.connect_data(dm)  # stacked members, and each replicate's seed for its data and weights
        super().fit(model, train_dataloaders, val_dataloaders, datamodule, *args, **kwargs)

    def ascend(self, model: LightningModule, datamodule: MBODataModule, ckpt_path: str | None = None) -> Any:
        """Re-run design search and oracle scoring on ``ckpt_path`` without retraining.

        The checkpoint is loaded weights-only and must be the run the config describes (same
        method, network, training settings and task); the search settings come from
        ``--ascent.*`` and the method's defaults.

        Args:
            model: the model, built from the same config as the checkpoint.
            datamodule: the data, built from the same config.
            ckpt_path: the checkpoint (e.g. ``logs/.../checkpoints/last.ckpt``).
        """
        if ckpt_path is None:
            raise SettingsError(ASCEND_NEEDS_CHECKPOINT)
        ckpt = load_checkpoint(ckpt_path)
        check_matches(ckpt, model, datamodule.hparams.task, ckpt_path)
        model.load_state_dict(ckpt["state_dict"])
        # last.ckpt is written before fitting ends; search uses the weights fitting ended with.
        model.on_load_checkpoint(ckpt)
        model.restore_best()
        dm_state = ckpt.get(type(datamodule).__qualname__)
        if dm_state:
            datamodule.load_state_dict(dm_state)
        callbacks = [c for c in self.callbacks if isinstance(c, DesignAscent)] or [DesignAscent()]  # --ascent.*
        model.trainer = self
        self.strategy.connect(model)
        model.to(self.strategy.root_device)
        return callbacks[0].run(self, model, datamodule)


class MBOCLI(LightningCLI):
    """LightningCLI that links the datamodule's input size into the model, keeps the search
    settings under ``--ascent.*``, and fills in what a run's settings imply (see the hooks)."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.link_arguments("data.input_dim", "model.init_args.input_dim", apply_on="instantiate")
        # Design search is always on, its settings under one key for every subcommand (--ascent.*).
        parser.add_lightning_class_args(DesignAscent, "ascent")
        # What every method config shared; a config states only what differs (e.g. max_epochs).
        parser.set_defaults(TRAINER_DEFAULTS)

    def before_instantiate_classes(self) -> None:
        """Settings implied by others, set before anything is built:

        * the logger's ``name`` unset: :func:`run_name` of the config files;
        * ``data.seed`` unset: the run's ``seed_everything`` (so ``--seed_everything 1`` changes
          the split and data order too);
        * ``--trainer.default_root_dir`` given while the logger writes to the configs' ``logs``:
          the outputs go under ``default_root_dir``;
        * ``fit --ckpt_path <run>/checkpoints/last.ckpt`` of a run under this logger's folder: the
          resumed run writes into that run's own folder, not a new ``version_N``;
        * output redirected (not a terminal): no progress bar, which would print a line per step;
        * ``--trainer.max_epochs`` that trains nothing: refused;
        * ``ascend`` without ``--ckpt_path``: refused (before the Trainer prints anything).
        """
        cfg = self.config[self.subcommand] if self.subcommand else self.config
        if self.subcommand == "ascend" and not cfg.get("ckpt_path"):
            raise SettingsError(ASCEND_NEEDS_CHECKPOINT)
        logger = cfg.trainer.logger
        if hasattr(logger, "init_args") and "name" in logger.init_args and logger.init_args.name is None:
            logger.init_args.name = run_name(cfg.get("config") or [], cfg.model)
        if cfg.data.seed is None:
            cfg.data.seed = int(cfg.seed_everything) if not isinstance(cfg.seed_everything, bool) else 0
        logger = cfg.trainer.logger
        init = logger.init_args if hasattr(logger, "init_args") else None
        if init is not None and "save_dir" in init:
            if cfg.trainer.default_root_dir is not None and str(init.save_dir) == DEFAULT_SAVE_DIR:
                init.save_dir = str(cfg.trainer.default_root_dir)
            ckpt = cfg.get("ckpt_path")
            if self.subcommand == "fit" and ckpt and init.get("version") is None:
                run_dir = Path(ckpt).resolve().parent.parent
                if run_dir.parent == (Path(init.save_dir) / str(init.get("name") or "")).resolve():
                    init.version = run_dir.name
        if cfg.trainer.enable_progress_bar is None and not sys.stderr.isatty():
            cfg.trainer.enable_progress_bar = False
        if self.subcommand == "fit":
            epochs, steps = cfg.trainer.max_epochs, cfg.trainer.max_steps
            if epochs is not None and epochs < 1 and not (epochs == -1 and steps and steps > 0):
                raise SettingsError(f"--trainer.max_epochs {epochs} trains nothing: set it to 1 or more "
                                    "(or -1 with --trainer.max_steps N to train by steps)")

    def _parse_ckpt_path(self) -> None:
        """Keep the config's model: LightningCLI would replace it by the checkpoint's saved
        hyper-parameters, so ``--model.*`` and a method's config would be ignored silently. The
        checkpoint is checked against the config instead (:func:`lightning_mbo.checkpoint.check_matches`)."""


    def _connect_search(self, checkpoint: str | None = None) -> None:
        files = (self.config[self.subcommand] if self.subcommand else self.config).get("config") or []
        for callback in self.trainer.callbacks:
            if isinstance(callback, DesignAscent):
                callback.connect(config_files=[str(Path(str(f)).resolve()) for f in files], checkpoint=checkpoint)

    def before_fit(self) -> None:
        ckpt = self.config[self.subcommand].get("ckpt_path")
        if ckpt:  # a resumed run must be the config's (Lightning then loads it for the resume)
            check_matches(load_checkpoint(ckpt), self.model, self.datamodule.hparams.task, ckpt)
        self._connect_search()

    def before_ascend(self) -> None:
        # MBOTrainer.ascend loads and checks the checkpoint once; here only its path is recorded.
        ckpt = self.config[self.subcommand].get("ckpt_path")
        self._connect_search(str(Path(ckpt).resolve()) if ckpt else None)

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        return {**LightningCLI.subcommands(), "ascend": {"model", "datamodule"}}


# Known-harmless warnings: the training batches are an IterableDataset with a length (for the
# progress bar) read in the main process, and Lightning's own use of a deprecated torch name.
warnings.filterwarnings("ignore", message=r".*`IterableDataset` has `__len__` defined.*")
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)` is deprecated.*")


def with_default_config(args: list[str]) -> list[str]:
    """``fit`` (or ``ascend``) without any ``--config`` runs the shipped default config."""
    if args and args[0] in ("fit", "ascend") and not any(a == "--config" or a.startswith("--config=") for a in args):
        return [args[0], "--config", str(DEFAULT_CONFIG), *args[1:]]
    return args


def run_cli(args: list[str] | None = None, run: bool = True) -> MBOCLI:
    """Parse ``args`` (``None``: the command line) and run the subcommand: a fit, an ``ascend``,
    ``--print_config``; returns the CLI with its trainer, model and datamodule."""
    return MBOCLI(
        Surrogate,
        MBODataModule,
        trainer_class=MBOTrainer,
        subclass_mode_model=True,
        seed_everything_default=0,
        args=args,
        run=run,
        save_config_kwargs={"overwrite": True},
        # Each method owns its optimizer (Adam at its paper's settings); a --optimizer that replaced
        # it would leave hparams.yaml showing the method's lr.
        auto_configure_optimizers=False,
    )


def resolved_config(cli_args: list[str]) -> str:
    """The fully resolved config of ``python -m lightning_mbo <cli_args>`` (``--print_config``), parsed
    in this process (nothing is built or trained)."""
    buf = io.StringIO()
    argv, sys.argv = sys.argv, sys.argv[:1]  # LightningCLI warns when given args while sys.argv holds others
    with contextlib.redirect_stdout(buf):
        try:
            run_cli(with_default_config([*cli_args, "--print_config"]))
        except SystemExit as done:
            if done.code not in (0, None):
                raise SettingsError(f"the grid's run does not parse: {' '.join(cli_args)}") from None
        finally:
            sys.argv = argv
    return buf.getvalue()


def fit_command(cli_args: list[str]) -> list[str]:
    """The command that runs ``cli_args`` (``fit ...``) in a process of its own, as a grid's runs do."""
    return [sys.executable, "-m", "lightning_mbo", *cli_args]
