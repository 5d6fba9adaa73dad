"""`orch tick`: what a cron entry or a systemd timer runs every minute.

  0. drain the inbox (webhooks the relay stored but did not finish)
  1. reap (recover after a reboot, reclaim dead owners, kill what overstays)
  2. dependencies: repair readiness counts, catch cycles
  3. reconcile: advance what lost events left behind, with the reconciler's guards (a
     stage with no agent - merge, deploy, monitoring - has no grace period: a busy
     merge lease or a pending CI is simply tried again here); replay the tracker
  4. work: start detached runners for the jobs that can start now

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
from orch.errors import ConfigError


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
