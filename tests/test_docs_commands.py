"""Every shell command in README.md and docs/*.md runs, at a size a test can afford.

The commands are read from the fenced ``bash`` blocks. ``fit``, ``ascend`` and ``benchmark`` lines
are run with ``--print_config`` appended: the whole command line is parsed and every config file
read, and nothing is trained (a real run takes minutes; tests/test_cli.py and the method tests run
fits at a tiny size). ``--help`` lines run as written. ``tasks`` and ``tools/mutation_check.py``
run as written (the latter with ``--list``: running every mutant is the mutation check itself).
The commands in :data:`SKIPPED` are not run, each for the reason it names.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from lightning_mbo.cli import main

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

#: Commands that are not run, by their start, and why.
SKIPPED = {
    "pip install": "the install itself (.ci/run runs the README's, to the letter)",
    "python -m pytest": "the test suite itself",
    "export ": "sets a variable for the commands after it",
    "tensorboard ": "starts a server",
    "ruff check": "lint and types, run by hand or in CI, not by a test",
    "python -m lightning_mbo data download": "downloads from the Hugging Face hub: no network in tests "
                                             "(tests/tasks/test_download.py runs it against a local mirror)",
    "python -m lightning_mbo results": "needs finished runs under logs/ (tests/test_reliability.py runs it on "
                                       "a run it made)",
    "python -m lightning_mbo data check": "needs the task's downloaded data (tests/tasks/test_data_check.py "
                                          "runs it on stand-ins written in design-bench's formats)",
}


def doc_commands() -> list[tuple[str, str]]:
    """``(file, command)`` for every line of every fenced shell block (continuations joined, comments dropped)."""
    found = []
    for path in DOCS:
        for block in re.findall(r"```(?:bash|sh|shell|console)\n(.*?)```", path.read_text(), re.S):
            for line in block.replace("\\\n", " ").splitlines():
                command = " ".join(line.split("  #")[0].split())
                if command and (path.name, command) not in found:
                    found.append((path.relative_to(ROOT).as_posix(), command))
    return found


COMMANDS = doc_commands()


def _skip_reason(command: str) -> str | None:
    return next((why for start, why in SKIPPED.items() if command.startswith(start)), None)


def test_the_docs_have_commands():
    assert len(COMMANDS) > 10
    assert ("README.md", "python -m lightning_mbo fit") in COMMANDS


@pytest.mark.parametrize(("doc", "command"), COMMANDS, ids=[f"{d}: {c}" for d, c in COMMANDS])
def test_doc_command_runs(doc, command, monkeypatch, capsys):
    reason = _skip_reason(command)
    if reason:
        pytest.skip(reason)
    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(sys, "argv", sys.argv[:1])  # LightningCLI reads sys.argv when given no args
    words = command.split()
    if words[:2] == ["python", "tools/mutation_check.py"]:
        proc = subprocess.run([sys.executable, *words[1:], "--list"], capture_output=True, text=True, timeout=60,
                              check=False)
        assert proc.returncode == 0, proc.stderr
        return
    assert words[:3] == ["python", "-m", "lightning_mbo"], f"{doc}: no rule runs or skips {command!r}"
    args = words[3:]
    if args[0] in ("fit", "ascend", "benchmark") and "--help" not in args:
        args.append("--print_config")
    try:
        main(args)
    except SystemExit as done:
        assert done.code in (0, None), f"{doc}: {command!r} exited {done.code}: {capsys.readouterr().err}"
