"""What TensorBoard opens on: a Custom Scalars page for training, a curated HParams table, a text
summary per run, and the final design scores logged once, at the run's last training step.

Tags (also in :data:`LEGEND`, which every run carries as text):

* ``train/loss``, ``train/lambda``, ``val/pearson``: means over the stacked members;
  ``members/train_loss_m<i>``, ``members/train_lambda_m<i>``, ``members/val_pearson_m<i>``: each member;
* ``train/grad_norm``: the unscaled ``‖∇_ω h‖`` (IGNITE's constraint is ``ρ‖∇_ω h‖ ≤ ε``);
  ``train/violation``: ``ρ‖∇_ω h‖ − ε`` (positive while violated);
* ``design/score_100th`` (80th, 50th): normalised oracle scores of the final designs;
  ``design/start_score_100th``: of the unmodified starting designs; ``design/predicted_*``: the
  surrogate's prediction along the search, one point per step.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pytorch_lightning.loggers import TensorBoardLogger
from torch.utils.tensorboard.summary import hparams as hparams_summary

from lightning_mbo.functional.metrics import spearman
from lightning_mbo.results import movement_text, row_flags

__all__ = ["LAYOUT", "LEGEND", "curated_hparams", "log_run", "results_markdown", "scatter", "write_layout"]

#: The Custom Scalars page: what a researcher compares first, mean and members on one chart.
LAYOUT: dict[str, dict[str, list[Any]]] = {
    "training": {
        "loss (mean and members)": ["Multiline", [r"^train/loss$", r"^members/train_loss_m\d+$"]],
        "IGNITE λ (mean and members)": ["Multiline", [r"^train/lambda$", r"^members/train_lambda_m\d+$"]],
        "validation Pearson (mean and members)": ["Multiline", [r"^val/pearson$", r"^members/val_pearson_m\d+$"]],
        "IGNITE ‖∇_ω h‖ (unscaled) and ρ‖∇h‖ − ε": ["Multiline", [r"^train/grad_norm$", r"^train/violation$"]],
    },
    "design search": {
        "predicted score along the search (raw units)": ["Multiline", [r"^design/predicted_(mean|max)$"]],
        "final and starting designs (normalised)": ["Multiline", [r"^design/(start_)?score_\d+th$"]],
        "did the search move? (share moved, share in data)": ["Multiline",
                                                               [r"^design/(moved|in_data)_fraction$"]],
    },
}

LEGEND = """\
| tag | what it is |
| --- | --- |
| `train/loss` | data loss (Gaussian NLL or MSE), mean over the stacked members |
| `train/lambda` | IGNITE's Lagrange multiplier λ, mean over members (the value the step descended with) |
| `train/grad_norm` | the unscaled ‖∇_ω h‖, h the mean prediction over the batch; the constraint is ρ‖∇_ω h‖ ≤ ε |
| `train/violation` | ρ‖∇_ω h‖ − ε: positive while the constraint is violated |
| `val/pearson` | validation Pearson correlation, mean over members |
| `members/*_m<i>` | the same per member |
| `design/score_<q>th` | the q-th percentile of the final designs' normalised oracle scores (logged once) |
| `design/start_score_<q>th` | the same for the unmodified starting designs: the bar to beat |
| `design/predicted_mean`, `_max` | the surrogate's prediction (raw units) at each search step |
| `design/predicted_vs_oracle` | final designs: predicted vs oracle score, both normalised |
| `design/moved_fraction` | share of final designs that are none of the starting designs (flagged under 5% and 25%) |
| `design/hamming_mean`, `_l2_mean` | mean distance to the nearest start: positions (discrete), normalised L2 |
| `design/in_data_fraction` | share of final designs already in the visible dataset |
| `ignite/lambda_end`, `ignite/rho_grad_norm_end` | λ and ρ‖∇h‖ (moving average) when training ended |
"""


def write_layout(logger: TensorBoardLogger) -> None:
    """Write the Custom Scalars layout into the run (TensorBoard: the CUSTOM SCALARS tab)."""
    logger.experiment.add_custom_scalars(LAYOUT)


def _flat(prefix: str, value: Any) -> dict[str, Any]:
    """Settings as HParams values: dataclasses flattened (``ignite.rho``), sequences as text."""
    if value is None:
        return {prefix: "off"}
    if hasattr(value, "__dataclass_fields__"):
        value = {f: getattr(value, f) for f in value.__dataclass_fields__}
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if not str(key).startswith("_"):
                out.update(_flat(f"{prefix}.{key}", item))
        return out
    if isinstance(value, (bool, int, float, str)):
        return {prefix: value}
    return {prefix: str(list(value) if isinstance(value, tuple) else value)}


def curated_hparams(model_hparams: dict[str, Any], row: dict[str, Any], epochs: int | None,
                    data_hparams: dict[str, Any]) -> dict[str, Any]:
    """What the HParams table compares: the method, its network and training, the search that ran."""
    out: dict[str, Any] = {"method": row["method"], "task": row["task"], "seed": row["seed"],
                           "epochs": -1 if epochs is None else int(epochs)}
    for key, value in model_hparams.items():
        if key.startswith("_") or key == "input_dim":
            continue
        out.update(_flat(key, value))
    for key, value in row["ascent"].items():
        out[f"search.{key}"] = value
    for key in ("batch_size", "max_samples"):
        out.update(_flat(f"data.{key}", data_hparams.get(key)))
    return out


def log_run(logger: TensorBoardLogger, step: int, hparams: dict[str, Any], metrics: dict[str, float],
            texts: dict[str, str]) -> None:
    """The run's final values, each logged once at ``step``; an HParams session whose columns
    are ``hparams`` and whose metrics are ``metrics`` (and the final ``val/pearson``); texts."""
    logger.log_metrics(metrics, step=step)
    metric_tags = {**dict.fromkeys(metrics, 0.0), "val/pearson": 0.0}
    experiment, start, end = hparams_summary(hparams, metric_tags)
    writer = logger.experiment._get_file_writer()
    for summary in (experiment, start, end):
        writer.add_summary(summary)
    for tag, text in texts.items():
        logger.experiment.add_text(tag, text, step)


def scatter(predicted: np.ndarray, oracle: np.ndarray, best_visible: float | None, title: str):
    """Predicted versus oracle score of the final designs, both normalised, with ``y = x``, the
    best visible score D(best) and Spearman's rank correlation in the title."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, ax = plt.subplots(figsize=(4.8, 4.4))
    ax.scatter(predicted, oracle, s=8, alpha=0.7)
    lo = float(min(np.min(predicted), np.min(oracle)))
    hi = float(max(np.max(predicted), np.max(oracle)))
    ax.plot([lo, hi], [lo, hi], color="grey", linewidth=0.8, label="y = x")
    if best_visible is not None:
        ax.axhline(best_visible, color="tab:red", linestyle="dotted", linewidth=0.8, label="D(best)")
    ax.set_xlabel("surrogate's predicted score (normalised)")
    ax.set_ylabel("oracle score (normalised)")
    rho = spearman(predicted, oracle) if len(predicted) > 1 else float("nan")
    ax.set_title(f"{title}; Spearman {rho:.2f}", fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig


def results_markdown(rows: list[dict[str, Any]]) -> str:
    """The run's rows as a Markdown table (one line per replicate), with how far the search moved,
    the predicted scores at the start and the end, and the flags a reader must see."""
    lines = ["| replicate | 100th | 80th | 50th | starting designs 100th | D(best) | movement "
             "| predicted start → final (raw) | flags | search |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        best = "-" if r["best_visible"] is None else f"{r['best_visible']:.3f}"
        pred = (f"{r['mean_predicted_start']:.3g} → {r['mean_predicted_final']:.3g}"
                if "mean_predicted_start" in r else "-")
        lines.append(f"| {r['replicate']} | {r['score_100th']:.3f} | {r['score_80th']:.3f} | {r['score_50th']:.3f} "
                     f"| {r['start_score_100th']:.3f} | {best} | {movement_text(r)} | {pred} "
                     f"| {'; '.join(row_flags(r)) or '-'} | {r['ascent']} |")
    return "\n".join(lines)
