"""Which environment variables hold orch's secrets, for this process.

The composition root (orch/app/wiring.py) sets them once from the configuration (the value
of each `*_env` key); adapters that start processes without a runner of their own (git)
read them here. A module of its own, light on purpose: setting the names must not import
the adapter (and its subprocess machinery) on the CLI's start-up path.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Mapping

_names: frozenset[str] = frozenset()


def hide(names: Collection[str]) -> None:
    """Withhold the variables `names` from every process git starts in this process."""
    global _names
    _names = frozenset(names)


def inherited(names: Collection[str] | None = None) -> Mapping[str, str]:
    """This process's environment without the secrets `names` (default: those `hide` set):
    what a process orch starts inherits before anything is given to it by name."""
    withheld = _names if names is None else names
    return {k: v for k, v in os.environ.items() if k not in withheld} if withheld else os.environ
