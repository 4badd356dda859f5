"""Checks of user settings: one error type, one message shape (the setting, the value, the fix).

:class:`SettingsError` is a ``ValueError``; the command line reports it as one
``lightning_mbo: error:`` line and exits 2.
"""

from __future__ import annotations

from typing import Any, get_args


class SettingsError(ValueError):
    """A setting outside its domain (an unknown name, a negative rate, ...)."""


def check_choice(option: str, value: object, choices: Any) -> None:
    """Raise :class:`SettingsError` naming ``option`` unless ``value`` is one of the ``Literal`` ``choices``."""
    allowed = get_args(choices)
    if value not in allowed:
        names = [repr(a) for a in allowed]
        listed = names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"
        raise SettingsError(f"unknown {option} {value!r}; choose {listed}")


def check_range(option: str, value: float | int, low: float, *, strict: bool = False, hint: str = "") -> None:
    """Raise :class:`SettingsError` unless ``value >= low`` (``> low`` with ``strict``)."""
    ok = value > low if strict else value >= low
    if not ok:
        bound = f"> {low}" if strict else f">= {low}"
        raise SettingsError(f"{option} must be {bound}, got {value}" + (f" ({hint})" if hint else ""))
