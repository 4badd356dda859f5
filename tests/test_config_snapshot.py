"""Every shipped config stack still resolves to the settings recorded in
``tests/snapshots/resolved_configs.json`` (see :mod:`tests.config_snapshot`): a change to ``configs/`` or
to the CLI's defaults that moves a setting must not change it."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from lightning_mbo.cli import run_name
from tests.config_snapshot import ABSENT, REPO_ROOT, expand, flatten, parser, resolve

SNAPSHOT = json.loads((Path(__file__).parent / "snapshots" / "resolved_configs.json").read_text())

#: Keys allowed to differ from the snapshot, each with the reason (a key the code gained since is
#: not compared: it resolves to its code default).
CHANGED = {
    "trainer.logger.init_args.name": "unset in the configs: derived when the run starts (cli.run_name), "
                                     "checked below to give the recorded name",
    "model.init_args.search_steps": "COMs' search budget lives with the searcher now: its 50 steps are "
                                    "COMs.SEARCH_STEPS, the default --ascent.steps takes (checked below)",
}

#: The overlay that replaced the ``<method>_ignite.yaml`` copies.
IGNITE = "configs/ignite.yaml"


def current_stack(name: str) -> list[str]:
    """The files that give a recorded stack today: ``<method>_ignite.yaml`` is ``<method>.yaml`` and
    the IGNITE overlay."""
    stack = []
    for path in name.split(" + "):
        if path.endswith("_ignite.yaml") and not (REPO_ROOT / path).exists():
            stack += [path.removesuffix("_ignite.yaml") + ".yaml", IGNITE]
        else:
            stack.append(path)
    return stack


@pytest.fixture(scope="module")
def cli_parser():
    argv, sys.argv = sys.argv, ["lightning-mbo"]
    try:
        yield parser()
    finally:
        sys.argv = argv


#: Every method config alone runs in the default suite (about 40 s); the stacks with an overlay
#: (about 650 more, some minutes on 2 cores) are ``slow``.
STACKS = [pytest.param(name, marks=pytest.mark.slow) if " + " in name else name for name in sorted(SNAPSHOT["stacks"])]


@pytest.mark.parametrize("name", STACKS)
def test_stack_resolves_as_recorded(name, cli_parser):
    stack = current_stack(name)
    resolved = resolve(stack, cli_parser)
    got, want = flatten(resolved), expand(SNAPSHOT, name)
    diff = {k: (want[k], got.get(k, ABSENT)) for k in want if k not in CHANGED and got.get(k, ABSENT) != want[k]}
    assert not diff, f"{stack}: recorded, now: {diff}"
    if want.get("model.init_args.search_steps", ABSENT) != ABSENT:
        from lightning_mbo.methods import COMs  # noqa: PLC0415

        assert got.get("ascent.steps") in (None, want["model.init_args.search_steps"])
        assert got.get("ascent.steps") is not None or COMs.SEARCH_STEPS == want["model.init_args.search_steps"]
    recorded_name = want["trainer.logger.init_args.name"]
    assert (got["trainer.logger.init_args.name"] or run_name(stack, resolved["model"])) == recorded_name
