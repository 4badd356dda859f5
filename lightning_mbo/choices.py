"""One check for settings that take one of a fixed set of names (declared as ``Literal`` types)."""

from __future__ import annotations

from typing import Any, get_args


def check_choice(option: str, value: object, choices: Any) -> None:
    """Raise a ``ValueError`` naming ``option`` unless ``value`` is one of the ``Literal`` ``choices``.

    >>> check_choice("head", "mse", Literal["gaussian", "mse"])  # passes
    """
    allowed = get_args(choices)
    if value not in allowed:
        names = [repr(a) for a in allowed]
        listed = names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"
        raise ValueError(f"unknown {option} {value!r}; choose {listed}")
