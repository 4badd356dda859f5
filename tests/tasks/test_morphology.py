"""Ant and D'Kitty morphology oracles on ``mujoco``: models, rollouts, the policy file, errors.

The real policy files are not here; every test writes one in design-bench's saved format (a
pickled dict of numpy arrays ``base_network.network.{0,2,4}.{weight,bias}``) with random weights.
"""

from __future__ import annotations

import math
import pickle
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch

mujoco = pytest.importorskip("mujoco")

from lightning_mbo.tasks.io import BadDataError, MissingDataError  # noqa: E402
from lightning_mbo.tasks.morphology.env import (  # noqa: E402
    AntEnv,
    DKittyEnv,
    ant_reward,
    dkitty_reward,
    euler_to_matrix,
    matrix_to_euler,
    mujoco_warnings_logged,
    normalize_design,
    was_reset,
)
from lightning_mbo.tasks.morphology.mjcf_ant import ANT_DEFAULT_DESIGN, ANT_LEG_LOWER, ANT_LEG_UPPER, ant_mjcf  # noqa: E402
from lightning_mbo.tasks.morphology.mjcf_dkitty import (  # noqa: E402
    DKITTY_DEFAULT_DESIGN,
    DKITTY_LEG_LOWER,
    DKITTY_LEG_UPPER,
    dkitty_mjcf,
)
from lightning_mbo.tasks.morphology.policy import POLICY_KEYS, load_policy  # noqa: E402
from lightning_mbo.tasks.morphology.rollout import MORPHOLOGY_TASKS, MorphologyOracle, Rollout  # noqa: E402
from lightning_mbo.tasks.registry import UnknownTaskError  # noqa: E402
from lightning_mbo.validation import SettingsError  # noqa: E402

ANT, DKITTY = "AntMorphology-Exact-v0", "DKittyMorphology-Exact-v0"
SIZES = {ANT: (179, 60), DKITTY: (108, 56)}  # observation size, design size


def policy_arrays(obs: int, act: int = 12, hidden: int = 32, seed: int = 0, scale: float = 1.0) -> dict:
    """A random policy in the saved layout: float32 ``(out, in)`` weights, as a torch state_dict turned numpy."""
    rng = np.random.default_rng(seed)
    sizes = [obs, hidden, hidden, 2 * act]
    arrays = {}
    for layer, (n_in, n_out) in zip((0, 2, 4), zip(sizes[:-1], sizes[1:], strict=True), strict=True):
        arrays[f"base_network.network.{layer}.weight"] = (scale * rng.standard_normal((n_out, n_in))
                                                          / np.sqrt(n_in)).astype(np.float32)
        arrays[f"base_network.network.{layer}.bias"] = (0.1 * scale * rng.standard_normal(n_out)).astype(np.float32)
    return arrays


def write_policy(path: Path, arrays: object, protocol: int = pickle.DEFAULT_PROTOCOL) -> Path:
    path.write_bytes(pickle.dumps(arrays, protocol=protocol))
    return path


@pytest.fixture(scope="module")
def policies(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("policies")
    return {task: write_policy(root / f"{task}.pkl", policy_arrays(SIZES[task][0], seed=i))
            for i, task in enumerate((ANT, DKITTY))}


def random_designs(task: str, n: int, seed: int = 0) -> np.ndarray:
    robot = MORPHOLOGY_TASKS[task]
    lo, hi = np.tile(robot.lower, robot.num_legs), np.tile(robot.upper, robot.num_legs)
    return np.random.default_rng(seed).uniform(lo, hi, size=(n, robot.design_size)).astype(np.float32)


# --- the policy file -------------------------------------------------------------------------------


def test_policy_forward_matches_a_torch_mlp(tmp_path):
    arrays = policy_arrays(179, seed=3)
    policy = load_policy(write_policy(tmp_path / "p.pkl", arrays), "ant_morphology/ant_oracle.pkl", 179, 12)
    net = torch.nn.Sequential(torch.nn.Linear(179, 32), torch.nn.ReLU(), torch.nn.Linear(32, 32), torch.nn.ReLU(),
                              torch.nn.Linear(32, 24)).double()
    net.load_state_dict({k.replace("base_network.network.", ""): torch.from_numpy(v.astype(np.float64))
                         for k, v in arrays.items()})
    obs = np.random.default_rng(0).standard_normal((5, 179))
    with torch.no_grad():
        mean, _log_std = net(torch.from_numpy(obs)).chunk(2, dim=-1)
    ours = np.stack([policy(o) for o in obs])
    assert ours.shape == (5, 12)
    np.testing.assert_allclose(ours, mean.tanh().numpy(), rtol=0, atol=1e-12)
    assert np.abs(ours).max() < 1


def test_policy_file_written_under_numpy1_and_as_an_ordered_dict_loads(tmp_path):
    arrays = policy_arrays(108, seed=1)
    # Protocol 3 (Python 3.7's default) names globals in plain text: write numpy 1's module names, as the released
    # file has them.
    stream = pickle.dumps(OrderedDict(arrays, extra=np.zeros(3, np.float32)), protocol=3)
    assert b"numpy._core.multiarray" in stream
    (tmp_path / "old.pkl").write_bytes(stream.replace(b"numpy._core", b"numpy.core"))
    old = load_policy(tmp_path / "old.pkl", "dkitty_morphology/dkitty_oracle.pkl", 108, 12)
    for protocol in (0, 2, 5):
        new = load_policy(write_policy(tmp_path / "new.pkl", arrays, protocol), "x", 108, 12)
        for (w_old, b_old), (w_new, b_new), key in zip(old.layers, new.layers, POLICY_KEYS[::2], strict=True):
            np.testing.assert_array_equal(w_old, arrays[key])
            np.testing.assert_array_equal(w_old, w_new)
            np.testing.assert_array_equal(b_old, b_new)


class _Shell:
    def __reduce__(self):
        import os  # noqa: PLC0415

        return (os.system, ("echo unpickled",))


@pytest.mark.parametrize("content, match", [
    (b"not a pickle at all", "is not a policy file"),
    (pickle.dumps([1, 2, 3]), "holds a list, not a dict"),
    (pickle.dumps({k: v for k, v in policy_arrays(179).items() if "4.bias" not in k}),
     "lacks base_network.network.4.bias"),
    (pickle.dumps(policy_arrays(108)), "is it the other task's policy"),
    (pickle.dumps(policy_arrays(179, act=6)), "179 -> 24"),
    (pickle.dumps({**policy_arrays(179), "base_network.network.2.weight": np.zeros((32, 7), np.float32)}),
     "does not chain"),
    (pickle.dumps({**policy_arrays(179), "base_network.network.0.bias": np.full(32, np.nan, np.float32)}),
     "NaN or inf"),
    (pickle.dumps({**policy_arrays(179), "base_network.network.0.bias": [0.0] * 32}), "not a float array"),
    (pickle.dumps(_Shell()), "system, which a policy file"),
])
def test_malformed_policy_files_raise(tmp_path, content, match):
    (tmp_path / "bad.pkl").write_bytes(content)
    with pytest.raises(BadDataError, match=match):
        MorphologyOracle(ANT, tmp_path / "bad.pkl", workers=1)


def test_missing_policy_file_names_the_download(tmp_path):
    with pytest.raises(MissingDataError, match=r"dkitty_morphology/dkitty_oracle\.pkl.*huggingface"):
        MorphologyOracle(DKITTY, tmp_path / "absent.pkl")


# --- the generated models -------------------------------------------------------------------------


@pytest.mark.parametrize("task", [ANT, DKITTY])
def test_models_compile_for_default_and_random_designs(task):
    robot = MORPHOLOGY_TASKS[task]
    default = ANT_DEFAULT_DESIGN if task == ANT else DKITTY_DEFAULT_DESIGN
    build = ant_mjcf if task == ANT else dkitty_mjcf
    designs = [default, *random_designs(task, 12, seed=5).astype(np.float64).reshape(-1, 4, len(robot.lower))]
    for legs in designs:
        model = mujoco.MjModel.from_xml_string(build(legs))
        assert (model.nu, model.nq) == ((12, 19) if task == ANT else (12, 18))
        # The design reaches the model: each leg's attachment point and its joints' ranges.
        first_leg = model.body("leg_0_body" if task == ANT else "A:FR10")
        np.testing.assert_allclose(model.body_pos[first_leg.id], legs[0, :3], rtol=0, atol=1e-12)
        hip = model.joint("hip_0_joint" if task == ANT else "A:FRJ10")
        span = legs[0, 6] + np.array([-1, 1]) * legs[0, 7]
        np.testing.assert_allclose(model.jnt_range[hip.id], np.deg2rad(span) if task == ANT else span, atol=1e-12)
        np.testing.assert_allclose(model.actuator_ctrlrange[0], [-1, 1] if task == ANT else span, atol=1e-12)


def test_ant_model_masses_follow_the_leg_lengths():
    legs = ANT_DEFAULT_DESIGN.copy()
    legs[2, 14] = 0.8  # one longer ankle capsule: radius 0.08, density 5
    short, long = (mujoco.MjModel.from_xml_string(ant_mjcf(d)) for d in (ANT_DEFAULT_DESIGN, legs))
    extra = 5.0 * math.pi * 0.08**2 * (0.8 - 0.4) * math.sqrt(2)  # cylinder part of the capsule along (s, s, 0)
    assert long.body("ankle_2_geom").mass[0] - short.body("ankle_2_geom").mass[0] == pytest.approx(extra, rel=1e-9)


@pytest.mark.parametrize("mode, half_width_field", [("released", 7), ("fixed", 9)])
def test_dkitty_thigh_limits_released_and_fixed(mode, half_width_field):
    legs = DKITTY_DEFAULT_DESIGN.copy()
    legs[:, 7], legs[:, 9] = 0.2, 0.5  # hip and thigh half-widths differ
    model = mujoco.MjModel.from_xml_string(dkitty_mjcf(legs, mode))
    expect = legs[1, 8] + np.array([-1, 1]) * legs[1, half_width_field]
    np.testing.assert_allclose(model.jnt_range[model.joint("A:FLJ21").id], expect, atol=1e-12)
    np.testing.assert_allclose(model.actuator_ctrlrange[4], expect, atol=1e-12)


# --- the environments' equations ------------------------------------------------------------------


def test_normalize_design_maps_bounds_to_minus_one_and_one():
    design = np.concatenate([DKITTY_LEG_LOWER, DKITTY_LEG_UPPER, 0.5 * (DKITTY_LEG_LOWER + DKITTY_LEG_UPPER),
                             DKITTY_LEG_LOWER])
    out = normalize_design(design, DKITTY_LEG_LOWER, DKITTY_LEG_UPPER).reshape(4, 14)
    z = 2  # z has zero width: (0 - 0) / 1e-5 - 1 = -1 at either bound
    np.testing.assert_allclose(np.delete(out, z, axis=1), [[-1] * 13, [1] * 13, [0] * 13, [-1] * 13], atol=1e-12)
    np.testing.assert_array_equal(out[:, z], -1)


def test_ant_reward_hand_example():
    cfrc = np.zeros((14, 6))
    cfrc[3, :2] = [2.0, -0.5]  # clipped to 1, then 0.25
    action = np.array([0.5, -1.0] + [0.0] * 10)
    # forward (1.1 - 1.0) / 0.05 = 2; ctrl 0.5 * 1.25; contact 0.5e-3 * 1.25; survive 1
    assert ant_reward(1.0, 1.1, 0.05, action, cfrc) == pytest.approx(2 - 0.625 - 0.000625 + 1, abs=1e-12)


@pytest.mark.parametrize("upright, heading, distance, expect", [
    (1.0, 1.0, 0.3, 1 + 0 - 1.2 + 2 + 5 + 10),  # near and aligned: bonus_small stays 5 (numpy's bool +)
    (1.0, 0.5, 0.3, 1 - 1.2 - 8 + 5),           # near only
    (0.95, 0.95, 2.0, 0.5 - 8 + 1 + 5),         # aligned only
    (0.5, 0.0, 2.0, -4 - 500 - 8 - 18),         # fallen
])
def test_dkitty_reward_hand_examples(upright, heading, distance, expect):
    assert dkitty_reward(upright, heading, distance) == pytest.approx(expect, abs=1e-9)
    both = distance < 0.5 and heading > 0.9  # mode="fixed" counts both conditions of bonus_small
    assert dkitty_reward(upright, heading, distance, "fixed") == pytest.approx(expect + 5 * both, abs=1e-9)


def test_euler_conversions_match_scipy():
    from scipy.spatial.transform import Rotation  # noqa: PLC0415

    rng = np.random.default_rng(0)
    for angles in rng.uniform([-np.pi, -np.pi / 2, -np.pi], [np.pi, np.pi / 2, np.pi], size=(50, 3)):
        m = euler_to_matrix(*angles)
        np.testing.assert_allclose(m, Rotation.from_euler("XYZ", angles).as_matrix(), atol=1e-12)
        np.testing.assert_allclose(matrix_to_euler(m), angles, atol=1e-9)
    # Gimbal lock: the first angle is set to 0 and the third carries the rotation.
    locked = matrix_to_euler(euler_to_matrix(0.3, np.pi / 2, 0.2))
    np.testing.assert_allclose(euler_to_matrix(*locked), euler_to_matrix(0.3, np.pi / 2, 0.2), atol=1e-12)
    assert locked[0] == 0.0


def test_dkitty_action_maps_to_clipped_joint_targets():
    env = DKittyEnv(DKITTY_DEFAULT_DESIGN, "fixed")
    env.reset()
    lo, hi = env.qpos_range[:, 0].astype(np.float64), env.qpos_range[:, 1].astype(np.float64)
    current = env.data.qpos[6:18].copy()  # 0 clipped into each range
    np.testing.assert_array_equal(current, np.clip(0.0, lo, hi))
    limit = np.float32(np.pi) * env.step_duration  # pi rad/s over a 0.1 s step
    for action in (np.zeros(12), np.ones(12), -np.ones(12), np.full(12, 7.0)):
        wanted = np.clip(0.5 * (lo + hi) + np.clip(action, -1, 1) * 0.5 * (hi - lo), lo, hi)
        np.testing.assert_allclose(env.joint_targets(action), current + np.clip(wanted - current, -limit, limit),
                                   atol=1e-6)


@pytest.mark.parametrize("mode", ["released", "fixed"])
def test_ant_contact_forces_zero_as_released_computed_when_fixed(mode):
    env = AntEnv(ANT_DEFAULT_DESIGN, mode)
    obs = env.reset()
    assert obs.shape == (179,)
    np.testing.assert_allclose(obs[-60:], normalize_design(ANT_DEFAULT_DESIGN.reshape(-1), ANT_LEG_LOWER,
                                                           ANT_LEG_UPPER))
    for _ in range(30):  # fall 1.25 and land
        obs, _, _ = env.step(np.zeros(12))
    assert env.data.ncon > 0
    contact = obs[35:119]
    assert (np.abs(contact).max() > 0) == (mode == "fixed")


def test_a_simulation_mujoco_resets_is_reported_and_logged(caplog, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    env = AntEnv(ANT_DEFAULT_DESIGN)
    env.reset()
    env.step(np.zeros(12))
    assert not was_reset(env.data)
    env.data.qvel[0] = 1e11  # beyond MuJoCo's 1e10: it warns and resets to the rest pose
    with caplog.at_level("WARNING"), mujoco_warnings_logged():
        env.step(np.zeros(12))
    assert was_reset(env.data)
    assert "MuJoCo: Nan, Inf or huge value in QVEL" in caplog.text
    assert not (tmp_path / "MUJOCO_LOG.TXT").exists()
    env.reset()
    assert not was_reset(env.data)


# --- rollouts through the oracle ------------------------------------------------------------------


def test_ant_rollout_with_a_still_policy_sums_forward_velocity_and_survival(tmp_path):
    arrays = {k: np.zeros_like(v) for k, v in policy_arrays(179).items()}  # action tanh(0) = 0: no control cost
    oracle = MorphologyOracle(ANT, write_policy(tmp_path / "still.pkl", arrays), workers=1, horizon=40)
    env = AntEnv(ANT_DEFAULT_DESIGN)
    env.reset()
    x0 = env.data.xpos[env.torso, 0]
    for _ in range(40):
        env.step(np.zeros(12))
    score = oracle(ANT_DEFAULT_DESIGN.reshape(1, -1).astype(np.float32))
    assert score.shape == (1, 1) and score.dtype == np.float32
    # Rewards telescope: sum (x_t+1 - x_t) / dt + 1 = (x_T - x_0) / dt + T (contact forces are 0 as released).
    assert score[0, 0] == pytest.approx((env.data.xpos[env.torso, 0] - x0) / env.dt + 40, abs=1e-3)


def test_dkitty_rollout_stops_when_the_robot_falls(tmp_path):
    arrays = {k: np.zeros_like(v) for k, v in policy_arrays(108).items()}
    rollout = Rollout(DKITTY, load_policy(write_policy(tmp_path / "still.pkl", arrays), "x", 108, 12))
    env = DKittyEnv(DKITTY_DEFAULT_DESIGN)  # released thigh limits: the thighs start 0.39 rad outside them
    env.reset()
    rewards, done, total = [], False, np.float32(0)
    while not done and len(rewards) < 100:
        _, reward, done = env.step(np.zeros(12))
        rewards.append(reward)
        total += np.float32(reward)  # design-bench sums in float32, step by step
    assert done and len(rewards) < 100 and min(rewards) < -400  # fallen: -500
    score, reset = rollout(DKITTY_DEFAULT_DESIGN)
    assert score == total and not reset


def test_dkitty_fixed_mode_reaches_the_rollout(tmp_path):
    arrays = {k: np.zeros_like(v) for k, v in policy_arrays(108).items()}
    path = write_policy(tmp_path / "still.pkl", arrays)
    design = DKITTY_DEFAULT_DESIGN.reshape(1, -1)
    released = MorphologyOracle(DKITTY, path, workers=1)(design)[0, 0]
    fixed = MorphologyOracle(DKITTY, path, workers=1, mode="fixed")(design)[0, 0]
    assert released < -400 < 0 < fixed  # with its thighs inside their limits the still robot stands


@pytest.mark.parametrize("task", [ANT, DKITTY])
def test_out_of_bound_legs_are_clipped(task, policies):
    oracle = MorphologyOracle(task, policies[task], workers=1, horizon=15)
    robot = MORPHOLOGY_TASKS[task]
    x = np.repeat(random_designs(task, 1, seed=2), 4, axis=0).astype(np.float64)
    x[1, 0] = robot.upper[0] + 0.5          # leg 0's x beyond its upper bound ...
    x[2, 0] = robot.upper[0] + 7.0          # ... further beyond
    x[3, 0] = robot.upper[0]                # ... and exactly at it (float64: float32 rounds 0.1 up)
    x[1:3, -1] = robot.lower[-1] - np.array([1.0, 3.0])  # the last leg's last field below its lower bound
    x[3, -1] = robot.lower[-1]
    np.testing.assert_array_equal(oracle.legs(x[1:3]), oracle.legs(x[[3, 3]]))
    y = oracle(x)
    assert y[1, 0] == y[2, 0] == y[3, 0]
    assert y[0, 0] != y[1, 0]  # the clipped design is another design


@pytest.mark.parametrize("task", [ANT, DKITTY])
def test_rollouts_are_deterministic(task, policies):
    x = random_designs(task, 3, seed=7)
    first = MorphologyOracle(task, policies[task], workers=1, horizon=30)(x)
    again = MorphologyOracle(task, policies[task], workers=1, horizon=30)
    np.testing.assert_array_equal(again(x), first)
    np.testing.assert_array_equal(again(x[::-1]), first[::-1])
    assert len(np.unique(first)) == 3
    assert again.unstable.shape == (3,) and again.unstable.dtype == bool


def test_worker_count_does_not_change_scores(policies):
    # One pool (its start, a spawned interpreter per worker, is most of this test's time); the pool
    # code does not depend on the robot.
    x = random_designs(DKITTY, 5, seed=11)
    one = MorphologyOracle(DKITTY, policies[DKITTY], workers=1, horizon=25)(x)
    two = MorphologyOracle(DKITTY, policies[DKITTY], workers=2, horizon=25)(x)
    assert one.shape == (5, 1) and two.dtype == np.float32
    np.testing.assert_array_equal(one, two)


# --- bad input ------------------------------------------------------------------------------------


@pytest.mark.parametrize("x, match", [
    (np.zeros((2, 59), np.float32), r"shape \(n, 60\): 4 legs of 15 numbers, got an array of shape \(2, 59\)"),
    (np.zeros(60, np.float32), r"got an array of shape \(60,\); pass one design per row"),
    (np.zeros((1, 2, 60), np.float32), "pass one design per row"),
    (np.array([["a"] * 60]), "as floats"),
])
def test_designs_of_the_wrong_shape_raise(x, match, policies):
    with pytest.raises(BadDataError, match=match):
        MorphologyOracle(ANT, policies[ANT], workers=1)(x)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_designs_raise(bad, policies):
    x = random_designs(DKITTY, 3)
    x[2, 10] = bad
    with pytest.raises(BadDataError, match=r"1 of 3 DKittyMorphology-Exact-v0 designs hold NaN or inf \(first: row 2"):
        MorphologyOracle(DKITTY, policies[DKITTY], workers=1)(x)


def test_bad_settings_raise(policies):
    with pytest.raises(SettingsError, match="workers must be >= 1, got 0"):
        MorphologyOracle(ANT, policies[ANT], workers=0)
    with pytest.raises(SettingsError, match="horizon must be >= 1"):
        MorphologyOracle(ANT, policies[ANT], horizon=0)
    with pytest.raises(SettingsError, match="unknown mode 'on'; choose 'released' or 'fixed'"):
        MorphologyOracle(ANT, policies[ANT], mode="on")
    with pytest.raises(UnknownTaskError, match="no morphology oracle"):
        MorphologyOracle("HopperController-Exact-v0", policies[ANT])
