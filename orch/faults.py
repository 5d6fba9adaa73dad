"""Crash injection for tests: `ORCH_FAULT=<point>` makes the process SIGKILL itself there.

Only the points named in POINTS exist; the variable is read once per process. The effect
points take a qualifier, `after_effect_started:merge`, to pick one effect of several.
`before_effect_done` is the window the effect probes exist for: the effect has run, the
ledger does not know it yet. SIGKILL
rather than an exception, because the point is to prove recovery from a death that runs
no `finally` block, closes no transaction and releases no lease.
"""

from __future__ import annotations

import os
import signal

POINTS = frozenset(
    {
        "after_lease",
        "after_effect_started",
        "before_effect_done",
        "after_effect_done",
        "before_cas",
        "after_cas",
        "before_release",
        "after_notify_sent",
    }
)

_armed = os.environ.get("ORCH_FAULT", "")


def point(name: str, detail: str | None = None) -> None:
    """Die here if ORCH_FAULT names this point (`name`, or `name:detail` for one effect)."""
    if _armed and (_armed == name or (detail is not None and _armed == f"{name}:{detail}")):
        os.kill(os.getpid(), signal.SIGKILL)
