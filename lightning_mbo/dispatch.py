"""Running a grid's fits on ``submitit``: a SLURM cluster or this machine, one code path.

Every run of a grid is one :class:`FitJob`: ``python -m lightning_mbo fit ...`` in its own
process (so DDP can re-launch it), its output in ``<run_dir>/run.log``. ``submitit`` starts the
jobs: its ``LocalExecutor`` on this machine (at most ``workers`` at once, each with its own GPU
where the machine has them), or its ``SlurmExecutor`` (``partition``, ``gpus_per_run``,
``timeout_min``, ``array_parallelism``). A job that SLURM pre-empts or times out is requeued by
submitit (:class:`FitJob` is ``Checkpointable``) and resumes from the run's ``last.ckpt``: the
run itself saves it on the SIGTERM that precedes the kill (``CheckpointOnInterrupt``).
"""

from __future__ import annotations

import json
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import submitit
from submitit.helpers import Checkpointable

from lightning_mbo.fit import fit_command
from lightning_mbo.validation import SettingsError, check_choice, check_range

Cluster = Literal["local", "slurm"]


@dataclass
class Executor:
    """Where and how a grid's runs execute (``--executor.*`` on ``benchmark``).

    Attributes:
        cluster: ``local`` (this machine, submitit's LocalExecutor) or ``slurm``.
        workers: runs at once on this machine (``local``); ``null``: one per GPU, else 1.
        gpus_per_run: GPUs each run gets (``local``: 1 where the machine has GPUs, else 0; ``slurm``: as given).
        cpus_per_run: CPU cores each SLURM run asks for.
        partition: the SLURM partition (``slurm``).
        timeout_min: the time limit of one run, in minutes (a SLURM job is requeued past it).
        array_parallelism: SLURM array jobs running at once.
        folder: where submitit keeps its job files (``null``: ``<output_dir>/submitit``).
        max_requeues: how many times a pre-empted or timed-out run is requeued.
    """

    cluster: Cluster = "local"
    workers: int | None = None
    gpus_per_run: int | None = None
    cpus_per_run: int = 4
    partition: str | None = None
    timeout_min: int = 24 * 60
    array_parallelism: int = 64
    folder: str | None = None
    max_requeues: int = 3

    def __post_init__(self) -> None:
        check_choice("executor.cluster (--executor.cluster)", self.cluster, Cluster)
        if self.workers is not None:
            check_range("executor.workers (--executor.workers)", self.workers, 1)
        if self.gpus_per_run is not None:
            check_range("executor.gpus_per_run (--executor.gpus_per_run)", self.gpus_per_run, 0)
        for name in ("cpus_per_run", "timeout_min", "array_parallelism"):
            check_range(f"executor.{name} (--executor.{name})", getattr(self, name), 1)
        check_range("executor.max_requeues (--executor.max_requeues)", self.max_requeues, 0)
        if self.cluster == "slurm" and not self.partition:
            raise SettingsError("a SLURM grid needs a partition: set --executor.partition")


class FitJob(Checkpointable):
    """One run of a grid: ``python -m lightning_mbo fit <args>`` in ``run_dir``, resumed from its
    ``last.ckpt`` when one is there (a requeued job, or a grid started again after a crash).

    Returns ``run_dir``'s job record (``grid_job.json``: the arguments, the resolved config the
    grid keys finished runs on, and the start and end times).
    """

    def __init__(self, cli_args: list[str], run_dir: str, resolved: str) -> None:
        self.cli_args, self.run_dir, self.resolved = list(cli_args), str(run_dir), resolved

    def __call__(self) -> dict[str, Any]:
        from lightning_mbo.results import save_json  # noqa: PLC0415

        run_dir = Path(self.run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        args = list(self.cli_args)
        last = sorted(run_dir.rglob("last.ckpt"))
        if last:
            args += [f"--ckpt_path={last[-1]}"]
        started = time.time()
        log = run_dir / "run.log"
        with log.open("a") as f:
            proc = subprocess.run(fit_command(args), stdout=f,
                                  stderr=subprocess.STDOUT, check=False)
        if proc.returncode != 0:
            tail = "".join(log.read_text().splitlines(keepends=True)[-30:])
            raise RuntimeError(f"run failed (exit {proc.returncode}): {' '.join(args)}\n--- {log} (tail) ---\n{tail}")
        job = {"args": self.cli_args, "resolved": self.resolved, "started": started, "finished": time.time(),
               "resumed_from": str(last[-1]) if last else None}
        save_json(run_dir / "grid_job.json", job)
        return job


def _local_gpus() -> int:
    try:
        import torch  # noqa: PLC0415

        return torch.cuda.device_count()
    except Exception:  # noqa: BLE001 - no usable CUDA: a CPU machine
        return 0


def run_jobs(jobs: list[FitJob], executor: Executor, folder: Path) -> list[dict[str, Any]]:
    """Run ``jobs`` on ``executor``; returns their job records, in order. A failed run raises after
    the others finish, naming every failure."""
    folder = Path(executor.folder) if executor.folder else folder
    if not jobs:
        return []
    if executor.cluster == "slurm":
        ex = submitit.AutoExecutor(folder=folder, cluster="slurm", slurm_max_num_timeout=executor.max_requeues)
        ex.update_parameters(slurm_partition=executor.partition, gpus_per_node=executor.gpus_per_run or 0,
                             cpus_per_task=executor.cpus_per_run, timeout_min=executor.timeout_min,
                             slurm_array_parallelism=executor.array_parallelism, tasks_per_node=1, nodes=1,
                             name="lightning_mbo")
        with ex.batch():
            handles = [ex.submit(job) for job in jobs]
        return _results(handles, jobs)
    return _results(_run_local(jobs, executor, folder), jobs)


def _run_local(jobs: list[FitJob], executor: Executor, folder: Path) -> list[Any]:
    """At most ``workers`` jobs at once on this machine, each given its own GPUs where there are any."""
    gpus = _local_gpus()
    per_run = executor.gpus_per_run if executor.gpus_per_run is not None else (1 if gpus else 0)
    if per_run > gpus:
        raise SettingsError(f"each run asks for {per_run} GPU(s) but this machine has {gpus}: set "
                            "--executor.gpus_per_run")
    workers = executor.workers or (max(1, gpus // per_run) if per_run else 1)
    if per_run and workers * per_run > gpus:
        raise SettingsError(f"{workers} workers x {per_run} GPU(s) each is more than this machine's {gpus}: lower "
                            "--executor.workers")
    free = [list(range(w * per_run, (w + 1) * per_run)) for w in range(workers)]
    handles: list[Any] = [None] * len(jobs)
    running: dict[int, list[int]] = {}
    queue = list(range(len(jobs)))
    while queue or running:
        while queue and free:
            i, devices = queue.pop(0), free.pop(0)
            ex = submitit.LocalExecutor(folder=folder, max_num_timeout=executor.max_requeues)
            ex.update_parameters(timeout_min=executor.timeout_min, gpus_per_node=len(devices),
                                 visible_gpus=tuple(devices))
            handles[i] = ex.submit(jobs[i])
            running[i] = devices
        for i in [i for i in running if handles[i].done()]:
            free.append(running.pop(i))
        time.sleep(0.2)
    return handles


def _results(handles: list[Any], jobs: list[FitJob]) -> list[dict[str, Any]]:
    out, failures = [], []
    for handle, job in zip(handles, jobs, strict=True):
        try:
            out.append(handle.result())
        except Exception as err:  # noqa: BLE001 - every failure is reported together below
            failures.append(f"{job.run_dir}: {str(err).strip().splitlines()[0] if str(err).strip() else err!r}")
            out.append({})
    if failures:
        raise RuntimeError(f"{len(failures)} of {len(jobs)} runs failed (see each run.log):\n" + "\n".join(failures))
    return out


def read_job(run_dir: Path) -> dict[str, Any]:
    """A run's ``grid_job.json`` (``{"resolved": ""}`` when it has none)."""
    path = run_dir / "grid_job.json"
    return json.loads(path.read_text()) if path.exists() else {"resolved": ""}
