"""The exact oracles of AntMorphology-Exact-v0 and DKittyMorphology-Exact-v0, on the ``mujoco`` package.

design-bench 2.0.20 scores a morphology design by walking it with a trained policy
(``design_bench/oracles/exact/{ant,dkitty}_morphology_oracle.py``, ``protected_predict``):

1. the design vector is split into 4 legs and each leg is clipped to morphing-agents'
   ``LEG_LOWER_BOUND`` / ``LEG_UPPER_BOUND`` (``np.clip`` in float64);
2. the robot is built from the clipped legs (:mod:`~lightning_mbo.tasks.morphology.mjcf_ant`,
   :mod:`~lightning_mbo.tasks.morphology.mjcf_dkitty`) with the normalised design in its observation;
3. one rollout of at most 100 steps (``rollout_horizon=100``) under the deterministic policy
   (:mod:`~lightning_mbo.tasks.morphology.policy`), stopping early when the environment says done
   (:mod:`~lightning_mbo.tasks.morphology.env`);
4. the score is the sum of the rewards, accumulated in float32 (``sum_of_rewards +=
   rew.astype(np.float32)``). One rollout per design: ``internal_measurements`` is 1 and the
   registered ``noise_std`` 0.

Designs are scored one by one, each in a fresh simulator, so they can be spread over processes:
``workers`` > 1 starts that many spawned worker processes for a call and gives each design to the
next free one. Each worker starts an interpreter, imports the package and receives the policy once,
a fixed cost per call that many designs or long rollouts repay. A score depends only on its design
(BLAS runs one thread per process, in the workers and here), so it is the same for any number of
workers.

The released oracle ran MuJoCo 2.0 through mujoco-py; this one runs MuJoCo >= 3 through its own
bindings. The generated models are the released ones (same masses, inertias, joints, actuators,
contacts), but the engine's solver and collision code changed between those versions, so a score
can differ from the one design-bench's dataset stores for the same design.

When MuJoCo finds a state NaN, infinite or huge it warns (logged by
:mod:`~lightning_mbo.tasks.morphology.env`'s logger) and resets the simulation to the model's rest
pose; the rollout goes on from there and :attr:`MorphologyOracle.unstable` marks the design.
ROBEL's mujoco-py backend, which the D'Kitty ran on, did the same (it logs the warning); for the
Ant, mujoco-py turned the warning into an exception, which ended design-bench's whole call.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

from lightning_mbo.tasks.io import BadDataError
from lightning_mbo.tasks.morphology.env import AntEnv, DKittyEnv, mujoco_warnings_logged, was_reset
from lightning_mbo.tasks.morphology.mjcf_ant import ANT_LEG_LOWER, ANT_LEG_UPPER
from lightning_mbo.tasks.morphology.mjcf_dkitty import DKITTY_LEG_LOWER, DKITTY_LEG_UPPER, Mode
from lightning_mbo.tasks.morphology.policy import MlpPolicy, load_policy
from lightning_mbo.tasks.registry import UnknownTaskError
from lightning_mbo.validation import check_choice, check_range

#: design-bench's ``rollout_horizon`` default.
ROLLOUT_HORIZON = 100


@dataclass(frozen=True)
class MorphologyRobot:
    """What the oracle needs to know of a task's robot.

    Attributes:
        name: the robot, for messages.
        lower, upper: ``(F,)`` bounds of one leg's fields.
        num_legs: legs per design (4).
        policy_file: the policy's path on design-bench's server and its mirror.
        env: the environment class (:class:`AntEnv` or :class:`DKittyEnv`).
    """

    name: str
    lower: np.ndarray
    upper: np.ndarray
    num_legs: int
    policy_file: str
    env: type[AntEnv] | type[DKittyEnv]

    @property
    def design_size(self) -> int:
        return self.num_legs * len(self.lower)


MORPHOLOGY_TASKS: dict[str, MorphologyRobot] = {
    "AntMorphology-Exact-v0": MorphologyRobot("Ant", ANT_LEG_LOWER, ANT_LEG_UPPER, 4,
                                              "ant_morphology/ant_oracle.pkl", AntEnv),
    "DKittyMorphology-Exact-v0": MorphologyRobot("D'Kitty", DKITTY_LEG_LOWER, DKITTY_LEG_UPPER, 4,
                                                 "dkitty_morphology/dkitty_oracle.pkl", DKittyEnv),
}


@dataclass(frozen=True)
class Rollout:
    """Score one design: build its robot, walk it with the policy, sum the rewards.

    Attributes:
        task_name: a key of :data:`MORPHOLOGY_TASKS`.
        policy: the loaded policy.
        horizon: the most steps a rollout takes.
        mode: ``"released"`` or ``"fixed"`` (see :class:`AntEnv`, :class:`DKittyEnv`).
    """

    task_name: str
    policy: MlpPolicy
    horizon: int = ROLLOUT_HORIZON
    mode: Mode = "released"

    def make_env(self, legs: np.ndarray) -> AntEnv | DKittyEnv:
        """The robot of ``legs`` ``(4, F)`` (already clipped)."""
        if MORPHOLOGY_TASKS[self.task_name].env is AntEnv:
            return AntEnv(legs, self.mode)
        return DKittyEnv(legs, self.mode)

    def __call__(self, legs: np.ndarray) -> tuple[np.float32, bool]:
        """One rollout of ``legs`` ``(4, F)``: the summed reward (float32), whether MuJoCo reset a bad state."""
        env = self.make_env(legs)
        total = np.zeros(1, dtype=np.float32)
        with mujoco_warnings_logged():
            obs = env.reset()
            for _ in range(self.horizon):
                obs, reward, done = env.step(self.policy(obs))
                total += np.float32(reward)
                if done:
                    break
        return total[0], was_reset(env.data)


_WORKER_ROLLOUT: Rollout | None = None


def _limit_blas_to_one_thread() -> Any:
    """Set numpy's BLAS to one thread where ``threadpoolctl`` is installed; returns what undoes it, or None.

    The policy's small matrix-vector products gain nothing from more threads, and one thread in
    every process keeps their sums in one order.
    """
    try:
        from threadpoolctl import threadpool_limits  # noqa: PLC0415 (optional)
    except ImportError:
        return None
    return threadpool_limits(1)


@contextmanager
def one_blas_thread() -> Iterator[None]:
    """:func:`_limit_blas_to_one_thread` within the block."""
    limiter = _limit_blas_to_one_thread()
    try:
        yield
    finally:
        if limiter is not None:
            limiter.restore_original_limits()


_WORKER_BLAS_LIMIT: Any = None


def _start_worker(rollout: Rollout) -> None:
    """Pool initializer: keep the rollout (policy included) in the worker, with one BLAS thread for its lifetime."""
    global _WORKER_ROLLOUT, _WORKER_BLAS_LIMIT
    _WORKER_ROLLOUT = rollout
    _WORKER_BLAS_LIMIT = _limit_blas_to_one_thread()


def _score_in_worker(legs: np.ndarray) -> tuple[np.float32, bool]:
    assert _WORKER_ROLLOUT is not None, "worker not initialised"
    return _WORKER_ROLLOUT(legs)


def available_cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class MorphologyOracle:
    """The exact oracle of a morphology task: ``(n, D)`` designs -> ``(n, 1)`` float32 summed rewards.

    Args:
        task_name: ``"AntMorphology-Exact-v0"`` (D = 60) or ``"DKittyMorphology-Exact-v0"`` (D = 56).
        policy_path: the task's trained policy, design-bench's ``ant_morphology/ant_oracle.pkl`` or
            ``dkitty_morphology/dkitty_oracle.pkl``.
        workers: processes to spread a call's rollouts over; ``None`` uses every available core,
            1 runs them in this process. Never more than the number of designs.
        horizon: the most steps per rollout (design-bench: 100).
        mode: ``"released"`` (default) rolls out what design-bench ran, bugs included; ``"fixed"``
            mends them: the Ant's contact forces (zero in its observation and contact cost as
            released) are computed; the D'Kitty's thigh joints are limited to ``thigh_center ±
            thigh_range`` (released: ``± hip_range``) and its ``bonus_small`` counts both conditions
            (released: at most 5).

    Attributes:
        unstable: after a call, ``(n,)`` bool: the designs whose simulation MuJoCo found unstable
            and reset (see the module docstring); their scores sum rewards across that reset.
    """

    def __init__(
        self,
        task_name: str,
        policy_path: str | Path,
        workers: int | None = None,
        *,
        horizon: int = ROLLOUT_HORIZON,
        mode: Mode = "released",
    ) -> None:
        if task_name not in MORPHOLOGY_TASKS:
            raise UnknownTaskError(f"{task_name!r} has no morphology oracle; choose {' or '.join(MORPHOLOGY_TASKS)}")
        if workers is not None:
            check_range("workers", workers, 1, hint="None uses every available core")
        check_range("horizon", horizon, 1)
        check_choice("mode", mode, Mode)
        self.robot = MORPHOLOGY_TASKS[task_name]
        self.task_name = task_name
        self.workers = workers
        env = self.robot.env
        policy = load_policy(policy_path, self.robot.policy_file, env.observation_size, env.action_size)
        self.rollout = Rollout(task_name, policy, horizon, mode)
        self.unstable = np.zeros(0, dtype=bool)

    @property
    def design_size(self) -> int:
        """D: numbers per design."""
        return self.robot.design_size

    def legs(self, x: np.ndarray) -> np.ndarray:
        """Checked designs ``(n, D)`` -> their legs ``(n, 4, F)``, float64, clipped to the bounds."""
        x = np.asarray(x)
        n_legs, fields = self.robot.num_legs, len(self.robot.lower)
        shape_hint = f"{self.task_name} designs have shape (n, {self.design_size}): {n_legs} legs of {fields} numbers"
        if x.ndim != 2 or x.shape[1] != self.design_size:
            raise BadDataError(f"{shape_hint}, got an array of shape {x.shape}; pass one design per row")
        if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
            raise BadDataError(f"{shape_hint} as floats, got dtype {x.dtype}")
        x = x.astype(np.float64)  # float32 designs are held exactly, as design-bench's np.clip makes them
        bad = ~np.isfinite(x).all(axis=1)
        if bad.any():
            rows = np.flatnonzero(bad)
            raise BadDataError(f"{len(rows)} of {len(x)} {self.task_name} designs hold NaN or inf (first: row "
                               f"{rows[0]}); a simulator cannot build them: drop or repair those rows")
        return np.clip(x.reshape(len(x), n_legs, fields), self.robot.lower, self.robot.upper)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Score designs ``(n, D)`` -> ``(n, 1)`` float32 (see the module docstring)."""
        legs = self.legs(x)
        workers = min(self.workers or available_cores(), len(legs))
        if workers <= 1:
            with one_blas_thread():
                runs = [self.rollout(one) for one in legs]
        else:
            runs = self._parallel_map(legs, workers)
        self.unstable = np.array([reset for _, reset in runs], dtype=bool)
        return np.array([score for score, _ in runs], dtype=np.float32).reshape(-1, 1)

    def _parallel_map(self, legs: np.ndarray, workers: int) -> list[tuple[np.float32, bool]]:
        # spawn, not fork: a forked child would inherit the parent's threads (torch's, a DataLoader's) mid-state.
        with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"), initializer=_start_worker,
                                 initargs=(self.rollout,)) as pool:
            return list(pool.map(_score_in_worker, legs))
