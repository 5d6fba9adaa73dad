"""`orch tick`: what a cron entry or a systemd timer runs every minute.

  0. drain the inbox (webhooks the relay stored but did not finish)
  1. reap (recover after a reboot, reclaim dead owners, kill what overstays)
  2. dependencies: repair readiness counts, catch cycles
  3. reconcile: advance what lost events left behind, with the reconciler's guards (a
     stage with no agent - merge, deploy, monitoring - has no grace period: a busy
     merge lease or a pending CI is simply tried again here); replay the tracker
  4. work: start detached runners for the jobs that can start now
  5. worktrees: remove this host's worktrees of finished tasks (with several hosts, the
     process that finished a task removed only the worktree on its own host)

It never waits for an agent. Two ticks at once are safe: each part that must not run
twice is taken under a `tick:<part>` lease, and a tick that finds it held by a live
tick skips that part.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from orch import log
from orch.engine import deps, jobs, lease_names, outbox, reaper, tasks
from orch.engine.runtime import Runtime
from orch.errors import ConfigError, OrchError


def _exclusive(rt: Runtime, part: str, fn: Callable[[], Any]) -> Any:
    name = lease_names.tick(part)
    ok, _ = rt.store.acquire_lease(name, owner=rt.owner, actor=rt.actor, purpose="tick", now=rt.now())
    if not ok:
        return {"skipped": "another tick holds it"}
    try:
        return fn()
    finally:
        rt.store.release_lease(name, owner=rt.owner, now=rt.now())


Progress = Callable[[str, int, int], None]


def _drain_inbox(rt: Runtime) -> dict[str, int]:
    # The parsers load only when there is something to parse: an idle tick stays lean.
    if not any(n for state, n in rt.store.inbox_count().items() if state in ("pending", "failed")):
        return {"done": 0, "failed": 0, "parked": 0}
    from orch.engine import inbox

    return inbox.drain(rt)


def sweep(rt: Runtime, *, progress: Progress | None = None) -> dict[str, Any]:
    """The reconciler's run (gate side and tracker side); one bad task never stops it."""
    from orch.engine.reconcile import reconcile

    report = reconcile(rt)
    if progress is not None:
        progress("reconcile", 0, 1)
    advanced = [t["did"] for t in report["tasks"] if "did" in t and "->" in t["did"]]
    for e in report["errors"]:
        log.error("reconcile_error", actor=rt.actor, error=e)
    out = {"advanced": advanced, "errors": report["errors"], "counters": report["counters"]}
    if "cycles" in report:
        out["cycles"] = report["cycles"]
    return out


def remove_finished_worktrees(rt: Runtime) -> list[str]:
    """Remove the worktrees under this host's workspace root whose task is finished and
    runs no job here; the keys of those removed. Each host has its own root (a shared
    store), so no other host's tick can do it for this one."""
    root = rt.config.workspace.root
    removed: list[str] = []
    candidates = [p for d in root.iterdir() if d.is_dir() for p in d.iterdir()] if root.is_dir() else []
    for path in candidates:
        task = rt.store.get_task(path.name)
        if (
            task is None
            or not rt.config.pipeline.is_terminal(task.stage)
            or path != rt.forge.worktree_path(task)
            or rt.store.jobs(task_id=task.id, states=("running",))
        ):
            continue
        try:
            rt.forge.remove_worktree(task)
        except OrchError as e:  # tried again on the next tick
            log.warning("worktree_not_removed", task=task.key, error=str(e), actor=rt.actor)
            continue
        removed.append(task.key)
    return removed


def tick(rt: Runtime, *, spawn: bool = True, progress: Progress | None = None) -> dict[str, Any]:
    started = rt.now()
    # A repository path that points nowhere is a configuration error, not a quiet tick.
    missing = tasks.missing_repos(rt.config)
    if missing:
        raise ConfigError("; ".join(missing))
    report: dict[str, Any] = {}
    report["inbox"] = _exclusive(rt, "inbox", lambda: _drain_inbox(rt))
    report["reap"] = _exclusive(rt, "reap", lambda: reaper.reap(rt).as_dict())
    if rt.config.deps.enabled:
        report["deps"] = _exclusive(
            rt,
            "deps",
            lambda: {
                "repaired": rt.store.recount_waiting(rt.config.deps.finished_stages, rt.now()),
                # The reconciler checks for cycles on its run; only without it does the tick.
                "cycles": [] if rt.config.reconcile.enabled else deps.check_cycles(rt),
            },
        )
    report["sweep"] = sweep(rt, progress=progress)
    if isinstance(report.get("deps"), dict) and "cycles" in report["deps"]:
        report["deps"]["cycles"] = report["sweep"].pop("cycles", report["deps"]["cycles"])
    report["work"] = {"started": jobs.spawn(rt)} if spawn else {"started": []}
    report["worktrees"] = {"removed": remove_finished_worktrees(rt)}
    report["notified"] = outbox.flush(rt)
    reap = report["reap"]
    log.info(
        "tick",
        actor=rt.actor,
        reaped=len(reap.get("reaped", [])),
        leases=len(reap.get("leases", [])),
        advanced=len(report["sweep"]["advanced"]),
        started=len(report["work"]["started"]),
        errors=len(report["sweep"]["errors"]),
        seconds=round(rt.now() - started, 3),
    )
    rt.store.set_fact(
        "last_tick",
        {
            "duration_s": round(rt.now() - started, 3),
            "by": rt.owner.label(),
            "advanced": len(report["sweep"]["advanced"]),
            "started": len(report["work"]["started"]),
        },
        now=rt.now(),
    )
    return report
