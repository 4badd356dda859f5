"""``python -m lightning_mbo data check TASK``: does the oracle here score the dataset as stored?

A sample of the full dataset's rows is re-scored with the task's oracle (as a run would build it)
and compared with the scores stored in the shards: Pearson and Spearman correlation, mean and
largest absolute difference (also as a share of the task's score range), and the share of rows
reproduced exactly. What to expect depends on the oracle:

* exact tables (TFBind): every row reproduced, but for designs stored more than once with other
  scores (the table keeps the last occurrence, as design-bench's);
* Superconductor's forest: the stored scores are measured critical temperatures, the forest a fit
  to 1000 of them, so the correlation is high but below 1. The sharp check is the forest's own:
  the saved split's validation half is re-scored as design-bench did when it fitted the forest,
  and its Spearman correlation must equal the one saved in the zip (``rank_correlation.npy``);
  it fails (exit status 1) when they differ by more than ``tolerance``;
* Ant / D'Kitty's ported rollouts: the stored scores are design-bench's own rollouts of the same
  policy, so a faithful port correlates closely; the numbers tell how closely.

No Lightning.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from lightning_mbo.tasks.task import OracleNormalization, Task


def agreement(scored: np.ndarray, stored: np.ndarray, span: float) -> dict[str, float]:
    """How ``scored`` ``(n,)`` agrees with ``stored`` ``(n,)``: Pearson, Spearman, mean and largest
    absolute difference (raw and as a share of ``span``, the task's score range) and the share equal."""
    from lightning_mbo.tasks.forest.oracle import spearman  # noqa: PLC0415

    a, b = np.asarray(scored, np.float64).reshape(-1), np.asarray(stored, np.float64).reshape(-1)
    diff = np.abs(a - b)
    constant = a.std() == 0 or b.std() == 0
    return {
        "pearson": float("nan") if constant else float(np.corrcoef(a, b)[0, 1]),
        "spearman": float("nan") if constant else spearman(a, b),
        "mean_abs_diff": float(diff.mean()), "max_abs_diff": float(diff.max()),
        "mean_abs_diff_normalized": float(diff.mean() / span), "exact_share": float((diff == 0).mean()),
    }


def check(task: str, data_dir: str | os.PathLike | None = None, rows: int = 128, seed: int = 0,
          oracle_normalization: OracleNormalization = "released", tolerance: float = 1e-3) -> dict[str, Any]:
    """Re-score ``rows`` rows of ``task``'s full dataset and compare with the stored scores.

    Args:
        task: a registered task name.
        data_dir: the design-bench data directory (as ``--data.data_dir``).
        rows: how many rows to re-score, drawn uniformly without replacement (0: every row).
        seed: seed of the draw and of the oracle's ``released`` normalisation.
        oracle_normalization: Superconductor's normalisation (``released`` or ``split``).
        tolerance: the largest difference allowed between the re-scored and the saved split Spearman.

    Returns:
        ``task``, ``oracle`` (``Task.oracle_info``), ``rows`` / ``dataset_rows``, ``agreement``
        (:func:`agreement`), ``split`` (Superconductor's split check or ``None``) and ``passed``
        (the split check's verdict; ``None`` where no check with an exact expectation ran).
    """
    t = Task(task, data_dir=data_dir, max_samples=0, seed=seed, oracle_normalization=oracle_normalization)
    n = len(t.y_all)
    take = n if rows <= 0 or rows >= n else rows
    idx = np.sort(np.random.default_rng(seed).choice(n, size=take, replace=False))
    scored = t.score(t.x_all[idx])
    result: dict[str, Any] = {
        "task": task, "oracle": t.oracle_info, "rows": int(take), "dataset_rows": int(n), "seed": seed,
        "agreement": agreement(scored, t.y_all[idx], t.y_max - t.y_min), "split": None, "passed": None,
    }
    if t.spec.oracle == "random_forest":
        from lightning_mbo.tasks.forest.oracle import read_forest_zip, split_validation  # noqa: PLC0415

        split = split_validation(read_forest_zip(Path(t.oracle_info["file"])), t.data_folder.parent, t.x_all, t.y_all)
        result["split"] = split
        if split is not None and split["difference"] is not None:
            result["passed"] = bool(split["difference"] <= tolerance)
    return result


def format_check(result: dict[str, Any]) -> str:
    """The result of :func:`check` as a few lines of text."""
    oracle, agree = result["oracle"], result["agreement"]
    lines = [f"{result['task']}: {oracle['kind']} oracle ({oracle['description']})"]
    if oracle.get("file"):
        lines.append(f"  file {oracle['file']} (sha256 {oracle['sha256'][:16]}...)")
    if oracle.get("normalization"):
        seed = f", seed {oracle['normalization_seed']}" if oracle.get("normalization_seed") is not None else ""
        lines.append(f"  normalisation {oracle['normalization']} ({oracle['normalization_rows']} rows{seed}); "
                     f"scikit-learn {oracle['sklearn']}, forest pickled with {oracle['pickled_with_sklearn']}, "
                     f"{len(oracle['compat_shims'])} compatibility shims")
    lines.append(f"  re-scored {result['rows']:,} of {result['dataset_rows']:,} dataset rows (seed {result['seed']}): "
                 f"Pearson {agree['pearson']:.4f}, Spearman {agree['spearman']:.4f}, mean |oracle - stored| "
                 f"{agree['mean_abs_diff']:.4g} ({agree['mean_abs_diff_normalized']:.2%} of the score range), "
                 f"largest {agree['max_abs_diff']:.4g}, {agree['exact_share']:.1%} equal")
    split = result.get("split")
    if split is not None:
        saved = "not saved in the zip" if split["saved_spearman"] is None else f"{split['saved_spearman']:.6f} saved"
        lines.append(f"  forest's own check: Spearman on the saved split's {split['rows']} validation rows "
                     f"{split['spearman']:.6f}, {saved}")
    elif oracle["kind"].startswith("random_forest"):
        lines.append("  forest's own check skipped: the saved split (superconductor/split-*.npy) is not there")
    if result["passed"] is not None:
        lines.append("  PASSED: the forest reproduces design-bench's own validation score" if result["passed"] else
                     "  FAILED: the forest does not reproduce design-bench's own validation score; the unpickled "
                     "forest or the split is not design-bench's")
    return "\n".join(lines) + "\n"


def write_json(result: dict[str, Any], path: str | os.PathLike) -> None:
    """Write :func:`check`'s result as JSON (NaN correlations as ``NaN``, as Python's json does)."""
    Path(path).write_text(json.dumps(result, indent=2, default=float) + "\n")
