"""The morphing D'Kitty of DKittyMorphology-Exact-v0 as MJCF: a design of 4 legs -> a MuJoCo model.

A design is 56 numbers, 4 legs of 14 (:data:`DKITTY_LEG_FIELDS`): where the hip attaches to the
torso (``x, y, z``) and its orientation (``a, b, c``, Euler angles in radians), the centre and
half-width of each joint's range (radians), and the thigh and shin lengths. It follows
morphing-agents 1.5.1 (Trabucco et al.; the package design-bench 2.0.20 scores the task with):

- ``morphing_agents/mujoco/dkitty/elements.py``: the fields and their bounds
  (:data:`DKITTY_LEG_LOWER`, :data:`DKITTY_LEG_UPPER`);
- ``morphing_agents/mujoco/dkitty/designs.py``: ``DEFAULT_DESIGN`` (:data:`DKITTY_DEFAULT_DESIGN`);
- ``DKittyEnv.__init__`` in ``.../dkitty/env.py``: it loads ROBEL 0.1.2's
  ``robel/dkitty/assets/dkitty_walk-v0.xml`` (which includes ``robel-scenes/scenes/basic_scene.xml``
  and ``robel-scenes/dkitty/assets/{dependenciesA,chainA}_xh-v2.1.xml``), adds ``<size
  njmax="2000"/>`` and, per leg, sets the hip body's ``pos``/``euler``, the thigh and shin bodies'
  offsets ``0 0 size`` and each joint's range and position actuator's ``ctrlrange`` to
  ``centre ± half-width``.

The model is written here from those files' structure: a torso frame 0.3 above a plane (and a flat
height field 5 mm below it) on three slide and three hinge joints, the D'Kitty body with its six
convex bulkhead pieces and four servo boxes, and per leg a hip, thigh and shin body of box (and
one capsule) collision geoms with ROBEL's masses, hinges of damping 1 and armature 0.001, and
position servos of kp 5; Euler integration at a 0.0025 time step. :data:`BULKHEAD_VERTICES` are
the vertices of ROBEL's ``bulkhead_low_poly*.stl`` (Apache-2.0, The ROBEL Authors), 8 per piece,
written out here as data. What draws the scene and takes no part in the physics is left out: the
visual meshes (class ``viz_*``: no contacts, zero mass, outside ``inertiagrouprange``), lights,
cameras, textures, materials, sites, and the joint position and velocity sensors (read by
nothing here and not computing forces).

Released bug (kept by default, :func:`dkitty_mjcf` ``mode="released"``): the thigh joint's range
and its servo's ``ctrlrange`` are ``thigh_center ± hip_range`` (``env.py`` uses the hip's
half-width there), while the action scaling uses ``thigh_center ± thigh_range``. ``mode="fixed"``
writes ``thigh_center ± thigh_range``.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Literal

import numpy as np

#: One leg's parameters, in design order (morphing-agents ``dkitty/elements.py``: ``LEG``).
DKITTY_LEG_FIELDS = (
    "x", "y", "z", "a", "b", "c",
    "hip_center", "hip_range", "thigh_center", "thigh_range", "ankle_center", "ankle_range",
    "thigh_size", "ankle_size",
)
_PI = np.pi
#: Lower bound of each field (``LEG_LOWER_BOUND``); ``z`` is fixed at 0.
DKITTY_LEG_LOWER = np.array([-0.09, -0.122, 0, -_PI, -_PI, -_PI, -_PI, _PI / 35, -_PI, _PI / 35, -_PI, _PI / 35,
                             0.0965, 0.0945], dtype=np.float64)
#: Upper bound of each field (``LEG_UPPER_BOUND``).
DKITTY_LEG_UPPER = np.array([0.09, 0.122, 0, _PI, _PI, _PI, _PI, _PI / 4, _PI, _PI / 4, _PI, _PI / 2,
                             0.1365, 0.1345], dtype=np.float64)
#: ``DEFAULT_DESIGN``: ROBEL's D'Kitty, legs front right, front left, back left, back right; ``(4, 14)``.
DKITTY_DEFAULT_DESIGN = np.array(
    [[sx * 0.09, sy * 0.122, 0, 0, -sx * 3.14, 0, -sx * 0.1105, 0.3895, _PI / 4, _PI / 4, -1.0, 1.0, 0.0965, 0.0945]
     for sx, sy in ((1, 1), (-1, 1), (-1, -1), (1, -1))], dtype=np.float64
)
DKITTY_NUM_LEGS = 4
#: ROBEL's leg prefixes and numbers, in design (and actuator) order.
DKITTY_LEGS = (("FR", 1), ("FL", 2), ("BL", 3), ("BR", 4))
#: Environment steps are this many simulator steps (morphing-agents ``DKittyWalk(frame_skip=40)``).
DKITTY_FRAME_SKIP = 40

#: ``"released"``: as morphing-agents and ROBEL ran; ``"fixed"``: their bugs mended (see each use).
Mode = Literal["released", "fixed"]

#: ``bulkhead_low_poly{,1..5}.stl``: the torso's six convex collision pieces, 8 vertices each (float32
#: values as stored in the STL), and the masses ``chainA_xh-v2.1.xml`` gives them.
BULKHEAD_VERTICES = (
    "0.062442467 -0.10598844 0.017618868 0.062335484 -0.13791662 0.017618868 0.062335484 -0.13791662 -0.017621377 "
    "0.062442467 -0.10598844 -0.017621377 -0.062335514 -0.1379166 0.017618868 "
    "-0.062335514 -0.1379166 -0.017621377 -0.062442478 -0.10598843 0.017618868 "
    "-0.062442478 -0.10598843 -0.017621377",
    "0.044275615 -0.053331602 0.017618857 0.061666217 -0.105820425 0.017618857 "
    "0.061666217 -0.105820425 -0.017621366 0.044275615 -0.053331602 -0.017621366 "
    "-0.061666235 -0.10582041 0.017618857 -0.061666235 -0.10582041 -0.017621366 "
    "-0.044275615 -0.053331587 0.017618857 -0.044275615 -0.053331587 -0.017621366",
    "0.039430376 0.0011132256 0.017618867 0.04458495 -0.05353843 0.017618867 0.04458495 -0.05353843 -0.017621374 "
    "0.039430376 0.0011132256 -0.017621374 -0.044584956 -0.053538416 0.017618867 "
    "-0.044584956 -0.053538416 -0.017621374 -0.039430376 0.0011132375 0.017618867 "
    "-0.039430376 0.0011132375 -0.017621374",
    "-0.039430376 -0.0011132315 0.017618818 -0.044584956 0.053538423 0.017618818 "
    "-0.044584956 0.053538423 -0.017621348 -0.039430376 -0.0011132315 -0.017621348 "
    "0.04458495 0.053538423 0.017618818 0.04458495 0.053538423 -0.017621348 0.039430376 -0.0011132315 0.017618818 "
    "0.039430376 -0.0011132315 -0.017621348",
    "-0.044275615 0.053331554 0.017618867 -0.061666228 0.10582037 0.017618867 "
    "-0.061666228 0.10582037 -0.017621366 -0.044275615 0.053331554 -0.017621366 "
    "0.061666228 0.10582037 0.017618867 0.061666228 0.10582037 -0.017621366 0.044275615 0.053331554 0.017618867 "
    "0.044275615 0.053331554 -0.017621366",
    "-0.06244247 0.10598838 0.017618867 -0.0623355 0.13791656 0.017618867 -0.0623355 0.13791656 -0.017621366 "
    "-0.06244247 0.10598838 -0.017621366 0.0623355 0.13791656 0.017618867 0.0623355 0.13791656 -0.017621366 "
    "0.06244247 0.10598838 0.017618867 0.06244247 0.10598838 -0.017621366",
)
BULKHEAD_MASSES = (".038", ".085", ".065", ".065", ".085", ".038")
#: The 12 triangles of every bulkhead piece (the STL's, over the vertices in the order above).
BULKHEAD_FACES = "0 1 2 2 3 0 1 4 5 5 2 1 4 6 7 7 5 4 6 0 3 3 7 6 1 0 6 6 4 1 5 7 3 3 2 5"

# Collision geoms of ``chainA_xh-v2.1.xml`` (class ``collision``), as (type, pos, size, mass, euler).
_TORSO_BOXES = tuple(("box", pos, "0.024 0.018 0.015", ".086", None)
                     for pos in ("0.078 -0.122 0", "-0.078 -0.122 0", "-0.078 0.122 0", "0.078 0.122 0"))
_HIP_GEOMS = (
    ("box", "0 -0.02 0.026", "0.0015 0.013 0.029", ".005", "0 0 1.57"),
    ("box", "0 0.02 0.026", "0.0015 0.013 0.029", ".005", "0 0 1.57"),
    ("box", "0 0 0.051", "0.019 0.016 0.004", ".008", "0 0 1.57"),
    ("box", "0 0 0.061", "0.019 0.013 0.006", ".005", None),
    ("box", "0 0 0.084", "0.018 0.015 0.024", ".095", None),
)
_THIGH_GEOMS = (
    ("box", "0 0 0.051", "0.019 0.016 0.004", ".008", None),
    ("box", "-0.02 0 0.026", "0.0015 0.013 0.029", ".005", None),
    ("box", "0.02 0 0.026", "0.0015 0.013 0.029", ".005", None),
    ("box", "0 0 0.084", "0.018 0.015 0.023", ".095", None),
    ("box", "0 0 0.06", "0.019 0.013 0.006", ".005", None),
)
_SHIN_GEOMS = (
    ("box", "0.02 0 0.026", "0.0015 0.013 0.029", ".005", None),
    ("box", "-0.02 0 0.026", "0.0015 0.013 0.029", ".005", None),
    ("box", "0 0 0.052", "0.019 0.016 0.004", ".008", None),
    ("box", "0 0 0.058", "0.025 0.014 0.003", ".002", None),
    ("capsule", "0 0 0.082", "0.0103 0.0187", ".02", None),
)


def _num(v: float) -> str:
    """A float64 as morphing-agents' f-strings print it (the shortest repr that reads back exactly)."""
    return repr(float(v))


def _sub(parent: ET.Element, tag: str, cls: str | None = None, **attrs: str) -> ET.Element:
    """A child element; ``cls`` is its MJCF ``class`` (a Python keyword)."""
    return ET.SubElement(parent, tag, attrs if cls is None else {"class": cls, **attrs})


def _collision_geoms(body: ET.Element, geoms: tuple) -> None:
    for kind, pos, size, mass, euler in geoms:
        geom = _sub(body, "geom", "collision", pos=pos, size=size, type=kind, mass=mass)
        if euler is not None:
            geom.set("euler", euler)


def _span(center: float, half_width: float) -> str:
    return f"{_num(center - half_width)} {_num(center + half_width)}"


def dkitty_mjcf(legs: np.ndarray, mode: Mode = "released") -> str:
    """The MJCF of a morphing D'Kitty (morphing-agents ``DKittyEnv.__init__``, ``dkitty/env.py``).

    Args:
        legs: ``(4, 14)`` float leg parameters in :data:`DKITTY_LEG_FIELDS` order (front right,
            front left, back left, back right), already within the bounds (the oracle clips them).
        mode: ``"released"`` limits each thigh joint (and its servo) to
            ``thigh_center ± hip_range`` as morphing-agents does; ``"fixed"`` to
            ``thigh_center ± thigh_range``.

    Returns:
        The model as an XML string. Joints: ``Tx, Ty, Tz, Rx, Ry, Rz`` of the torso frame
        (``qpos[0:6]``), then per leg hip, thigh, shin (``qpos[6:18]``); actuators: the 12 leg servos
        in that order.
    """
    legs = np.asarray(legs, dtype=np.float64)
    if legs.shape != (DKITTY_NUM_LEGS, len(DKITTY_LEG_FIELDS)):
        raise ValueError(f"a D'Kitty design has {DKITTY_NUM_LEGS} legs of {len(DKITTY_LEG_FIELDS)} numbers, "
                         f"got {legs.shape}")
    if mode not in ("released", "fixed"):
        raise ValueError(f"mode must be 'released' or 'fixed', got {mode!r}")
    root = ET.Element("mujoco", model="dkitty-v2.1")
    _sub(root, "compiler", angle="radian", inertiafromgeom="auto", inertiagrouprange="4 5")
    _sub(root, "option", timestep="0.0025")
    # dependenciesA's njmax="400" nconmax="400", then DKittyEnv's njmax="2000".
    _sub(root, "size", njmax="2000", nconmax="400")
    asset = _sub(root, "asset")
    for i, vertices in enumerate(BULKHEAD_VERTICES):
        _sub(asset, "mesh", name=f"bulkhead_low_poly{i or ''}", vertex=vertices, face=BULKHEAD_FACES)
    _sub(asset, "hfield", name="hf1", size="4.5 4.5 1 .1", nrow="120", ncol="120")
    default = _sub(_sub(root, "default"), "default", "dkitty")
    _sub(default, "joint", limited="true", damping="1", armature="0.001")
    _sub(default, "geom", contype="1", conaffinity="1", condim="4", group="1", margin="0.001", solref=".02 1",
         solimp=".8 .9 .01")
    _sub(default, "position", ctrlrange="-1.57 1.57", ctrllimited="true", kp="5")
    collision = _sub(default, "default", "collision")
    _sub(collision, "geom", contype="1", conaffinity="1", group="4")

    world = _sub(root, "worldbody")
    _sub(world, "geom", name="floor", pos="0 0 0", size="5 5 .1", conaffinity="1", contype="1", type="plane",
         condim="3")
    _sub(world, "geom", name="hfield1", type="hfield", hfield="hf1", pos="0 0 -.005")
    frame = _sub(world, "body", name="kitty_frame", pos="0 0 .3")
    _sub(frame, "geom", type="sphere", size="0.010", mass="0.010", group="4")
    for name, axis, kind, limit in (("Tx", "1 0 0", "slide", "-10 10"), ("Ty", "0 1 0", "slide", "-10 10"),
                                    ("Tz", "0 0 1", "slide", "-2 2"), ("Rx", "1 0 0", "hinge", "-3.14 3.14"),
                                    ("Ry", "0 1 0", "hinge", "-3.14 3.14"), ("Rz", "0 0 1", "hinge", "-3.14 3.14")):
        _sub(frame, "joint", name=name, pos="0 0 0", axis=axis, limited="true", type=kind, range=limit)
    kitty = _sub(frame, "body", childclass="dkitty", name="A:dkitty")
    for i, mass in enumerate(BULKHEAD_MASSES):
        _sub(kitty, "geom", "collision", mesh=f"bulkhead_low_poly{i or ''}", type="mesh", mass=mass)
    _collision_geoms(kitty, _TORSO_BOXES)

    actuator = _sub(root, "actuator")
    for (prefix, number), leg in zip(DKITTY_LEGS, legs, strict=True):
        p = dict(zip(DKITTY_LEG_FIELDS, leg.tolist(), strict=True))
        thigh_half = p["hip_range"] if mode == "released" else p["thigh_range"]
        spans = (_span(p["hip_center"], p["hip_range"]), _span(p["thigh_center"], thigh_half),
                 _span(p["ankle_center"], p["ankle_range"]))
        hip = _sub(kitty, "body", euler=f"{_num(p['a'])} {_num(p['b'])} {_num(p['c'])}", name=f"A:{prefix}{number}0",
                   pos=f"{_num(p['x'])} {_num(p['y'])} {_num(p['z'])}")
        _sub(hip, "joint", axis="0 1 0", name=f"A:{prefix}J{number}0", range=spans[0])
        _collision_geoms(hip, _HIP_GEOMS)
        thigh = _sub(hip, "body", name=f"A:{prefix}{number}1", pos=f"0 0 {_num(p['thigh_size'])}")
        _sub(thigh, "joint", axis="1 0 0", name=f"A:{prefix}J{number}1", range=spans[1])
        _collision_geoms(thigh, _THIGH_GEOMS)
        shin = _sub(thigh, "body", name=f"A:{prefix}{number}2", pos=f"0 0 {_num(p['ankle_size'])}")
        _sub(shin, "joint", axis="1 0 0", name=f"A:{prefix}J{number}2", range=spans[2])
        _collision_geoms(shin, _SHIN_GEOMS)
        for j, span in enumerate(spans):
            _sub(actuator, "position", "dkitty", name=f"A:{prefix}J{number}{j}", joint=f"A:{prefix}J{number}{j}",
                 ctrlrange=span)
    return ET.tostring(root, encoding="unicode")
