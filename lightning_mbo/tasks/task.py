"""A design-bench task: full data, the visible split, encoding, normalisation and the oracle."""

from __future__ import annotations

import os
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from lightning_mbo.tasks.encoding import from_logits, to_logits
from lightning_mbo.tasks.io import BadDataError, check_finite, read_task_data
from lightning_mbo.tasks.oracles import DesignBenchOracle, ExactOracle, Oracle
from lightning_mbo.tasks.registry import TaskSpec, get_spec
from lightning_mbo.tasks.synthetic import SYNTHETIC
from lightning_mbo.validation import SettingsError, check_choice

Subsample = Literal["random", "stride"]
#: How a discrete design reaches the surrogate: design-bench's ``logits`` (default) or its class
#: ``integers`` (for members that embed the sequence, as design-baselines' REINFORCE and CbAS).
Encoding = Literal["logits", "integers"]


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
    code's TFBind10 subsample takes rows at a fixed stride of the y-sorted set).
    """
    if n >= len(idx):
        return idx
    if how == "random":
        return np.sort(np.random.default_rng(seed).choice(idx, size=n, replace=False))
    if how == "stride":
        ordered = idx[np.argsort(y[idx], kind="stable")]
        return np.sort(ordered[np.linspace(0, len(ordered) - 1, n).round().astype(np.int64)])
    raise ValueError(f"unknown subsample {how!r}; choose 'random' or 'stride'")


class Task:
    """One task, loaded: what a method may see and how its designs are scored.

    Args:
        name: a registered task name (see ``lightning_mbo.tasks.TASKS``).
        data_dir: a design-bench data directory (or the task's folder itself), which must hold the
            task; ``None`` searches ``$LIGHTNING_MBO_DATA_DIR``, the installed design_bench package's
            data, then the shipped TFBind8.
        max_samples: keep this many visible rows (``None``: the task's design-bench default;
            ``0``: all visible rows).
        subsample: how ``max_samples`` rows are chosen: ``random`` or ``stride``.
        seed: seed of the ``random`` subsample.
        encoding: how discrete designs are encoded for the surrogate: ``logits`` or ``integers``.

    Attributes:
        source: where the data came from: ``origin`` (``"data_dir argument"``,
            ``"$LIGHTNING_MBO_DATA_DIR"``, ``"installed design_bench package"``, ``"shipped with
            lightning_mbo"`` or ``"closed form"``), ``path`` (the shard folder or shipped ``.npz``),
            ``files`` (files read) and ``sha256`` (hex digest of their bytes; ``None`` for closed-form tasks).
    """

    def __init__(
        self,
        name: str,
        data_dir: str | os.PathLike | None = None,
        max_samples: int | None = None,
        subsample: Subsample = "random",
        seed: int = 0,
        encoding: Encoding = "logits",
    ) -> None:
        self.spec: TaskSpec = get_spec(name)
        spec = self.spec
        check_choice("encoding (--data.encoding)", encoding, Encoding)
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

    def top_k(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` visible designs with the highest score, best first, and their scores."""
        order = np.argsort(-self.y, kind="stable")[:k]
        return self.x[order], self.y[order]

    # --- scoring --------------------------------------------------------------------------
    @property
    def oracle(self) -> Oracle:
        """The task's oracle, built on first use."""
        if self._oracle is None:
            if self.spec.oracle == "exact":
                self._oracle = ExactOracle(self.x_all, self.y_all, self.num_classes)
            elif self.spec.oracle == "closed_form":
                self._oracle = self._closed_form
            else:
                self._oracle = DesignBenchOracle(self.name)
        return self._oracle

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
