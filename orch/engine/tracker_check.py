"""The tracker's word before an irreversible effect.

A person who cancels or pauses a work item decides for the task, and a lost webhook must
not turn that decision into a merge or a deploy. So, under the task's lease and just
before the effects of a transition that has an irreversible one (merge, deploy), the
item of a tracker-backed task is read (one request, counted in the run's budget):

    cancelled, gone (404, archived)   the task is cancelled; no effect runs
    blocked, needs_input, done        the task is blocked (by the tracker: moving the item
                                      back to To Analyse / In Progress lifts it); no effect
    anything else                     the transition goes on
    unreadable (5xx, budget spent)    busy: try later; never a guess either way

A task not made from a tracker item, the local tracker, a transition with no
irreversible effect and `[tracker] check_before_effects = false` cost nothing.
"""

from __future__ import annotations

from typing import NamedTuple

from orch import log
from orch.config import Transition
from orch.engine import tasks
from orch.engine.runtime import Runtime
from orch.errors import IntegrationError, RetryLater
from orch.store import Task


class Stop(NamedTuple):
    """Why the transition must not run its effects: `outcome` as advance reports it."""

    outcome: str  # busy | not_ready | nothing
    message: str


def before_effects(rt: Runtime, task: Task, tr: Transition) -> Stop | None:
    """None: go on. Else the transition stops before its first effect."""
    cfg = rt.config
    tracker = rt.external
    if not cfg.tracker.check_before_effects or tracker is None or task.tracker_ref is None:
        return None
    if not any(cfg.effects[e].irreversible for e in tr.effects):
        return None
    try:
        status = tracker.item_status(task)
    except (IntegrationError, RetryLater) as e:
        return Stop("busy", f"the tracker item could not be read before {tr.name}: {e}")
    if status is None:
        return None
    if status in ("cancelled", "gone"):
        why = "cancelled in the tracker" if status == "cancelled" else "gone from the tracker"
        tasks.cancel(rt, task.key, f"{why} (seen before {tr.name})")
        log.warning("tracker_stopped_effects", task=task.key, transition=tr.name, status=status)
        return Stop("nothing", f"{why}: cancelled before {tr.name}")
    if status in ("blocked", "needs_input", "done"):
        why = f"{status.replace('_', ' ')} in the tracker before {tr.name}"
        tasks.block(rt, task.key, why, by="tracker")
        log.warning("tracker_stopped_effects", task=task.key, transition=tr.name, status=status)
        return Stop("not_ready", f"blocked: {why}")
    return None
