"""A design-bench task: full data, the visible split, encoding, normalisation and the oracle."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from lightning_mbo.tasks.encoding import from_logits, to_logits
from lightning_mbo.tasks.exact import ExactOracle
from lightning_mbo.tasks.io import BadDataError, MissingDataError, check_finite, read_task_data
from lightning_mbo.tasks.morphology import morphology_oracle
from lightning_mbo.tasks.oracles import DesignBenchOracle, MissingDependencyError, Oracle
from lightning_mbo.tasks.registry import TaskSpec, get_spec
from lightning_mbo.tasks.synthetic import SYNTHETIC
from lightning_mbo.validation import SettingsError, check_choice

Subsample = Literal["random", "stride", "stride_floor"]
#: How a discrete design reaches the surrogate: design-bench's ``logits`` (default) or its class
#: ``integers`` (for members that embed the sequence, as design-baselines' REINFORCE and CbAS).
Encoding = Literal["logits", "integers"]
#: How Superconductor's saved random forest normalises designs (:mod:`lightning_mbo.tasks.forest`):
#: ``released`` (design-bench as it ran: a fresh 2000-row draw's statistics) or ``split`` (the fit's).
OracleNormalization = Literal["released", "split"]


def visible_indices(y: np.ndarray, min_percentile: float, max_percentile: float) -> np.ndarray:
    """Rows design-bench keeps visible: ``lo <= y <= hi`` with numpy's linear percentiles.

    ``lo`` is -inf when ``min_percentile`` is 0 and ``hi`` is +inf when ``max_percentile`` is 100;
    the bounds are inclusive, so ties at a bound stay visible.
    """
    lo = np.percentile(y, min_percentile) if min_percentile > 0 else -np.inf
    hi = np.percentile(y, max_percentile) if max_percentile < 100 else np.inf
    return np.flatnonzero((y >= lo) & (y <= hi))


def subsample_indices(idx: np.ndarray, y: np.ndarray, n: int, how: Subsample, seed: int) -> np.ndarray:
    """Keep ``n`` of the rows ``idx``.

    ``"random"``: uniformly without replacement with a seeded generator (design-bench's
    ``max_samples``). ``"stride"``: ``n`` rows evenly spread over the y-sorted rows, at positions
    ``round(linspace(0, len - 1, n))`` (lowest and highest included; the released Tri-mentoring
    code's TFBind10 subsample takes rows at a fixed stride of the y-sorted set). ``"stride_floor"``:
    the y-sorted rows at positions ``0, s, 2s, ..., (n - 1) s`` with the integer stride
    ``s = len // n``, so the top rows past ``(n - 1) s`` are left out (the released ICT code's TFBind10
    subsample, ``np.arange(0, 4161482, 83)[:50000]`` of the y-sorted rows, ``utils.py:68-70``).
    """
    if n >= len(idx):
        return idx
    if how == "random":
        return np.sort(np.random.default_rng(seed).choice(idx, size=n, replace=False))
    if how == "stride":
        ordered = idx[np.argsort(y[idx], kind="stable")]
        return np.sort(ordered[np.linspace(0, len(ordered) - 1, n).round().astype(np.int64)])
    if how == "stride_floor":
        ordered = idx[np.argsort(y[idx], kind="stable")]
        return np.sort(ordered[np.arange(n) * (len(ordered) // n)])
    raise ValueError(f"unknown subsample {how!r}; choose 'random' or 'stride' or 'stride_floor'")


class Task:
    """One task, loaded: what a method may see and how its designs are scored.

    Args:
        name: a registered task name (see ``lightning_mbo.tasks.TASKS``).
        data_dir: a design-bench data directory (or the task's folder itself), which must hold the
            task; ``None`` searches ``$LIGHTNING_MBO_DATA_DIR``, the installed design_bench package's
            data, then the shipped TFBind8.
        max_samples: keep this many visible rows (``None``: the task's design-bench default;
            ``0``: all visible rows).
        subsample: how ``max_samples`` rows are chosen: ``random``, ``stride`` or ``stride_floor``.
        seed: seed of the ``random`` subsample, and of the ``released`` oracle normalisation's draw.
        encoding: how discrete designs are encoded for the surrogate: ``logits`` or ``integers``.
        oracle_normalization: Superconductor only: ``released`` (the default: design-bench 2.0.20 as
            it ran, the forest's inputs normalised by a fresh uniform 2000-row draw of the full
            dataset, seeded by ``seed``) or ``split`` (by the saved split the forest was fitted on:
            the fit's own statistics); see :mod:`lightning_mbo.tasks.forest`.

    Attributes:
        source: where the data came from: ``origin`` (``"data_dir argument"``,
            ``"$LIGHTNING_MBO_DATA_DIR"``, ``"installed design_bench package"``, ``"shipped with
            lightning_mbo"`` or ``"closed form"``), ``path`` (the shard folder or shipped ``.npz``),
            ``files`` (files read) and ``sha256`` (hex digest of their bytes; ``None`` for closed-form tasks).

    Nothing is downloaded: missing files raise :class:`~lightning_mbo.tasks.io.MissingDataError`
    naming the ``python -m lightning_mbo data download`` command that fetches them.
    """

    def __init__(
        self,
        name: str,
        data_dir: str | os.PathLike | None = None,
        max_samples: int | None = None,
        subsample: Subsample = "random",
        seed: int = 0,
        encoding: Encoding = "logits",
        oracle_normalization: OracleNormalization = "released",
    ) -> None:
        self.spec: TaskSpec = get_spec(name)
        spec = self.spec
        check_choice("encoding (--data.encoding)", encoding, Encoding)
        check_choice("oracle_normalization (--data.oracle_normalization)", oracle_normalization, OracleNormalization)
        self.oracle_normalization, self.seed = oracle_normalization, int(seed)
        if encoding == "integers" and not spec.discrete:
            raise SettingsError(f"{spec.name} is continuous: --data.encoding integers is for discrete tasks")
        self.encoding = encoding
        if spec.oracle == "closed_form":
            data_fn, self._closed_form = SYNTHETIC[spec.name]
            x_all, y_all = data_fn()
            self.source: dict[str, object] = {"origin": "closed form", "path": None, "files": 0, "sha256": None}
        else:
            x_all, y_all, self.source = read_task_data(spec, data_dir)
        check_finite(x_all, y_all, spec.name)
        if spec.discrete and (x_all.ndim != 2 or not np.issubdtype(x_all.dtype, np.integer)):
            raise BadDataError(f"{spec.name} is discrete: x must be (N, L) integers, got {x_all.shape} {x_all.dtype}")
        self.data_dir = data_dir
        self.x_all, self.y_all = x_all, y_all
        idx = visible_indices(y_all, spec.min_percentile, spec.max_percentile)
        n = spec.max_samples if max_samples is None else max_samples
        if n:
            idx = subsample_indices(idx, y_all, n, subsample, seed)
        self.visible = idx
        self.x = x_all[idx]
        self.y = y_all[idx]
        self.y_min = float(spec.y_min if spec.y_min is not None else y_all.min())
        self.y_max = float(spec.y_max if spec.y_max is not None else y_all.max())
        self._oracle: Oracle | None = None
        self._oracle_info: dict[str, Any] = {}

    # --- what a design looks like -------------------------------------------------------
    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def is_discrete(self) -> bool:
        return self.spec.discrete

    @property
    def num_classes(self) -> int:
        if self.spec.num_classes is None:
            raise AttributeError(f"{self.name} is continuous")
        return self.spec.num_classes

    @property
    def design_shape(self) -> tuple[int, ...]:
        """Shape of one raw design."""
        return tuple(self.x_all.shape[1:])

    @property
    def encoded_shape(self) -> tuple[int, ...]:
        """Shape of one design as the surrogate sees it (logits, or class integers, for discrete tasks)."""
        if self.is_discrete and self.encoding == "logits":
            return (*self.design_shape, self.num_classes - 1)
        return self.design_shape

    @property
    def input_dim(self) -> int:
        """Flattened size of an encoded design: the surrogate's input size."""
        return int(np.prod(self.encoded_shape))

    def encode(self, x: np.ndarray | Tensor) -> Tensor:
        """Raw designs ``(n, *design_shape)`` -> flat float32 features ``(n, input_dim)``."""
        x = torch.as_tensor(np.asarray(x) if not isinstance(x, Tensor) else x)
        if tuple(x.shape[1:]) != self.design_shape:
            raise ValueError(f"{self.name} designs have shape (n, {', '.join(map(str, self.design_shape))}), "
                             f"got {tuple(x.shape)}")
        if self.is_discrete and self.encoding == "integers":
            to_logits(x[:1], self.num_classes)  # the same type and range checks
            return x.reshape(len(x), -1).float()
        z = to_logits(x, self.num_classes) if self.is_discrete else x.float()
        return z.reshape(len(z), -1)

    def decode(self, z: Tensor) -> np.ndarray:
        """Flat features ``(n, input_dim)`` -> raw designs (integers for discrete tasks)."""
        z = z.detach().cpu().reshape(len(z), *self.encoded_shape)
        if self.is_discrete and self.encoding == "integers":
            return z.round().clamp(0, self.num_classes - 1).numpy().astype(self.x_all.dtype)
        if self.is_discrete:
            return from_logits(z).numpy().astype(self.x_all.dtype)
        return z.numpy().astype(self.x_all.dtype)

    def visible_designs(self) -> np.ndarray:
        """Every raw design of the visible split (before any ``max_samples`` subsample): the dataset
        design-bench makes visible, against which a search's final designs are checked for novelty."""
        return self.x_all[visible_indices(self.y_all, self.spec.min_percentile, self.spec.max_percentile)]

    def top_k(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` visible designs with the highest score, best first, and their scores."""
        order = np.argsort(-self.y, kind="stable")[:k]
        return self.x[order], self.y[order]

    # --- scoring --------------------------------------------------------------------------
    @property
    def oracle(self) -> Oracle:
        """The task's oracle, built on first use (see :attr:`oracle_info` for what it is)."""
        if self._oracle is None:
            kind = self.spec.oracle
            if kind == "exact":
                self._oracle = ExactOracle(self.x_all, self.y_all, self.num_classes)
                self._oracle_info = {"kind": "exact", "canonical": True, "ported": False,
                                     "description": "lookup table over every row of the full dataset"}
            elif kind == "closed_form":
                self._oracle = self._closed_form
                self._oracle_info = {"kind": "closed_form", "canonical": True, "ported": False,
                                     "description": "the synthetic task's closed-form objective"}
            elif kind in ("random_forest", "mujoco"):
                self._oracle, self._oracle_info = self._native_oracle()
            else:
                self._oracle = DesignBenchOracle(self.name)
                self._oracle_info = {"kind": "design_bench", "canonical": True, "ported": False,
                                     "description": "the installed design_bench package's own oracle"}
        return self._oracle

    @property
    def oracle_info(self) -> dict[str, Any]:
        """What scores this task, for ``results.json``: ``kind`` (``exact``, ``random_forest``,
        ``random_forest_refit``, ``mujoco_port``, ``design_bench``, ``closed_form``), ``description``,
        ``canonical`` (from design-bench's own files; false for a local refit), ``ported`` (design-bench's
        computation reimplemented here) and, for file-based oracles, ``file`` and ``sha256``."""
        _ = self.oracle
        return dict(self._oracle_info)

    @property
    def data_folder(self) -> Path:
        """The folder the task's shards were read from."""
        path = self.source.get("path")
        if not path or not Path(str(path)).is_dir():
            raise MissingDataError(f"{self.name}'s oracle files live beside its shards, but its data came from "
                                   f"{path}: pass the design-bench data directory as --data.data_dir")
        return Path(str(path))

    def _native_oracle(self) -> tuple[Oracle, dict[str, Any]]:
        """Superconductor's saved forest or Ant / D'Kitty's ported rollouts, from the task's folder."""
        folder, oracle_file = self.data_folder, str(self.spec.oracle_file)
        if self.spec.oracle == "mujoco":
            return morphology_oracle(self.name, folder / oracle_file, folder.parent)
        try:
            from lightning_mbo.tasks.forest.oracle import forest_oracle  # noqa: PLC0415
        except ImportError as err:
            raise MissingDependencyError(f"{self.name}'s oracle is a scikit-learn random forest, and scikit-learn "
                                         f"could not be imported ({err}); install it with pip install "
                                         "'lightning_mbo[continuous]'") from err
        return forest_oracle(self.name, folder, oracle_file, self.x_all, self.y_all, self.oracle_normalization,
                             self.seed)

    def score(self, x: np.ndarray) -> np.ndarray:
        """Raw oracle scores of raw designs ``(n, *design_shape)`` -> ``(n,)``."""
        x = np.asarray(x)
        if tuple(x.shape[1:]) != self.design_shape:
            raise ValueError(f"{self.name} designs have shape (n, {', '.join(map(str, self.design_shape))}), "
                             f"got {x.shape}")
        return np.asarray(self.oracle(x), dtype=np.float32).reshape(-1)

    def normalize_score(self, y: np.ndarray) -> np.ndarray:
        """``(y - y_min) / (y_max - y_min)`` with the FULL dataset's range (design-bench)."""
        return (np.asarray(y, dtype=np.float64) - self.y_min) / (self.y_max - self.y_min)

    @property
    def best_visible(self) -> float:
        """D(best): the normalised best visible score."""
        return float(self.normalize_score(self.y.max()))
