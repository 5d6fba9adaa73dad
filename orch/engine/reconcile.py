"""The reconciler: level-triggered, it looks at what is, not at what happened, and moves
stuck tasks through the same gates and handlers the webhooks use. It replays what lost
webhooks missed (a 502 during a redeploy, a tracker that gave up retrying, a status
event with no branch).

Gate side, for each non-terminal task with no active job, untouched for longer than its
stage's grace period; guards in this order, each counted:

    human      a person's gate (analysis) is never passed automatically
    terminal   done/cancelled in orch, or completed/cancelled (by group) in the tracker
    escalated  retries at the maximum: a person must look (no network needed)
    blocked    blocked in orch, or blocked / needs-input in the tracker; a tracker
               that cannot be read means skip (conservative)
    lease      a live transition lease defers the task to the next run
    deps       an unfinished dependency skips it

then the gates are evaluated read-only: green -> advance (the only write), red ->
nothing at all. The tracker is read once per project per run (its listing), never
once per task.

Tracker side: each project's work items are listed (paginated) and To Analyse / In
Progress / Approved / Rejected / Cancelled (by group) replayed through the webhook
handlers, so a lost Cancelled webhook still stops the task; Done (by group) is left
alone. A task blocked in orch is never resumed by what the tracker shows (only a pause
made in the tracker is lifted there). A live task whose item left a listing that was
read (Plane sends no webhook for a delete or an archive) is confirmed with one GET of
the item: 404 or archived cancels it, an error answer changes nothing.

Messages are only the ones a real change queues (keyed by the change),
so a run every minute repeats nothing. Counters per run and in total live in the DB.
"""

from __future__ import annotations

import time
from typing import Any, NamedTuple

from orch import log
from orch.config import Transition
from orch.engine import advance as advance_mod
from orch.engine import deps, lease_names, tasks, tracker_events
from orch.engine.gates import GateResult, evaluate_until_red
from orch.engine.runtime import Runtime
from orch.errors import RetryLater
from orch.identity import is_alive
from orch.ports import Item, Project
from orch.store import Task

WRITE_BACK_RESERVE = 10  # requests of a run's budget the listing leaves for write-backs
GUARDS = ("human", "terminal", "escalated", "blocked", "tracker_unreadable", "lease", "deps")


class Listed(NamedTuple):
    """A tracker item as this run's listing showed it, and the project it was listed in."""

    project: Project
    item: Item


Listing = dict[str, Listed]  # item id -> what the listing showed


def _counters() -> dict[str, Any]:
    return {
        "advanced": 0,
        "would_advance": 0,
        "red": 0,
        "skipped": dict.fromkeys(GUARDS, 0),
        "deduped": 0,
        "deferred_lease": 0,
        "replayed": 0,
        "gone": 0,
        "errors": 0,
    }


def reconcile(rt: Runtime, *, dry_run: bool = False) -> dict[str, Any]:
    started = time.monotonic()
    cfg = rt.config
    report: dict[str, Any] = {"dry_run": dry_run, "counters": _counters(), "tasks": [], "errors": []}
    if not cfg.reconcile.enabled:
        report["disabled"] = "reconcile.enabled = false"
        return report
    listing, unreadable = _tracker_listing(rt, report)
    if cfg.reconcile.tracker_enabled and listing is not None and not dry_run:
        _tracker_side(rt, listing, report)
        if cfg.reconcile.gone_enabled:
            _gone(rt, listing, unreadable, report)
    _gate_side(rt, listing, unreadable, report, dry_run)
    if not dry_run and cfg.deps.enabled:
        report["cycles"] = deps.check_cycles(rt)
    report["seconds"] = round(time.monotonic() - started, 4)
    if not dry_run:
        _remember(rt, report)
    return report


def _tracker_listing(rt: Runtime, report: dict[str, Any]) -> tuple[Listing | None, set[str]]:
    """The items of every project, one listing per project (None with the local tracker);
    and the projects whose listing failed (their tasks are skipped, conservatively)."""
    tracker = rt.external
    if tracker is None:
        return None, set()
    out: Listing = {}
    failed: set[str] = set()
    projects = tracker.projects()
    # The request budget may not cover every project in one run: start where the last run
    # stopped, so that every project gets its turn (its tasks wait, conservatively).
    cursor = rt.store.fact("reconcile_cursor")
    start = int(cursor[0]) % len(projects) if cursor and projects else 0
    order = projects[start:] + projects[:start]
    for n, project in enumerate(order):
        left = tracker.budget_left()
        try:
            if left is not None and left < WRITE_BACK_RESERVE and n > 0:
                # Keep some of the run's budget for writing stages back to the tracker.
                raise RetryLater(f"{left} requests left, kept for write-backs", delay=60)
            items = tracker.items(project)
        except RetryLater as e:  # the run's request budget is spent: the rest next time
            rest = order[n:]
            failed.update(p.key for p in rest)
            report["deferred_projects"] = [p.key for p in rest]
            rt.store.set_fact("reconcile_cursor", (start + n) % len(projects), now=rt.now())
            log.info("reconcile_budget_spent", next_project=project.key, reason=str(e))
            break
        except Exception as e:  # one project failing never stops the run
            failed.add(project.key)
            report["counters"]["errors"] += 1
            report["errors"].append(f"project {project.key}: {e}")
            log.warning("reconcile_tracker_failed", project=project.key, error=str(e))
            continue
        for item in items:
            out[item.id] = Listed(project, item)
    else:
        if projects:
            rt.store.set_fact("reconcile_cursor", start, now=rt.now())
    return out, failed


def _tracker_side(rt: Runtime, listing: Listing, report: dict[str, Any]) -> None:
    _replay(rt, listing, report)
    _write_back(rt, listing, report)


def _write_back(rt: Runtime, listing: Listing, report: dict[str, Any]) -> None:
    """Show each linked task's stage in the tracker again: a write-back that failed (the
    budget was spent, Plane was down) is not lost. The listing just said where each item
    is, so an item in place costs no request; a person's pause (Blocked, Needs Input) is
    never overwritten."""
    tracker = rt.external
    assert tracker is not None  # a listing comes from it
    for item_id, (project, item) in listing.items():
        logical = item.status
        if item.terminal or logical in ("blocked", "needs_input"):
            continue
        task = rt.store.task_for_ref(item_id)
        if task is None or task.blocked or rt.config.pipeline.is_terminal(task.stage):
            continue
        stage = rt.config.pipeline.stages.get(task.stage)
        if stage is not None and stage.human and logical in ("approved", "rejected"):
            continue  # a person's verdict at a person's gate stays where they put it
        try:
            if tracker.in_place(project, item, task.stage):
                continue  # in place: nothing to write
            rt.tracker.stage_changed(task, task.stage)
        except RetryLater:
            report["write_back"] = "deferred: the request budget is spent"
            return
        except Exception as e:  # one item failing never stops the run
            report["counters"]["errors"] += 1
            report["errors"].append(f"write-back {task.key}: {e}")


def _gone(rt: Runtime, listing: Listing, unreadable: set[str], report: dict[str, Any]) -> None:
    """Plane sends no webhook when an item is deleted or archived, and its listing drops
    such items (drafts and triage too): a live task whose item is missing from a listing
    that was read is asked about once (one GET). Only a 404, `archived_at` or a Cancelled
    state cancels it; an error answer never does (the next run asks again)."""
    tracker = rt.external
    assert tracker is not None  # a listing comes from it
    for task in rt.store.list_tasks(limit=1_000_000):
        if (
            task.tracker_ref is None
            or task.tracker_ref in listing
            or rt.config.pipeline.is_terminal(task.stage)
        ):
            continue
        project = tracker.project_of_task(task)
        if project is None or project.key in unreadable:
            continue  # not listed this run: absence says nothing
        try:
            status = tracker.item_status(task)
        except RetryLater:
            report["gone_check"] = "deferred: the request budget is spent"
            return
        except Exception as e:  # a 5xx, a timeout: the item may well be there
            report["counters"]["errors"] += 1
            report["errors"].append(f"{task.key}: its work item left the listing and could not be read: {e}")
            continue
        if status not in ("gone", "cancelled"):
            continue  # there after all (it moved between pages): the next listing shows it
        why = "deleted or archived in the tracker" if status == "gone" else "cancelled in the tracker"
        try:
            tasks.cancel(rt, task.key, why)
        except Exception as e:  # one task failing never stops the run
            report["counters"]["errors"] += 1
            report["errors"].append(f"{task.key}: {e}")
            continue
        report["counters"]["gone"] += 1
        report["tasks"].append({"task": task.key, "did": f"cancelled: {why}"})
        log.info("reconcile_item_gone", task=task.key, status=status)


def _replay(rt: Runtime, listing: Listing, report: dict[str, Any]) -> None:
    tracker = rt.external
    assert tracker is not None  # a listing comes from it
    for item_id, (project, item) in listing.items():
        logical = item.status
        if item.terminal and logical != "cancelled":
            continue  # done in the tracker: never replayed (a Done aliasing Approved included)
        if logical not in ("to_analyse", "in_progress", "approved", "rejected", "cancelled"):
            continue
        if logical == "cancelled" and _settled(rt, item_id):
            continue
        try:
            result = tracker_events.on_item_state(
                rt,
                tracker=tracker,
                project=project,
                item_id=item_id,
                sequence_id=item.sequence,
                title=item.title,
                logical=logical,
            )
        except Exception as e:
            report["counters"]["errors"] += 1
            report["errors"].append(f"item {item_id}: {e}")
            continue
        if not result.startswith("ignored") and "already" not in result:
            report["counters"]["replayed"] += 1
            report["tasks"].append({"item": item_id, "tracker": logical, "did": result})
        else:
            report["counters"]["deduped"] += 1


def _settled(rt: Runtime, item_id: str) -> bool:
    """No live task for this item: nothing to cancel (and no message, no count)."""
    task = rt.store.task_for_ref(item_id)
    return task is None or rt.config.pipeline.is_terminal(task.stage)


def _gate_side(
    rt: Runtime, listing: Listing | None, unreadable: set[str], report: dict[str, Any], dry_run: bool
) -> None:
    """Look first (guards and gates, read-only, against one forge snapshot), then move:
    each green task goes through `advance`, which takes the lease and checks again."""
    cfg, c = rt.config, report["counters"]
    green: list[tuple[Task, Transition, list[GateResult]]] = []
    with rt.forge.snapshot():
        for stage in cfg.pipeline.stages.values():
            if stage.terminal:
                continue
            if stage.human and not dry_run:
                # The first guard skips every one of them: count them, do not load them
                # (9,000 tasks waiting on people cost the idle tick ~100 ms to load).
                since = rt.now() - cfg.grace(stage.name)
                c["skipped"]["human"] += rt.store.quiet_count(stage.name, older_than=since)
                continue
            for task in rt.store.quiet_tasks((stage.name,), older_than=rt.now() - cfg.grace(stage.name)):
                try:
                    why = _guard(rt, task, stage.human, listing, unreadable)
                    if why is not None:
                        if why == "lease":
                            c["deferred_lease"] += 1
                        else:
                            c["skipped"][why] += 1
                        if dry_run:
                            report["tasks"].append({"task": task.key, "stage": task.stage, "skip": why})
                        continue
                    found = _green(rt, task)
                except Exception as e:  # one task failing never stops the run
                    c["errors"] += 1
                    report["errors"].append(f"{task.key}: {e}")
                    log.error("reconcile_task_failed", task=task.key, error=str(e))
                    continue
                if found is None:
                    c["red"] += 1
                    if dry_run:
                        report["tasks"].append({"task": task.key, "stage": task.stage, "red": True})
                else:
                    green.append((task, *found))
    for task, tr, results in green:
        if dry_run:
            c["would_advance"] += 1
            report["tasks"].append(
                {
                    "task": task.key,
                    "stage": task.stage,
                    "would": f"-> {tr.target}",
                    "gates": [r.name for r in results],
                }
            )
            continue
        try:
            result = advance_mod.advance(rt, task.key, expect=task.stage)
        except Exception as e:  # one task failing never stops the run
            c["errors"] += 1
            report["errors"].append(f"{task.key}: {e}")
            continue
        if result.outcome == "advanced":
            c["advanced"] += 1
            report["tasks"].append({"task": task.key, "did": f"{result.stage} -> {result.to_stage}"})
        elif result.outcome == "busy":
            c["deferred_lease"] += 1


def _guard(rt: Runtime, task: Task, human: bool, listing: Listing | None, unreadable: set[str]) -> str | None:
    cfg = rt.config
    if human:
        return "human"
    tracked = listing.get(task.tracker_ref) if listing is not None and task.tracker_ref else None
    if tracked is not None and tracked.item.terminal:
        return "terminal"
    if task.escalated:
        return "escalated"
    if task.blocked:
        return "blocked"
    if (
        cfg.reconcile.skip_blocked_enabled
        and task.tracker_ref
        and rt.external is not None
        and listing is not None
    ):
        project = rt.external.project_of_task(task)
        if project is None or project.key in unreadable:
            return "tracker_unreadable"
        if tracked is not None and tracked.item.status in ("blocked", "needs_input"):
            return "blocked"
    lease = rt.store.get_lease(lease_names.task(task.key))
    if lease is not None and is_alive(lease.owner):
        return "lease"
    if cfg.deps.enabled and task.waiting_on > 0:
        return "deps"
    return None


def _green(rt: Runtime, task: Task) -> tuple[Transition, list[GateResult]] | None:
    """The first transition whose gates are green, read against the forge snapshot."""
    for tr in rt.config.pipeline.transitions_from(task.stage):
        results = evaluate_until_red(rt, task, tr.gates)
        if all(r.passed for r in results):
            return tr, results
    return None


def _remember(rt: Runtime, report: dict[str, Any]) -> None:
    total_row = rt.store.fact("reconcile_total")
    total: dict[str, Any] = total_row[0] if total_row else {"runs": 0}
    total["runs"] = total.get("runs", 0) + 1
    for k, v in report["counters"].items():
        if isinstance(v, dict):
            sub = total.setdefault(k, {})
            for kk, vv in v.items():
                sub[kk] = sub.get(kk, 0) + vv
        else:
            total[k] = total.get(k, 0) + v
    rt.store.set_fact("reconcile_total", total, now=rt.now())
    rt.store.set_fact(
        "reconcile_last",
        {"counters": report["counters"], "seconds": report["seconds"], "errors": report["errors"][:20]},
        now=rt.now(),
    )
    c = report["counters"]
    log.info(
        "reconcile",
        actor=rt.actor,
        advanced=c["advanced"],
        replayed=c["replayed"],
        red=c["red"],
        deduped=c["deduped"],
        deferred=c["deferred_lease"],
        errors=c["errors"],
        seconds=report["seconds"],
    )
