"""The morphing Ant of AntMorphology-Exact-v0 as MJCF: a design of 4 legs -> a MuJoCo model.

A design is 60 numbers, 4 legs of 15 (:data:`ANT_LEG_FIELDS`): where the leg attaches to the
torso (``x, y, z``) and its orientation there (``a, b, c``, Euler angles in degrees), the centre
and half-width of each joint's range (hip, thigh, ankle, degrees), and the lengths of the three
capsules (hip, thigh, ankle). It follows morphing-agents 1.5.1 (Trabucco et al.; the package
design-bench 2.0.20 scores the task with):

- ``morphing_agents/mujoco/ant/elements.py``: the fields and their bounds
  (:data:`ANT_LEG_LOWER`, :data:`ANT_LEG_UPPER`);
- ``morphing_agents/mujoco/ant/designs.py``: ``DEFAULT_DESIGN`` (:data:`ANT_DEFAULT_DESIGN`);
- ``morphing_agents/mujoco/ant/base.xml`` and ``AntEnv.__init__`` in ``.../ant/env.py``: the model
  (:func:`ant_mjcf`): a torso sphere on a free joint 1.25 above a plane, and per leg a body at
  ``(x, y, z)`` rotated by ``(a, b, c)`` carrying three capsules of radius 0.08 in the diagonal
  direction ``(s, s, 0)``, the hip and ankle hinges about ``(-1, 1, 0)`` and the thigh hinge about
  ``z``, each joint limited to ``centre ± range`` and driven by a motor of gear 150, control in
  ``[-1, 1]``; RK4 at a 0.01 time step.

Numbers enter the XML as ``repr`` of the float64 value, as design-bench's f-strings write the
float64 legs that ``np.clip`` returns. Only what the simulation uses is written: base.xml's light,
camera, textures and materials are left out (they draw the scene and take no part in the physics),
and its ``coordinate="local"`` (MuJoCo's only frame convention today) is not repeated.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

import numpy as np

#: One leg's parameters, in design order (morphing-agents ``ant/elements.py``: ``LEG``).
ANT_LEG_FIELDS = (
    "x", "y", "z", "a", "b", "c",
    "hip_center", "hip_range", "thigh_center", "thigh_range", "ankle_center", "ankle_range",
    "hip_size", "thigh_size", "ankle_size",
)
#: Lower bound of each field (``LEG_LOWER_BOUND``): positions in model units, angles in degrees.
ANT_LEG_LOWER = np.array([-0.1, -0.1, -0.1, -180, -180, -180, -180, 5, -180, 5, -180, 5, 0.1, 0.1, 0.2],
                         dtype=np.float64)
#: Upper bound of each field (``LEG_UPPER_BOUND``).
ANT_LEG_UPPER = np.array([0.1, 0.1, 0.1, 180, 180, 180, 180, 45, 180, 45, 180, 45, 0.4, 0.4, 0.8],
                         dtype=np.float64)
#: ``DEFAULT_DESIGN``: four equal legs turned 0, 90, 180 and -90 degrees about z; ``(4, 15)``.
ANT_DEFAULT_DESIGN = np.array(
    [[0.0, 0.0, 0.0, 0, 0, c, 0, 5, 0, 30, 50, 20, 0.2, 0.2, 0.4] for c in (0, 90, 180, -90)], dtype=np.float64
)
ANT_NUM_LEGS = 4
#: Motor gear of every joint (``AntEnv.__init__``).
ANT_GEAR = 150


def _num(v: float) -> str:
    """A float64 as design-bench's f-strings print it (the shortest repr that reads back exactly)."""
    return repr(float(v))


def _vec(*vs: float) -> str:
    return " ".join(_num(v) for v in vs)


def _sub(parent: ET.Element, tag: str, **attrs: str) -> ET.Element:
    return ET.SubElement(parent, tag, attrs)


def ant_mjcf(legs: np.ndarray) -> str:
    """The MJCF of a morphing Ant (morphing-agents ``AntEnv.__init__``, ``ant/env.py``).

    Args:
        legs: ``(4, 15)`` float leg parameters in :data:`ANT_LEG_FIELDS` order, already within
            :data:`ANT_LEG_LOWER` / :data:`ANT_LEG_UPPER` (the oracle clips them first).

    Returns:
        The model as an XML string for ``mujoco.MjModel.from_xml_string``. Bodies are the world,
        ``torso`` and per leg ``leg_{i}_body``, ``thigh_{i}_body``, ``ankle_{i}_geom`` (the released
        name of the ankle body); actuators are ordered hip, thigh, ankle of leg 0, then leg 1, ...
    """
    legs = np.asarray(legs, dtype=np.float64)
    if legs.shape != (ANT_NUM_LEGS, len(ANT_LEG_FIELDS)):
        raise ValueError(f"an Ant design has {ANT_NUM_LEGS} legs of {len(ANT_LEG_FIELDS)} numbers, got {legs.shape}")
    root = ET.Element("mujoco", model="ant")
    _sub(root, "compiler", angle="degree", inertiafromgeom="true")
    _sub(root, "option", integrator="RK4", timestep="0.01")
    default = _sub(root, "default")
    _sub(default, "joint", armature="1", damping="1", limited="true")
    _sub(default, "geom", conaffinity="0", condim="3", density="5.0", friction="1 0.5 0.5", margin="0.01")
    world = _sub(root, "worldbody")
    _sub(world, "geom", conaffinity="1", condim="3", name="floor", pos="0 0 0", size="40 40 40", type="plane")
    torso = _sub(world, "body", name="torso", pos="0 0 1.25")
    _sub(torso, "geom", name="torso_geom", pos="0 0 0", size="0.25", type="sphere")
    _sub(torso, "joint", armature="0", damping="0", limited="false", margin="0.01", name="root", pos="0 0 0",
         type="free")
    actuator = _sub(root, "actuator")
    for i, leg in enumerate(legs):
        p = dict(zip(ANT_LEG_FIELDS, leg.tolist(), strict=True))
        hip, thigh, ankle = p["hip_size"], p["thigh_size"], p["ankle_size"]
        leg_body = _sub(torso, "body", name=f"leg_{i}_body", pos=_vec(p["x"], p["y"], p["z"]),
                        euler=_vec(p["a"], p["b"], p["c"]))
        _sub(leg_body, "geom", pos="0.0 0.0 0.0", fromto=f"0.0 0.0 0.0 {_num(hip)} {_num(hip)} 0.0",
             name=f"leg_{i}_geom", size="0.08", type="capsule")
        thigh_body = _sub(leg_body, "body", name=f"thigh_{i}_body", pos=f"{_num(hip)} {_num(hip)} 0")
        _sub(thigh_body, "joint", axis="-1 1 0", name=f"hip_{i}_joint", pos="0.0 0.0 0.0", type="hinge",
             range=_vec(p["hip_center"] - p["hip_range"], p["hip_center"] + p["hip_range"]))
        _sub(thigh_body, "joint", axis="0 0 1", name=f"thigh_{i}_joint", pos="0.0 0.0 0.0", type="hinge",
             range=_vec(p["thigh_center"] - p["thigh_range"], p["thigh_center"] + p["thigh_range"]))
        _sub(thigh_body, "geom", fromto=f"0.0 0.0 0.0 {_num(thigh)} {_num(thigh)} 0.0", name=f"thigh_{i}_geom",
             size="0.08", type="capsule")
        ankle_body = _sub(thigh_body, "body", pos=f"{_num(thigh)} {_num(thigh)} 0", name=f"ankle_{i}_geom")
        _sub(ankle_body, "joint", axis="-1 1 0", name=f"ankle_{i}_joint", pos="0.0 0.0 0.0", type="hinge",
             range=_vec(p["ankle_center"] - p["ankle_range"], p["ankle_center"] + p["ankle_range"]))
        _sub(ankle_body, "geom", fromto=f"0.0 0.0 0.0 {_num(ankle)} {_num(ankle)} 0.0", name=f"ankle_{i}_geom",
             size="0.08", type="capsule")
        for joint in ("hip", "thigh", "ankle"):
            _sub(actuator, "motor", ctrllimited="true", ctrlrange="-1.0 1.0", joint=f"{joint}_{i}_joint",
                 gear=str(ANT_GEAR))
    return ET.tostring(root, encoding="unicode")
