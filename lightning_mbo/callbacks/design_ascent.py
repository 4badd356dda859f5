"""At the end of fitting: ascend the top designs, score them once with the oracle, write results."""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.loggers import TensorBoardLogger

from lightning_mbo.callbacks.tensorboard import (
    LEGEND,
    curated_hparams,
    log_run,
    results_markdown,
    scatter,
    write_layout,
)
from lightning_mbo.functional.metrics import score_percentiles
from lightning_mbo.results import MOVEMENT_KEYS, movement_text, provenance, row_flags, save_json, save_npy
from lightning_mbo.search import (
    AscentOptimizer,
    AscentResult,
    GradientAscent,
    Searchable,
    SearchData,
    Searcher,
    SearchObjective,
)
from lightning_mbo.validation import SettingsError, check_range


class DesignAscent(Callback):
    """Design search and oracle scoring once fitting ends (``--ascent.*`` on the command line).

    The one home of the search settings: the searcher and its settings (what gradient ascent is
    not given comes from the method's :meth:`~lightning_mbo.search.Searchable.search_defaults`;
    every searcher runs through the same :meth:`~lightning_mbo.search.Searcher.search`). Takes the top
    ``num_candidates`` visible designs from the datamodule, hands the method the training data
    (:class:`~lightning_mbo.search.SearchData`), ascends the objective the method returns (with
    its per-step hook, if any), decodes the final designs, scores them once with the oracle and
    logs the normalised 100th/80th/50th percentiles, next to those of the unmodified starting
    designs (the bar to beat). Writes ``designs.npy`` (raw designs), ``scores.npy`` (raw oracle
    scores) and ``results.json`` (see :mod:`lightning_mbo.results`) atomically into the run's
    log directory. Under DDP the candidates are split across ranks and gathered before rank 0
    scores and writes. The fit time it reports is the whole fit's, across resumes (it travels
    in checkpoints).

    Args:
        steps: ascent steps (``null``: the method's default).
        lr: ascent step size (``null``: the method's default).
        optimizer: ``sgd`` or ``adam`` (``null``: the method's default).
        num_candidates: designs handed back (the protocol's 128).
        output_dir: where results go (``null``: the trainer's log directory).
        searcher: the optimizer over designs, on the method's predicted score:
            ``lightning_mbo.search.CMAES``, ``lightning_mbo.search.BOqEI`` or any
            :class:`~lightning_mbo.search.Searcher`, each with its budget in its own settings
            (``null``: :class:`~lightning_mbo.search.GradientAscent` with ``steps``, ``lr`` and
            ``optimizer`` above, the short spelling of its settings).
    """

    def __init__(
        self,
        steps: int | None = None,
        lr: float | None = None,
        optimizer: AscentOptimizer | None = None,
        num_candidates: int = 128,
        output_dir: str | None = None,
        searcher: Searcher | None = None,
    ) -> None:
        check_range("--ascent.num_candidates", num_candidates, 1)
        if searcher is not None and (steps, lr, optimizer) != (None, None, None):
            raise SettingsError("--ascent.steps, --ascent.lr and --ascent.optimizer set gradient ascent's budget; "
                                f"{type(searcher).__name__} has its own (--ascent.searcher.init_args.*)")
        self.searcher: Searcher = searcher if searcher is not None else GradientAscent(steps, lr, optimizer)
        self.num_candidates = num_candidates
        self.output_dir = output_dir
        self.results: dict[str, Any] | None = None
        self._fit_start: float | None = None  # set when fitting starts; None for ascent on a checkpoint
        self._fit_before = 0.0  # fit time of earlier runs this one resumes
        self._run_info: dict[str, Any] = {}

    def connect(self, config_files: list[str] | None = None, checkpoint: str | None = None) -> None:
        """What only the entry point knows, recorded in ``results.json``'s provenance: the config
        files of the run and, for ``ascend``, the checkpoint searched on."""
        self._run_info = {"config_files": config_files or [], "checkpoint": checkpoint}

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._fit_start = time.perf_counter()
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                if isinstance(logger, TensorBoardLogger):
                    write_layout(logger)

    def fit_seconds(self) -> float:
        """Seconds spent fitting, over this run and the runs it resumed (0 for ``ascend``)."""
        now = time.perf_counter() - self._fit_start if self._fit_start is not None else 0.0
        return self._fit_before + now

    def state_dict(self) -> dict[str, Any]:
        return {"fit_seconds": self.fit_seconds()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._fit_before = float(state_dict.get("fit_seconds", 0.0))

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.interrupted:
            return
        # Lightning's teardown has already moved the module to the CPU when on_fit_end runs; the
        # ascent belongs on the device the model was trained on, then the module goes back.
        device = trainer.strategy.root_device
        moved = pl_module.device != device
        if moved:
            pl_module.to(device)
        try:
            self.run(trainer, pl_module, trainer.datamodule)
        finally:
            if moved:
                pl_module.cpu()

    def _search(self, searcher: Searcher, x0: torch.Tensor, objective: SearchObjective, data: SearchData,
                ids: torch.Tensor, seed: int) -> AscentResult:
        """Run ``searcher`` on the method's predicted score."""
        if objective.before_step is not None and not searcher.runs_step_hook:
            raise SettingsError(f"{type(searcher).__name__} cannot run this method's per-step hook (e.g. "
                                "Tri-mentoring's mentoring, defined for gradient ascent): drop --ascent.searcher or "
                                "set the method's mentoring off")
        data = dataclasses.replace(data, x=data.x.to(x0.device), y=data.y.to(x0.device))
        return searcher.search(x0, objective, data, ids, self.num_candidates, seed)

    def _search_replicates(self, searcher: Searcher, pl_module: Searchable, x0: torch.Tensor, data: SearchData,
                           mine: torch.Tensor, seeds: list[int]) -> AscentResult:
        """Search each replicate's candidates among ``mine`` as a plain run of its seed would: on its own
        members, with candidate ids counted within the replicate and the replicate's seed. Flags are
        prefixed with ``[seed s]`` (each results row keeps its own)."""
        per, total = self.num_candidates, len(seeds) * self.num_candidates
        parts = []
        for r in (mine // per).unique().tolist():
            ids = mine[mine // per == r]
            objective = pl_module.search_objective(x0[ids], data, ids, total)
            parts.append((seeds[r], self._search(searcher, x0[ids], objective, data, ids - r * per, seeds[r])))
        steps = max(part.trajectory.shape[0] for _, part in parts)
        # A search that stopped early holds its last value (CMA-ES stops when every strategy has).
        traj = torch.cat([torch.cat([p.trajectory, p.trajectory[-1:].expand(steps - p.trajectory.shape[0], -1)])
                          for _, p in parts], 1)
        diagnostics: dict[str, Any] = {}
        for seed, part in parts:
            for key, value in part.diagnostics.items():
                if key == "flags":
                    diagnostics.setdefault(key, []).extend(f"[seed {seed}] {flag}" for flag in value)
                elif isinstance(value, list) and len(value) == part.x.shape[0]:
                    diagnostics.setdefault(key, []).extend(value)
                else:
                    diagnostics.setdefault(key, value)
        return AscentResult(torch.cat([p.x for _, p in parts]), traj, parts[0][1].stats, diagnostics)

    def run(self, trainer: pl.Trainer, pl_module: pl.LightningModule, datamodule) -> dict[str, Any] | None:
        """Ascend, score, log and write; returns the results on rank 0 (None elsewhere)."""
        t0 = time.perf_counter()
        fit_seconds = self.fit_seconds()
        if not isinstance(pl_module, Searchable):
            raise TypeError(f"{type(pl_module).__name__} does not offer design search: implement "
                            "lightning_mbo.search.Searchable (search_defaults, search_objective, ...)")
        data = datamodule.search_data()
        searcher = self.searcher.configure(pl_module.search_defaults(data))
        seed = _seed(trainer, datamodule)
        # Seeds as a batch dimension: every replicate ascends its own copy of the starting designs,
        # replicate r as a run of seed + r (its row's seed, its searcher's seed).
        reps = pl_module.replicates
        seeds = [(seed or 0) + r for r in range(reps)]
        total = reps * self.num_candidates
        x0 = datamodule.starting_designs(self.num_candidates).to(pl_module.device).repeat(reps, 1)
        rank, world = trainer.global_rank, trainer.world_size
        if total % world:
            raise ValueError(f"{total} candidates do not split evenly over {world} processes")
        mine = torch.arange(total, device=x0.device).tensor_split(world)[rank]
        was_training = pl_module.training
        pl_module.eval()
        objective = pl_module.search_objective(x0[mine], data, mine, total)
        with torch.no_grad():
            # The prediction at the training data's top, next to the final one: extrapolation shows.
            start_pred = objective.score(x0[mine]).detach()
        if reps == 1 or searcher.joint_replicates:
            result = self._search(searcher, x0[mine], objective, data, mine, seeds[0])
        else:
            result = self._search_replicates(searcher, pl_module, x0, data, mine, seeds)
        pl_module.train(was_training)
        x, traj, diagnostics = result.x, result.trajectory, result.diagnostics
        if world > 1:
            x = trainer.strategy.all_gather(x).reshape(total, -1)
            traj = trainer.strategy.all_gather(traj).permute(1, 0, 2).reshape(traj.shape[0], total)
            start_pred = trainer.strategy.all_gather(start_pred).reshape(total)
            diagnostics = _gather_diagnostics(diagnostics, world, len(mine))
        ascent_seconds = time.perf_counter() - t0
        # trainer.log_dir is a collective under DDP: every rank asks for it.
        out = Path(self.output_dir) if self.output_dir else Path(trainer.log_dir or trainer.default_root_dir)
        if rank != 0:
            return None

        designs = datamodule.decode(x)
        scores = datamodule.score(designs)
        normalized = datamodule.normalize_score(scores)
        pred = datamodule.denormalize_y(traj.float().cpu())  # (steps + 1, total), raw score units
        pred_start = datamodule.denormalize_y(start_pred.float().cpu())
        task = datamodule.task
        # The unmodified starting designs, scored by the oracle: what search must beat.
        start = score_percentiles(datamodule.normalize_score(datamodule.score(task.top_k(self.num_candidates)[0])))
        blocks = np.split(np.arange(total), reps)
        moved = datamodule.movement(x, designs, blocks, self.num_candidates)
        rows = []
        for r, idx in enumerate(blocks):
            rows.append({
                "task": task.name,
                "method": searcher.result_name(pl_module.method_name()),
                "seed": seeds[r] if reps > 1 else seed,
                "replicate": r,
                **score_percentiles(normalized[idx]),
                **{f"start_{k}": v for k, v in start.items()},
                "best_visible": task.best_visible,
                "oracle": task.oracle_info["kind"],
                "num_candidates": self.num_candidates,
                "ascent": searcher.settings(),
                "mean_predicted_start": float(pred_start[idx].mean()),
                "mean_predicted_final": float(pred[-1, idx].mean()),
                **moved[r],
                "search_diagnostics": _replicate_diagnostics(diagnostics, idx, total, seeds[r] if reps > 1 else None),
                **pl_module.method_summary(r),
                "fit_seconds": fit_seconds,
                "ascent_seconds": ascent_seconds,
                "wall_seconds": fit_seconds + ascent_seconds,
            })
        results = {"rows": rows, "provenance": provenance(
            **self._run_info, config_saved=str(out / "config.yaml") if (out / "config.yaml").exists() else None,
            data=task.source, oracle=task.oracle_info, device=str(x0.device), output_dir=str(out),
        )}
        self.results = results
        self._log(trainer, pl_module, rows, pred, normalized, result.stats, datamodule, out)
        shape = (reps, self.num_candidates) if reps > 1 else (self.num_candidates,)
        save_npy(out / "designs.npy", designs.reshape(*shape, *designs.shape[1:]))
        save_npy(out / "scores.npy", scores.reshape(shape))
        save_json(out / "results.json", results)
        for row in rows:
            which = f" replicate {row['replicate']}" if reps > 1 else ""
            print(
                f"{task.name} {row['method']}{which}: normalised "
                f"score 100th {row['score_100th']:.3f}, 80th {row['score_80th']:.3f}, 50th {row['score_50th']:.3f} "
                f"(starting designs {start['score_100th']:.3f}, D(best) {task.best_visible:.3f}); "
                f"{movement_text(row)}{''.join(f'; {flag}' for flag in row_flags(row))}; results in {out}",
                flush=True,
            )
        return results

    def _log(self, trainer: pl.Trainer, pl_module: pl.LightningModule, rows: list[dict[str, Any]],
             pred: torch.Tensor, normalized: np.ndarray, stats: dict[str, list[float]], datamodule: Any,
             out: Path) -> None:
        """Final scores (once, at the last training step), the HParams session, a text summary,
        the score histogram, the predicted-versus-oracle scatter and the search trajectories."""
        step = trainer.global_step
        final = {f"design/{k}": float(np.mean([r[k] for r in rows]))
                 for k in rows[0] if k.startswith(("score_", "start_score_"))}
        final.update({f"design/{k}": float(np.mean([r[k] for r in rows])) for k in MOVEMENT_KEYS if k in rows[0]})
        final["time/wall_seconds"] = float(np.mean([r["wall_seconds"] for r in rows]))
        if "ignite" in rows[0]:
            final["ignite/lambda_end"] = float(np.mean([v for r in rows for v in r["ignite"]["lambda"]]))
            final["ignite/rho_grad_norm_end"] = float(np.mean([v for r in rows for v in r["ignite"]["rho_grad_norm"]]))
        for logger in trainer.loggers:
            if not isinstance(logger, TensorBoardLogger):
                logger.log_metrics(final, step=step)
                logger.save()
                continue
            exp = logger.experiment
            hparams = curated_hparams(dict(pl_module.hparams), rows[0], trainer.max_epochs,
                                      dict(datamodule.hparams))
            config = out / "config.yaml"
            texts = {"run/results": results_markdown(rows), "run/legend": LEGEND}
            if config.exists():
                texts["run/config"] = "```yaml\n" + config.read_text() + "\n```"
            log_run(logger, step, hparams, final, texts)
            exp.add_histogram("design/normalized_scores", normalized, step)
            predicted = datamodule.normalize_score(pred[-1].numpy())
            title = f"{rows[0]['method']}: 100th {final['design/score_100th']:.3f}"
            exp.add_figure("design/predicted_vs_oracle", scatter(predicted, normalized, rows[0]["best_visible"], title),
                           step)
            # Predicted-score trajectory over search steps (mean and max over candidates).
            for t in range(pred.shape[0]):
                exp.add_scalar("design/predicted_mean", float(pred[t].mean()), t)
                exp.add_scalar("design/predicted_max", float(pred[t].max()), t)
            # Method-specific per-step statistics (e.g. Tri-mentoring's disagreement sizes).
            for name, values in stats.items():
                for t, v in enumerate(values):
                    exp.add_scalar(f"design/{name}", v, t)
            logger.save()


def _replicate_diagnostics(diagnostics: dict[str, Any], idx: np.ndarray, total: int,
                           seed: int | None = None) -> dict[str, Any]:
    """One replicate's share of a search's diagnostics: per-candidate lists (length ``total``) cut
    to the replicate's candidates ``idx``, flags prefixed ``[seed s]`` kept for ``seed`` only (the
    prefix dropped), everything else as is."""
    out = {k: [v[i] for i in idx] if isinstance(v, list) and len(v) == total and k != "flags" else v
           for k, v in diagnostics.items()}
    if seed is not None and "flags" in out:
        mark = f"[seed {seed}] "
        out["flags"] = [f[len(mark):] if f.startswith(mark) else f for f in out["flags"]
                        if f.startswith(mark) or not f.startswith("[seed ")]
    return out


def _gather_diagnostics(diagnostics: dict[str, Any], world: int, local: int) -> dict[str, Any]:
    """Every process's diagnostics as one: per-candidate lists (``local`` entries on each process)
    concatenated in rank order (the candidates' order), flags merged, other values rank 0's."""
    import torch.distributed as dist  # noqa: PLC0415

    parts: list[dict[str, Any]] = [{} for _ in range(world)]
    dist.all_gather_object(parts, diagnostics)
    out = dict(parts[0])
    for key, value in parts[0].items():
        if key == "flags":
            out[key] = sorted({flag for p in parts for flag in p.get(key, [])})
        elif isinstance(value, list) and len(value) == local:
            out[key] = [item for p in parts for item in p.get(key, [])]
    return out


def _seed(trainer: pl.Trainer, datamodule) -> int | None:
    seed = os.environ.get("PL_GLOBAL_SEED")
    return int(seed) if seed is not None else datamodule.seed
