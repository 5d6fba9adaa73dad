"""Lease names, built and parsed here and nowhere else.

A lease is a row keyed by its name (`Store.acquire_lease`); the name says what it guards:

  task:KEY      the transition lease of one task (advance, cancel, the reaper, operators)
  merge:REPO    merges into one repository go one after another (rebase, CI, merge)
  tick:PART     one exclusive part of `orch tick` (reap, reconcile, ...)

`effect:KEY:EFFECT` is no lease: it is how `orch lease show` names an effect command
that outlived its owner, because that command is what holds the task up.
"""

from __future__ import annotations

TASK = "task:"
MERGE = "merge:"
TICK = "tick:"


def task(key: str) -> str:
    return f"{TASK}{key}"


def merge(repo: str) -> str:
    return f"{MERGE}{repo}"


def tick(part: str) -> str:
    return f"{TICK}{part}"


def orphan_effect(key: str, effect: str) -> str:
    """The name `orch lease show` gives an effect command whose owner is gone."""
    return f"effect:{key}:{effect}"


def task_key(name: str) -> str | None:
    """The task a lease belongs to: KEY for `task:KEY`, None for any other lease."""
    return name.removeprefix(TASK) if name.startswith(TASK) else None
