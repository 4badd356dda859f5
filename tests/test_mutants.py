"""The mutation check's list (tools/mutation_check.py) still applies to the code: each mutant's
text occurs exactly once where it says, and names tests that exist."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("mutation_check", ROOT / "tools" / "mutation_check.py")
mutation_check = importlib.util.module_from_spec(_spec)
sys.modules["mutation_check"] = mutation_check  # dataclasses look their module up there
_spec.loader.exec_module(mutation_check)


@pytest.mark.parametrize("mutant", mutation_check.MUTANTS, ids=lambda m: m.name)
def test_mutant_applies_and_names_existing_tests(mutant) -> None:
    assert mutation_check.check_applicable(mutant) == []
    assert mutant.tests
    for test in mutant.tests:
        path, _, name = test.partition("::")
        assert (ROOT / path).exists(), test
        if name:
            assert f"def {name}(" in (ROOT / path).read_text(), test


def test_mutant_names_are_unique() -> None:
    names = [m.name for m in mutation_check.MUTANTS]
    assert len(names) == len(set(names))
