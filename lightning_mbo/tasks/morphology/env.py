"""The morphing Ant and D'Kitty environments on the ``mujoco`` package: reset, step, observation, reward.

They re-implement, on MuJoCo's own Python bindings, the two environments design-bench 2.0.20's
exact morphology oracles roll out (``design_bench/oracles/exact/{ant,dkitty}_morphology_oracle.py``
build them with ``expose_design=True, normalize_design=True`` and a fixed design):

- :class:`AntEnv`: morphing-agents 1.5.1 ``AntEnv`` (``morphing_agents/mujoco/ant/env.py``) on
  gym's mujoco-py ``MujocoEnv`` (``gym/envs/mujoco/mujoco_env.py``; ROBEL pins gym < 0.14), frame skip 5;
- :class:`DKittyEnv`: morphing-agents' ``DKittyWalkFixed`` (``.../dkitty/env.py``) on ROBEL 0.1.2's
  ``RobotEnv``, ``BaseDKittyEnv``, ``RobotComponent`` and ``TrackerComponent`` (frame skip 40).

Neither draws anything at random: the Ant resets to the model's rest pose with zero velocity
(``reset_model`` adds no noise), and the D'Kitty's target is fixed, its observation noise has
amplitude 0 and its actions are not sticky. A rollout is therefore a deterministic function of
the design and the policy; there is no seed.

One engine fact carries over: MuJoCo >= 2.0 leaves ``cfrc_ext`` (the contact forces in the Ant's
observation and contact cost) at zero unless ``mj_rnePostConstraint`` is called, which neither
gym's ``MujocoEnv`` nor morphing-agents' ``AntEnv`` does, and ROBEL pins mujoco-py 2.0, that is
MuJoCo 2.0 (openai/gym#1541). So design-bench's oracle saw zeros there: ``mode="released"``
keeps them, ``"fixed"`` calls ``mj_rnePostConstraint`` after each step (as gymnasium's MuJoCo
environments do, and as MuJoCo 1.5 did by itself).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np

try:
    import mujoco
except ImportError as err:  # an optional dependency: only the morphology tasks need it
    raise ImportError("the Ant and D'Kitty morphology oracles need MuJoCo's Python bindings: pip install 'mujoco>=3'"
                      ) from err

from lightning_mbo.tasks.morphology.mjcf_ant import ANT_LEG_LOWER, ANT_LEG_UPPER, ant_mjcf
from lightning_mbo.tasks.morphology.mjcf_dkitty import (
    DKITTY_FRAME_SKIP,
    DKITTY_LEG_FIELDS,
    DKITTY_LEG_LOWER,
    DKITTY_LEG_UPPER,
    Mode,
    dkitty_mjcf,
)

#: The Ant's simulator steps per environment step (``MujocoEnv.__init__(self, file_path, 5)``).
ANT_FRAME_SKIP = 5
_EPS4 = np.finfo(float).eps * 4.0
#: MuJoCo's warnings for a state it found NaN, infinite or huge; after each it resets the simulation.
_BAD_STATE = (mujoco.mjtWarning.mjWARN_BADQPOS, mujoco.mjtWarning.mjWARN_BADQVEL, mujoco.mjtWarning.mjWARN_BADQACC)


_log = logging.getLogger(__name__)


@contextmanager
def mujoco_warnings_logged() -> Iterator[None]:
    """Within the block MuJoCo's warnings go to this module's logger, not to stdout and ``MUJOCO_LOG.TXT`` in the
    working directory (MuJoCo's default); the previous handler is put back after."""
    previous = mujoco.get_mju_user_warning()
    mujoco.set_mju_user_warning(lambda message: _log.warning("MuJoCo: %s", message))
    try:
        yield
    finally:
        mujoco.set_mju_user_warning(previous)


def was_reset(data: mujoco.MjData) -> bool:
    """Whether MuJoCo reset the simulation for a bad state since the last ``mj_resetData``.

    MuJoCo counts the warning again after its own reset, so the count outlives it.
    """
    return any(data.warning[w].number > 0 for w in _BAD_STATE)


def normalize_design(design: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> np.ndarray:
    """The design as the policy sees it: ``2 (d - lo) / max(hi - lo, 1e-5) - 1`` per field.

    morphing-agents ``normalize_design_vector`` (``{ant,dkitty}/designs.py``).

    Args:
        design: ``(L * F,)`` float64 legs, concatenated.
        lower, upper: ``(F,)`` per-field bounds, repeated for each leg.
    """
    legs = len(design) // len(lower)
    lo, hi = np.tile(lower, legs), np.tile(upper, legs)
    return 2 * (design - lo) / np.clip(hi - lo, a_min=1e-5, a_max=None) - 1.0


def ant_reward(x_before: float, x_after: float, dt: float, action: np.ndarray, cfrc_ext: np.ndarray) -> float:
    """One Ant step's reward (morphing-agents ``AntEnv.step``, ``ant/env.py``).

    ``r = (x_after - x_before) / dt - 0.5 ||a||^2 - 0.5e-3 ||clip(cfrc_ext, -1, 1)||^2 + 1``:
    forward velocity of the torso, control cost, contact cost and a survive bonus of 1.

    Args:
        x_before, x_after: the torso's x position before and after the step.
        dt: the step's duration (time step x frame skip).
        action: ``(12,)`` motor commands.
        cfrc_ext: ``(nbody, 6)`` external contact forces.
    """
    ctrl_cost = 0.5 * np.square(action).sum()
    contact_cost = 0.5 * 1e-3 * np.sum(np.square(np.clip(cfrc_ext, -1, 1)))
    forward_reward = (x_after - x_before) / dt
    return forward_reward - ctrl_cost - contact_cost + 1.0


def dkitty_reward(upright: float, heading: float, target_distance: float, mode: Mode = "released") -> float:
    """One D'Kitty step's reward (morphing-agents ``DKittyUprightEnv`` + ``DKittyWalk.get_reward_dict``).

    The sum, in this order, of: ``upright``: ``(u - 0.9) / (1 - 0.9)``; ``falling``: -500 if
    ``u < 0.9``; ``target_dist_cost``: ``-4 d``; ``heading``: ``2 (h - 0.9) / 0.1``;
    ``bonus_small``: ``5 * ((d < 0.5) + (h > 0.9))``; ``bonus_big``: 10 if ``d < 0.5`` and ``h > 0.9``.
    ``u`` is the cosine between the torso's z axis and the world's, ``h`` that between its y axis
    and the direction to the target, ``d`` the xy distance to the target.

    Released bug (``mode="released"``, the default): ``bonus_small`` is at most 5, not 10, because
    the two numpy booleans it adds add as a logical or; ``mode="fixed"`` counts them (0, 5 or 10).
    """
    near, aligned = target_distance < 0.5, heading > 0.9
    terms = (
        1 * (upright - 0.9) / (1 - 0.9),
        -500 * (upright < 0.9),
        -4 * target_distance,
        2 * (heading - 0.9) / 0.1,
        5 * ((near or aligned) if mode == "released" else int(near) + int(aligned)),
        10 * near * aligned,
    )
    return float(np.sum(np.fromiter(terms, dtype=float)))


def euler_to_matrix(ax: float, ay: float, az: float) -> np.ndarray:
    """``R = R_x(ax) R_y(ay) R_z(az)`` (rotating axes x, y, z): transforms3d ``euler2mat(..., axes='rxyz')``.

    Written out as transforms3d 0.3 computes it (the ``rxyz`` case of its general routine), which
    is how ROBEL's tracker turns the torso's three hinge angles into a rotation. Returns ``(3, 3)``.
    """
    ai, aj, ak = -az, -ay, -ax
    si, sj, sk = math.sin(ai), math.sin(aj), math.sin(ak)
    ci, cj, ck = math.cos(ai), math.cos(aj), math.cos(ak)
    cc, cs = ci * ck, ci * sk
    sc, ss = si * ck, si * sk
    m = np.eye(3)
    m[2, 2], m[2, 1], m[2, 0] = cj * ck, sj * sc - cs, sj * cc + ss
    m[1, 2], m[1, 1], m[1, 0] = cj * sk, sj * ss + cc, sj * cs - sc
    m[0, 2], m[0, 1], m[0, 0] = -sj, cj * si, cj * ci
    return m


def matrix_to_euler(m: np.ndarray) -> tuple[float, float, float]:
    """Inverse of :func:`euler_to_matrix`: transforms3d ``mat2euler(m, axes='rxyz')``, ``ay`` in [-pi/2, pi/2]."""
    cy = math.sqrt(m[2, 2] * m[2, 2] + m[1, 2] * m[1, 2])
    if cy > _EPS4:
        ax, ay, az = math.atan2(m[0, 1], m[0, 0]), math.atan2(-m[0, 2], cy), math.atan2(m[1, 2], m[2, 2])
    else:  # gimbal lock: the first angle is set to 0
        ax, ay, az = math.atan2(-m[1, 0], m[1, 1]), math.atan2(-m[0, 2], cy), 0.0
    return -az, -ay, -ax


def cosine(u: np.ndarray, v: np.ndarray) -> float:
    """``u . v / (|u| |v|)``, the dot product alone when a norm is 0 (ROBEL ``calculate_cosine``)."""
    norms = np.linalg.norm(u) * np.linalg.norm(v)
    return float(np.dot(u, v) / (norms if norms != 0 else 1))


class AntEnv:
    """A morphing Ant on MuJoCo (morphing-agents ``AntEnv``, ``ant/env.py``).

    Observation: ``qpos[2:]`` (17), ``qvel`` (18), ``clip(cfrc_ext, -1, 1)`` (14 bodies x 6) and the
    normalised design (60): 179 numbers. Action: 12 motor commands in ``[-1, 1]``. The episode ends
    only when the state is no longer finite (morphing-agents does not end it on height).

    Args:
        legs: ``(4, 15)`` leg parameters within the bounds.
        mode: ``"released"`` (contact forces left at zero, as the released code ran) or ``"fixed"``
            (computed).
    """

    observation_size = 179
    action_size = 12

    def __init__(self, legs: np.ndarray, mode: Mode = "released") -> None:
        legs = np.asarray(legs, dtype=np.float64)
        self.model = mujoco.MjModel.from_xml_string(ant_mjcf(legs))
        self.data = mujoco.MjData(self.model)
        self.mode = mode
        self.design = normalize_design(legs.reshape(-1), ANT_LEG_LOWER, ANT_LEG_UPPER)
        self.torso = self.model.body("torso").id
        self.dt = self.model.opt.timestep * ANT_FRAME_SKIP

    def _forces(self) -> None:
        if self.mode == "fixed":
            mujoco.mj_rnePostConstraint(self.model, self.data)

    def observe(self) -> np.ndarray:
        d = self.data
        return np.concatenate([d.qpos.flat[2:], d.qvel.flat, np.clip(d.cfrc_ext, -1, 1).flat, self.design])

    def reset(self) -> np.ndarray:
        """Rest pose, zero velocity (gym ``MujocoEnv.reset``: ``sim.reset()``, ``set_state(init_qpos, init_qvel)``)."""
        mujoco.mj_resetData(self.model, self.data)
        mujoco.mj_forward(self.model, self.data)
        self._forces()
        return self.observe()

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool]:
        """Apply ``action`` for 5 simulator steps; returns ``(observation, reward, done)``."""
        d = self.data
        x_before = float(d.xpos[self.torso, 0])
        d.ctrl[:] = action
        for _ in range(ANT_FRAME_SKIP):
            mujoco.mj_step(self.model, d)
        self._forces()
        reward = ant_reward(x_before, float(d.xpos[self.torso, 0]), self.dt, action, d.cfrc_ext)
        done = not (np.isfinite(d.qpos).all() and np.isfinite(d.qvel).all())
        return self.observe(), reward, done


class DKittyEnv:
    """A morphing D'Kitty walking to a target 2 m ahead (morphing-agents ``DKittyWalkFixed``, ``dkitty/env.py``).

    Observation (ROBEL ``RobotEnv._get_obs`` over morphing-agents' ``DEFAULT_OBSERVATION_KEYS``):
    torso position (3) and Euler angles (3), joint positions (12), torso velocity (3) and angular
    velocity (3), joint velocities (12), the last action (12), ``upright`` (1), ``heading`` (1),
    the xy error to the target (2) and the normalised design (56): 108 numbers. Action: 12 numbers
    in ``[-1, 1]`` mapped to joint targets ``centre + a * half-width`` (``RobotComponent.step``),
    clipped to the joint's range and to a speed of pi rad/s over the step, then held by the
    position servos for 40 simulator steps. The episode ends when ``upright < 0.9`` (fallen).

    Args:
        legs: ``(4, 14)`` leg parameters within the bounds.
        mode: ``"released"`` or ``"fixed"``: the thigh joint limits
            (:func:`~.mjcf_dkitty.dkitty_mjcf`) and ``bonus_small`` (:func:`dkitty_reward`).
    """

    observation_size = 108
    action_size = 12
    #: ``DKittyWalkFixed._reset``: the target 2 m along y; the heading site is put at the target.
    target = 2.0 * np.array([np.cos(np.pi / 2), np.sin(np.pi / 2)])

    def __init__(self, legs: np.ndarray, mode: Mode = "released") -> None:
        legs = np.asarray(legs, dtype=np.float64)
        self.mode = mode
        self.model = mujoco.MjModel.from_xml_string(dkitty_mjcf(legs, mode))
        self.data = mujoco.MjData(self.model)
        self.design = normalize_design(legs.reshape(-1), DKITTY_LEG_LOWER, DKITTY_LEG_UPPER)
        f = {name: legs[:, i] for i, name in enumerate(DKITTY_LEG_FIELDS)}
        # morphing-agents' _configure_robot: each joint's range, which ROBEL stores as float32.
        spans = [(f[f"{j}_center"] - f[f"{j}_range"], f[f"{j}_center"] + f[f"{j}_range"])
                 for j in ("hip", "thigh", "ankle")]
        self.qpos_range = np.array([spans[j][s][leg] for leg in range(4) for j in range(3) for s in (0, 1)],
                                   dtype=np.float32).reshape(12, 2)
        self.qvel_range = np.array([(-np.pi, np.pi)] * 12, dtype=np.float32)
        # RobotGroupConfig: the action's centre and half-width, from the (float32) position range.
        self.center = np.mean(self.qpos_range, axis=1)
        self.half_width = 0.5 * (self.qpos_range[:, 1] - self.qpos_range[:, 0])
        self.step_duration = self.model.opt.timestep * DKITTY_FRAME_SKIP
        self.last_action = np.zeros(12, dtype=np.float32)

    def observe(self) -> tuple[np.ndarray, float, float, np.ndarray]:
        """``(observation, upright, heading, target_error)`` (``DKittyWalk.get_obs_dict``)."""
        d = self.data
        root_pos, root_vel = d.qpos[0:3].copy(), d.qvel[0:3].copy()
        rot = euler_to_matrix(*d.qpos[3:6])
        upright = rot[2, 2]
        kitty_xy = root_pos[:2]
        heading = cosine(rot[:2, 1], self.target - kitty_xy)
        target_error = self.target - kitty_xy
        obs = np.concatenate([
            root_pos, matrix_to_euler(rot), d.qpos[6:18], root_vel, d.qvel[3:6], d.qvel[6:18], self.last_action,
            [upright], [heading], target_error, self.design,
        ])
        return obs, float(upright), heading, target_error

    def reset(self) -> np.ndarray:
        """Standing reset (ROBEL ``RobotEnv.reset`` + ``BaseDKittyEnv._reset_dkitty_standing`` + ``DKittyWalk._reset``).

        The joints go to 0 clipped into their ranges at zero speed, the torso frame to the origin
        with the rotation of the identity matrix (as ROBEL writes it back through Euler angles).
        """
        m, d = self.model, self.data
        mujoco.mj_resetData(m, d)
        mujoco.mj_forward(m, d)
        d.qpos[6:18] = np.clip(np.zeros(12), self.qpos_range[:, 0], self.qpos_range[:, 1])
        d.qvel[6:18] = np.clip(np.zeros(12), self.qvel_range[:, 0], self.qvel_range[:, 1])
        mujoco.mj_forward(m, d)
        d.qpos[0:3] = np.zeros(3)
        d.qpos[3:6] = matrix_to_euler(np.identity(3))
        mujoco.mj_forward(m, d)
        self.last_action = np.zeros(12, dtype=np.float32)
        return self.observe()[0]

    def joint_targets(self, action: np.ndarray) -> np.ndarray:
        """ROBEL ``RobotComponent.step``: ``(12,)`` action in [-1, 1] -> ``(12,)`` servo targets."""
        targets = self.center + np.clip(action, -1.0, 1.0) * self.half_width
        targets = np.clip(targets, self.qpos_range[:, 0], self.qpos_range[:, 1])
        current = self.data.qpos[6:18].copy()
        speed = np.clip((targets - current) / self.step_duration, self.qvel_range[:, 0], self.qvel_range[:, 1])
        return current + speed * self.step_duration

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool]:
        """Hold the servo targets of ``action`` for 40 simulator steps; returns ``(observation, reward, done)``."""
        action = np.clip(action, -1.0, 1.0)  # RobotEnv._preprocess_action
        self.data.ctrl[:12] = self.joint_targets(action)
        for _ in range(DKITTY_FRAME_SKIP):
            mujoco.mj_step(self.model, self.data)
        self.last_action = action
        obs, upright, heading, target_error = self.observe()
        reward = dkitty_reward(upright, heading, float(np.linalg.norm(target_error)), self.mode)
        done = not np.isfinite(obs).all() or upright < 0.9
        return obs, reward, done
