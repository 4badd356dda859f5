"""The command line: ``python -m lightning_mbo fit --config configs/<task>/<method>.yaml``."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path
from typing import Any

import torch
from pytorch_lightning import LightningModule, Trainer
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI

from lightning_mbo.callbacks.design_ascent import DesignAscent
from lightning_mbo.data.datamodule import MBODataModule
from lightning_mbo.methods.surrogate import Surrogate
from lightning_mbo.tasks import BadDataError, DesignNotFoundError, MissingDataError, UnknownTaskError

#: Errors that mean bad input (task name, data, designs): reported as one message on the command line.
USER_ERRORS = (UnknownTaskError, MissingDataError, BadDataError, DesignNotFoundError)

#: The config of a plain `python -m lightning_mbo fit`: TFBind8, small enough for a laptop CPU.
DEFAULT_CONFIG = Path(__file__).parent / "default.yaml"


class MBOTrainer(Trainer):
    """A Trainer that connects the datamodule to the model before fitting, with one more entry
    point: design search on a saved checkpoint."""

    def fit(self, model: LightningModule, train_dataloaders: Any = None, val_dataloaders: Any = None,
            datamodule: Any = None, *args: Any, **kwargs: Any) -> None:
        """``Trainer.fit``, after telling an :class:`MBODataModule` how many stacked members the
        model trains and whether each gets its own split."""
        dm = datamodule if datamodule is not None else train_dataloaders
        if isinstance(dm, MBODataModule) and isinstance(model, Surrogate):
            dm.connect(members=model.num_members, per_member_split=model.per_member_split)
        super().fit(model, train_dataloaders, val_dataloaders, datamodule, *args, **kwargs)

    def ascend(self, model: LightningModule, datamodule: MBODataModule, ckpt_path: str | None = None) -> Any:
        """Re-run design ascent and oracle scoring on ``ckpt_path`` without retraining.

        Args:
            model: the model, built from the same config as the checkpoint.
            datamodule: the data, built from the same config.
            ckpt_path: the checkpoint (e.g. ``logs/.../checkpoints/last.ckpt``).
        """
        if ckpt_path is None:
            raise ValueError("ascend needs --ckpt_path: the checkpoint whose model should ascend")
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        model.load_state_dict(ckpt["state_dict"])
        # last.ckpt is written before fitting ends; ascent uses the weights fitting ended with.
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
    """LightningCLI that links the datamodule's input size into the model."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.link_arguments("data.input_dim", "model.init_args.input_dim", apply_on="instantiate")
        # Design search is always on, its settings under one key for every subcommand (--ascent.*).
        parser.add_lightning_class_args(DesignAscent, "ascent")

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


def main(args: list[str] | None = None, run: bool = True) -> MBOCLI | None:
    """Entry point; ``args`` lets tests run the CLI in-process.

    Subcommands: LightningCLI's (``fit``, ``validate``, ...), ``ascend`` (design ascent on a saved
    checkpoint) and ``benchmark`` (a grid of runs and its table, see :mod:`lightning_mbo.benchmark`).
    """
    from_command_line = args is None
    args = list(sys.argv[1:] if args is None else args)
    if args and args[0] == "benchmark":
        from lightning_mbo.benchmark import main as benchmark_main  # noqa: PLC0415

        benchmark_main(args[1:])
        return None
    args = with_default_config(args)
    if from_command_line:
        # DDP re-launches the other ranks from sys.argv, so the filled-in command line goes there.
        sys.argv[1:] = args
    try:
        return _cli(args, from_command_line, run)
    except USER_ERRORS as err:
        if not from_command_line:
            raise
        # Bad input from the command line: the message names the problem and the fix, no traceback.
        message = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
        print(f"lightning_mbo: error: {message}", file=sys.stderr)
        raise SystemExit(2) from None


def _cli(args: list[str], from_command_line: bool, run: bool) -> MBOCLI:
    return MBOCLI(
        Surrogate,
        MBODataModule,
        trainer_class=MBOTrainer,
        subclass_mode_model=True,
        seed_everything_default=0,
        args=None if from_command_line else args,
        run=run,
        save_config_kwargs={"overwrite": True},
    )
