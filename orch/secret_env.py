"""Which environment variables hold orch's secrets, for this process.

The composition root (orch/app/wiring.py) sets them once from the configuration (the value
of each `*_env` key); adapters that start processes without a runner of their own (git)
read them here. A module of its own, light on purpose: setting the names must not import
the adapter (and its subprocess machinery) on the CLI's start-up path.
"""

from __future__ import annotations

from collections.abc import Collection

_names: frozenset[str] = frozenset()


def hide(names: Collection[str]) -> None:
    """Withhold the variables `names` from every process git starts in this process."""
    global _names
    _names = frozenset(names)


def hidden() -> frozenset[str]:
    return _names
