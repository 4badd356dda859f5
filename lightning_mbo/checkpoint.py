"""Reading a saved run back for ``ascend``: safe loading and a check that it is the run the
config describes.

Checkpoints are loaded with ``torch.load(..., weights_only=True)``: only tensors, containers and
the project's allow-listed settings types are unpickled, so a checkpoint from an untrusted
source cannot run code.
"""

from __future__ import annotations

import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import torch

__all__ = ["CheckpointError", "TRAINING_SETTINGS", "check_matches", "load_checkpoint"]

#: The model settings that make a checkpoint what it is (its network and how it was trained).
#: Search-time settings (Ens-Min's aggregate, Tri-mentoring's mentoring options) may differ.
TRAINING_SETTINGS = ("input_dim", "members", "hidden", "activation", "head", "replicates", "ignite", "select_best",
                     "embedding")


class CheckpointError(ValueError):
    """A checkpoint that cannot be read, or that is not the run the config describes."""


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """The checkpoint at ``path``, loaded weights-only on the CPU; one clear error otherwise."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist: pass --ckpt_path <run>/checkpoints/last.ckpt")
    unreadable = (f"{path} is not a readable checkpoint (truncated, or not written by torch.save); point "
                  "--ckpt_path at a run's checkpoints/last.ckpt")
    if not zipfile.is_zipfile(path):  # torch.save writes a zip archive; its index is at the end
        raise CheckpointError(unreadable)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        found = re.search(r"GLOBAL ([\w.]+)", str(err))
        what = found.group(1) if found else "an object of an unknown type"
        raise CheckpointError(f"{path} holds {what}, outside the safe-loading allow-list: it was not written by "
                              "lightning_mbo, and loading it could run code") from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError) as err:
        raise CheckpointError(f"{unreadable} ({type(err).__name__})") from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise CheckpointError(f"{path} is not a Lightning checkpoint (no state_dict); point --ckpt_path at a run's "
                              "checkpoints/last.ckpt")
    return ckpt


def _describe(class_name: str, hparams: dict[str, Any], task: str | None) -> str:
    shown = ", ".join(f"{k}={hparams[k]!r}" for k in ("members", "hidden", "replicates") if k in hparams)
    return f"{class_name}({shown})" + (f" on {task}" if task else "")


def check_matches(ckpt: dict[str, Any], model: Any, task: str | None, path: str | Path) -> None:
    """Refuse a checkpoint whose method, network or task differ from the config's.

    Args:
        ckpt: a checkpoint from :func:`load_checkpoint`.
        model: the LightningModule the config built (its ``hparams``).
        task: the config's task name.
        path: the checkpoint's path (for the message).
    """
    saved = dict(ckpt.get("hyper_parameters") or {})
    saved_class = str(saved.get("_class_path", "")).rsplit(".", 1)[-1]
    saved_task = (ckpt.get("datamodule_hyper_parameters") or {}).get("task")
    mine = dict(model.hparams)
    diffs = [k for k in TRAINING_SETTINGS if k in saved and k in mine and _norm(saved[k]) != _norm(mine[k])]
    if saved_class and saved_class != type(model).__name__:
        diffs.insert(0, "method")
    if saved_task and task and saved_task != task:
        diffs.append("task")
    if diffs:
        raise CheckpointError(
            f"checkpoint {path} holds {_describe(saved_class or '?', saved, saved_task)} but the config builds "
            f"{_describe(type(model).__name__, mine, task)} ({', '.join(diffs)} differ): pass the config the "
            "checkpoint was trained with (config.yaml beside its checkpoints/ folder)"
        )


def _norm(value: Any) -> Any:
    """Settings as comparable values: tuples and lists alike, dataclasses by their fields."""
    if isinstance(value, (list, tuple)):
        return [_norm(v) for v in value]
    if hasattr(value, "__dataclass_fields__"):
        return {f: _norm(getattr(value, f)) for f in value.__dataclass_fields__}
    if isinstance(value, dict):
        return {k: _norm(v) for k, v in value.items() if not str(k).startswith("_")}
    return value
