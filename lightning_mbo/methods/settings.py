"""The settings a method class takes by name, as the command line resolves them."""

from __future__ import annotations

import functools


@functools.cache
def accepted_settings(cls: type) -> frozenset[str]:
    """The settings ``cls(...)`` takes by name, as the command line resolves them: its own
    parameters and, through ``**kwargs``, those of its base (:class:`~lightning_mbo.methods.Surrogate`)
    that its ``super().__init__`` call does not fix itself (jsonargparse reads that call; a class
    whose source it cannot read offers every base setting)."""
    from jsonargparse import ArgumentParser  # noqa: PLC0415  (a dependency of LightningCLI)

    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(cls, "m", fail_untyped=False)
    return frozenset(a.dest.split(".")[1] for a in parser._actions if a.dest.startswith("m."))
