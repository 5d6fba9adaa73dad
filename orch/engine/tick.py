"""`orch tick`: what a cron entry or a systemd timer runs every minute.

  0. drain the inbox (webhooks the relay stored but did not finish)
  1. reap (recover after a reboot, reclaim dead owners, kill what overstays)
  2. dependencies: repair readiness counts, catch cycles
  3. sweep: advance tasks in stages that wait on no agent and no person (merge, deploy,
     monitoring) - a busy merge lease or a red CI is simply tried again here
  4. work: start detached runners for the jobs that can start now

It never waits for an agent. Two ticks at once are safe: each part that must not run
twice is taken under a `tick:<part>` lease, and a tick that finds it held by a live
tick skips that part.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from orch import log
from orch.engine import deps, jobs, outbox, reaper
from orch.engine.advance import advance
from orch.engine.runtime import Runtime
from orch.errors import OrchError


def _exclusive(rt: Runtime, part: str, fn: Callable[[], Any]) -> Any:
    name = f"tick:{part}"
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


def sweep(rt: Runtime, *, limit: int = 500, progress: Progress | None = None) -> dict[str, Any]:
    """Advance tasks whose next step needs no agent and no person; one bad task never stops it."""
    cfg = rt.config
    auto = tuple(s.name for s in cfg.stages.values() if not s.agent and not s.human and not s.terminal)
    moved, errors = [], []
    todo = rt.store.idle_tasks(auto, limit=limit)
    for done, task in enumerate(todo):
        if progress is not None:
            progress("sweep", done, len(todo))
        try:
            result = advance(rt, task.key, expect=task.stage)
        except OrchError as e:
            errors.append(f"{task.key}: {e}")
            log.error("sweep_failed", task=task.key, actor=rt.actor, error=str(e))
            continue
        if result.outcome == "advanced":
            moved.append(f"{task.key}: {result.stage} -> {result.to_stage}")
    return {"advanced": moved, "errors": errors}


def tick(rt: Runtime, *, spawn: bool = True, progress: Progress | None = None) -> dict[str, Any]:
    started = rt.now()
    report: dict[str, Any] = {}
    report["inbox"] = _exclusive(rt, "inbox", lambda: _drain_inbox(rt))
    report["reap"] = _exclusive(rt, "reap", lambda: reaper.reap(rt).as_dict())
    if rt.config.deps_enabled:
        report["deps"] = _exclusive(
            rt,
            "deps",
            lambda: {
                "repaired": rt.store.recount_waiting(rt.config.finished_stages, rt.now()),
                "cycles": deps.check_cycles(rt),
            },
        )
    report["sweep"] = sweep(rt, progress=progress)
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
