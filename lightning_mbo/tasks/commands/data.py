"""``python -m lightning_mbo data {download,check,refit}``: getting and validating a task's files.

* ``download TASK [TASK ...] [--data_dir D]``: the task's shards and oracle files from design-bench's
  data mirror (:mod:`lightning_mbo.tasks.commands.download`); the only command that downloads anything.
* ``check TASK [--data_dir D] [--rows N]``: re-score dataset rows with the oracle and compare with
  the stored scores (:mod:`lightning_mbo.tasks.commands.check`); exit status 1 when the forest's own check fails.
* ``refit Superconductor-RandomForest-v0 [--data_dir D]``: fit a NON-CANONICAL stand-in forest for
  users without design-bench's saved one (:func:`lightning_mbo.tasks.forest.oracle.refit_forest`).
"""

from __future__ import annotations

import argparse
import sys

from lightning_mbo.tasks import io
from lightning_mbo.tasks.registry import TASKS
from lightning_mbo.validation import SettingsError

_DATA_DIR_HELP = f"design-bench data directory (default: ${io.DATA_DIR_ENV})"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m lightning_mbo data",
                                     description="Download design-bench task files and check their oracles.")
    sub = parser.add_subparsers(dest="command", required=True)
    names = sorted(name for name, spec in TASKS.items() if spec.oracle != "closed_form")

    down = sub.add_parser("download", help="fetch a task's shards and oracle files from design-bench's data mirror")
    down.add_argument("tasks", nargs="+", metavar="TASK", help=f"one or more of: {', '.join(names)}")
    down.add_argument("--data_dir", default=None, help=_DATA_DIR_HELP)
    down.add_argument("--repo", default=None, help="the Hugging Face dataset (default: beckhamc/design_bench_data)")
    down.add_argument("--revision", default=None, help="a branch, tag or commit of it to pin")

    chk = sub.add_parser("check", help="re-score dataset rows with the oracle and compare with the stored scores")
    chk.add_argument("task", metavar="TASK")
    chk.add_argument("--data_dir", default=None, help=_DATA_DIR_HELP)
    chk.add_argument("--rows", type=int, default=128, help="rows to re-score (0: all; default 128)")
    chk.add_argument("--seed", type=int, default=0, help="seed of the rows drawn and of the oracle (default 0)")
    chk.add_argument("--oracle_normalization", choices=["released", "split"], default="released",
                     help="Superconductor's forest normalisation (default released)")
    chk.add_argument("--tolerance", type=float, default=1e-3,
                     help="largest allowed difference from the forest's saved validation Spearman (default 1e-3)")
    chk.add_argument("--json", default=None, help="also write the result to this JSON file")

    ref = sub.add_parser("refit", help="fit a NON-CANONICAL stand-in for Superconductor's saved forest")
    ref.add_argument("task", metavar="TASK")
    ref.add_argument("--data_dir", default=None, help=_DATA_DIR_HELP)
    ref.add_argument("--seed", type=int, default=0, help="seed of the rows drawn and of the forest (default 0)")
    return parser


def _download(ns: argparse.Namespace) -> int:
    from lightning_mbo.tasks.commands.download import MIRROR_REPO, HuggingFaceHub, default_data_dir, download  # noqa: PLC0415

    root = default_data_dir(ns.data_dir)
    hub = HuggingFaceHub(ns.repo or MIRROR_REPO, ns.revision)
    for task in ns.tasks:
        download(task, root, hub)
    return 0


def _check(ns: argparse.Namespace) -> int:
    from lightning_mbo.tasks.commands.check import check, format_check, write_json  # noqa: PLC0415

    result = check(ns.task, ns.data_dir, rows=ns.rows, seed=ns.seed, oracle_normalization=ns.oracle_normalization,
                   tolerance=ns.tolerance)
    print(format_check(result), end="")
    if ns.json:
        write_json(result, ns.json)
    return 1 if result["passed"] is False else 0


def _refit(ns: argparse.Namespace) -> int:
    from lightning_mbo.tasks.forest.oracle import refit_forest  # noqa: PLC0415
    from lightning_mbo.tasks.task import Task  # noqa: PLC0415

    if TASKS.get(ns.task) is None or TASKS[ns.task].oracle != "random_forest":
        forests = [n for n, s in TASKS.items() if s.oracle == "random_forest"]
        raise SettingsError(f"refit fits a random-forest oracle; {ns.task} has none (choose {', '.join(forests)})")
    task = Task(ns.task, data_dir=ns.data_dir, max_samples=0)
    path = refit_forest(task.data_folder, str(task.spec.oracle_file), task.x_all, task.y_all, ns.seed)
    print(f"wrote {path} (and its split beside it): a NON-CANONICAL stand-in for design-bench's saved forest. Runs "
          f"use it only while {task.data_folder / str(task.spec.oracle_file)} is missing, and results.json marks "
          "their scores 'random_forest_refit' (canonical: false); they are not comparable with published scores")
    return 0


def main(args: list[str]) -> int:
    """``python -m lightning_mbo data ...`` (the arguments after ``data``); returns the exit status."""
    ns = _parser().parse_args(args)
    return {"download": _download, "check": _check, "refit": _refit}[ns.command](ns)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
