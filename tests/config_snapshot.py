"""The fully resolved config (``fit --config ... --print_config``) of every shipped config stack, as a
snapshot that a refactoring of ``configs/`` or of the CLI's defaults must reproduce.

A stack is a method config alone or with an overlay meant for it (the pairing of
``tests/test_cli.py``). Each resolved config is flattened to dotted keys (``trainer.max_epochs``,
``trainer.callbacks.0.init_args.save_last``); the snapshot stores the values most stacks share once
(``common``) and, per stack, only the keys whose value differs from it (``ABSENT``: the key is
missing). Regenerate it only when a change of resolved settings is meant::

    python -m tests.config_snapshot tests/snapshots/resolved_configs.json
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
ABSENT = "<absent>"


class _ParserOnly(Exception):
    pass


def parser() -> Any:
    """The CLI's own parser (``fit`` and the other subcommands), built once: parsing a stack with it
    resolves exactly what ``--print_config`` prints, without rebuilding the parser per stack."""
    from lightning_mbo import cli  # noqa: PLC0415

    captured = {}

    class _Capture(cli.MBOCLI):
        def parse_arguments(self, parser: Any, args: Any) -> None:
            captured["parser"] = parser
            raise _ParserOnly

    argv, sys.argv = sys.argv, sys.argv[:1]
    try:
        _Capture(cli.Surrogate, cli.MBODataModule, trainer_class=cli.MBOTrainer, subclass_mode_model=True,
                 seed_everything_default=0, args=["fit"], save_config_kwargs={"overwrite": True},
                 auto_configure_optimizers=False)
    except _ParserOnly:
        pass
    finally:
        sys.argv = argv
    return captured["parser"]


def resolve(stack: list[str], parser_: Any) -> dict:
    """The resolved ``fit`` config of ``stack`` (paths relative to the repository root), as a dict."""
    args = ["fit", *[a for p in stack for a in ("--config", str(REPO_ROOT / p))]]
    cfg = parser_.parse_args(args)
    sub = parser_._subcommands_action._name_parser_map["fit"]
    out = yaml.safe_load(sub.dump(cfg.fit, skip_none=False, skip_validation=True))
    out.pop("config", None)
    return out


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted keys to scalar values (lists of scalars stay lists; lists of dicts are indexed)."""
    if isinstance(tree, dict):
        items = tree.items()
    elif isinstance(tree, list) and any(isinstance(v, dict | list) for v in tree):
        items = ((str(i), v) for i, v in enumerate(tree))
    else:
        return {prefix: tree}
    flat: dict[str, Any] = {}
    for key, value in items:
        flat.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def stacks() -> list[list[str]]:
    """Every shipped method config alone and with each overlay meant for it."""
    from tests.test_cli import METHODS, OVERLAYS, _applies  # noqa: PLC0415

    rel = lambda p: str(p.relative_to(REPO_ROOT))  # noqa: E731
    return [s for m in METHODS for s in ([rel(m)], *([rel(m), rel(o)] for o in OVERLAYS if _applies(o, m)))]


def snapshot(all_stacks: list[list[str]]) -> dict:
    parser_ = parser()
    flat = {" + ".join(s): flatten(resolve(s, parser_)) for s in all_stacks}
    keys = sorted({k for f in flat.values() for k in f})
    common = {}
    for key in keys:
        values = Counter(json.dumps(f.get(key, ABSENT)) for f in flat.values())
        common[key] = json.loads(values.most_common(1)[0][0])
    # A method config alone: what differs from ``common``; with an overlay: what differs from it alone.
    per_stack = {}
    for name, f in flat.items():
        ref = flat[name.split(" + ")[0]] if " + " in name else common
        per_stack[name] = {k: f.get(k, ABSENT) for k in keys if f.get(k, ABSENT) != ref.get(k, ABSENT)}
    return {"common": common, "stacks": per_stack}


def expand(snap: dict, name: str) -> dict[str, Any]:
    """A stack's flattened resolved config from the snapshot."""
    base = expand(snap, name.split(" + ")[0]) if " + " in name else snap["common"]
    full = {**base, **snap["stacks"][name]}
    return {k: v for k, v in full.items() if v != ABSENT}


def dumps(snap: dict) -> str:
    """JSON with one line per key of ``common`` and one per stack (a change shows as a line's diff)."""
    line = lambda v: json.dumps(v, sort_keys=True, separators=(",", ":"))  # noqa: E731
    common = ",\n".join(f"{json.dumps(k)}:{line(v)}" for k, v in sorted(snap["common"].items()))
    stacks = ",\n".join(f"{json.dumps(k)}:{line(v)}" for k, v in sorted(snap["stacks"].items()))
    return f'{{"common":{{\n{common}}},\n"stacks":{{\n{stacks}}}}}\n'


if __name__ == "__main__":
    Path(sys.argv[1]).parent.mkdir(parents=True, exist_ok=True)
    Path(sys.argv[1]).write_text(dumps(snapshot(stacks())))
