"""Crash injection for tests: `ORCH_FAULT=<point>` makes the process SIGKILL itself there.

Only the points named in POINTS exist; the variable is read once per process. SIGKILL
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
        "after_effect_done",
        "before_cas",
        "after_cas",
        "before_release",
    }
)

_armed = os.environ.get("ORCH_FAULT", "")


def point(name: str) -> None:
    """Die here if ORCH_FAULT names this point."""
    if _armed and _armed == name:
        os.kill(os.getpid(), signal.SIGKILL)
