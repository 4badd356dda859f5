"""Scoring designs with the morphology oracles: one process against N worker processes.

Times ``MorphologyOracle(task, policy, workers=w)(x)`` on the same designs (uniform within the
leg bounds, seeded) for ``w = 1`` and ``w = N`` side by side, checks that the scores are equal, and
prints the ratio. The N-worker time includes starting the pool (one spawned interpreter per
worker, which imports the package and MuJoCo) because every call pays it. Without ``--policy`` a
random policy of the saved format stands in for design-bench's trained one (the real files are
``ant_morphology/ant_oracle.pkl`` and ``dkitty_morphology/dkitty_oracle.pkl`` on the Hugging Face
mirror); a random policy makes the D'Kitty fall sooner than a trained one, so its rollouts end
earlier than real ones would.

    python benchmarks/morphology_rollouts.py                      # both tasks, 128 designs, N = all cores
    python benchmarks/morphology_rollouts.py --workers 2 --designs 32 --task dkitty
    python benchmarks/morphology_rollouts.py --task ant --policy /data/ant_morphology/ant_oracle.pkl
"""

from __future__ import annotations

import argparse
import os
import pickle
import platform
import resource
import tempfile
import time
from pathlib import Path

import mujoco
import numpy as np

from lightning_mbo.tasks.morphology.rollout import MORPHOLOGY_TASKS, MorphologyOracle, available_cores

TASKS = {"ant": "AntMorphology-Exact-v0", "dkitty": "DKittyMorphology-Exact-v0"}


def write_stand_in_policy(path: Path, task: str, hidden: int, seed: int) -> Path:
    """A random MLP in the saved format (``base_network.network.{0,2,4}.{weight,bias}``, float32)."""
    env = MORPHOLOGY_TASKS[task].env
    sizes = [env.observation_size, hidden, hidden, 2 * env.action_size]
    rng = np.random.default_rng(seed)
    arrays = {}
    for layer, n_in, n_out in zip((0, 2, 4), sizes[:-1], sizes[1:], strict=True):
        arrays[f"base_network.network.{layer}.weight"] = (rng.standard_normal((n_out, n_in)) / np.sqrt(n_in)).astype(
            np.float32)
        arrays[f"base_network.network.{layer}.bias"] = (0.1 * rng.standard_normal(n_out)).astype(np.float32)
    path.write_bytes(pickle.dumps(arrays))
    return path


def children_cpu() -> float:
    """CPU seconds of the finished worker processes so far (user + system)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed_score(oracle: MorphologyOracle, x: np.ndarray) -> tuple[float, float, float, np.ndarray]:
    """Wall seconds, this process's CPU seconds, its workers' CPU seconds and the scores."""
    c0, w0, t0 = time.process_time(), children_cpu(), time.perf_counter()
    y = oracle(x)
    return time.perf_counter() - t0, time.process_time() - c0, children_cpu() - w0, y


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=[*TASKS, "both"], default="both")
    parser.add_argument("--designs", type=int, default=128)
    parser.add_argument("--workers", type=int, default=None, help="N; default: every available core")
    parser.add_argument("--horizon", type=int, default=100)
    parser.add_argument("--policy", type=Path, default=None, help="a real policy file (one --task only)")
    parser.add_argument("--hidden", type=int, default=256, help="stand-in policy width")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.policy is not None and args.task == "both":
        parser.error("--policy needs one --task")
    workers = args.workers or available_cores()
    load = "load average {:.1f} {:.1f} {:.1f}".format(*os.getloadavg())
    print(f"mujoco {mujoco.__version__}, python {platform.python_version()}, {available_cores()} available cores, "
          f"{load} at start")
    print(f"{args.designs} designs uniform in the leg bounds (seed {args.seed}), horizon {args.horizon}, "
          f"N = {workers} workers")
    tasks = list(TASKS) if args.task == "both" else [args.task]
    with tempfile.TemporaryDirectory() as tmp:
        for key in tasks:
            task = TASKS[key]
            policy = args.policy or write_stand_in_policy(Path(tmp) / f"{key}.pkl", task, args.hidden, args.seed)
            what = str(args.policy) if args.policy else f"random stand-in policy 2x{args.hidden}"
            robot = MORPHOLOGY_TASKS[task]
            lo, hi = np.tile(robot.lower, robot.num_legs), np.tile(robot.upper, robot.num_legs)
            x = np.random.default_rng(args.seed).uniform(lo, hi, (args.designs, robot.design_size)).astype(np.float32)
            serial = MorphologyOracle(task, policy, workers=1, horizon=args.horizon)
            parallel = MorphologyOracle(task, policy, workers=workers, horizon=args.horizon)
            wall1, cpu1, _, y1 = timed_score(serial, x)
            walln, _, worker_cpu, yn = timed_score(parallel, x)
            start, _, start_cpu, _ = timed_score(MorphologyOracle(task, policy, workers=workers, horizon=1),
                                                 x[:workers])
            print(f"\n{task} ({what})")
            print(f"  1 worker:   {wall1:7.2f} s wall ({cpu1:.2f} s CPU, {cpu1 / len(x) * 1e3:.0f} ms per design)")
            print(f"  {workers} workers: {walln:7.2f} s wall ({worker_cpu:.2f} s CPU in the workers, "
                  "pool start included)")
            print(f"  pool start alone (one 1-step rollout per worker): {start:.2f} s wall ({start_cpu:.2f} s CPU)")
            print(f"  ratio 1 / {workers}: {wall1 / walln:.2f}x; scores equal: {np.array_equal(y1, yn)}; "
                  f"median score {np.median(y1):.1f}")
    print(f"\n{'load average {:.1f} {:.1f} {:.1f}'.format(*os.getloadavg())} at end")


if __name__ == "__main__":
    main()
