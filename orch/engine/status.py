"""What operators look at: the queue view, why one task is where it is, and the doctor.

All read-only (a `command` gate is run by `explain`, as by any gate evaluation, and must
itself be read-only). The JSON shapes here are documented in docs/cli.md; the tests pin
their keys.
"""

from __future__ import annotations

from typing import Any

from orch import identity
from orch.engine import effects, lease_names
from orch.engine.gates import evaluate
from orch.engine.runtime import Runtime
from orch.identity import is_alive
from orch.store import Job, Lease, Task

STALE_TICK_S = 300


def _lease(rt: Runtime, lease: Lease) -> dict[str, Any]:
    return {
        "name": lease.name,
        "actor": lease.actor,
        "purpose": lease.purpose,
        "owner": lease.owner.as_dict(),
        "age_s": round(max(0.0, rt.now() - lease.acquired_at), 1),
        "alive": is_alive(lease.owner),
    }


def _job(rt: Runtime, job: Job, keys: dict[int, str]) -> dict[str, Any]:
    now = rt.now()
    return {
        "id": job.id,
        "task": keys.get(job.task_id, f"#{job.task_id}"),
        "agent": job.agent,
        "stage": job.stage,
        "attempt": job.attempt,
        "state": job.state,
        "age_s": round(now - (job.started_at or job.queued_at), 1),
        "owner": job.owner.as_dict() if job.owner else None,
        "alive": is_alive(job.owner) if job.owner else None,
        "deadline_in_s": round(job.deadline - now, 1) if job.deadline else None,
        "starts_in_s": round(job.not_before - now, 1) if job.not_before > now else 0,
        "log": job.log_path,
    }


def queue(rt: Runtime) -> dict[str, Any]:
    """One glance: is it healthy, what is it doing, what is stuck."""
    store = rt.store
    tasks = store.list_tasks(limit=100_000)
    keys = {t.id: t.key for t in tasks}
    active = store.jobs(states=("queued", "running"))
    running = [_job(rt, j, keys) for j in active if j.state == "running"]
    queued, waiting = [], []
    for j in active:
        if j.state != "queued":
            continue
        row = _job(rt, j, keys)
        if j.ready or not rt.config.deps.enabled:
            queued.append(row)
        else:
            row["waits_on"] = [d.key for d in store.deps_of(j.task_id) if not _finished(rt, d)]
            waiting.append(row)
    held = store.list_leases()
    leases = [_lease(rt, lease) for lease in held]
    line = [
        {
            "task": t.key,
            "stage": t.stage,
            "waits_on": [
                {"task": d.key, "stage": d.stage} for d in store.deps_of(t.id) if not _finished(rt, d)
            ],
        }
        for t in store.waiting_tasks()
    ]
    blocked = [
        {"task": t.key, "stage": t.stage, "escalated": t.escalated, "reason": t.block_reason}
        for t in tasks
        if t.blocked and not rt.config.pipeline.is_terminal(t.stage)
    ]
    tick = store.fact("last_tick")
    counts = store.counts()
    problems = []
    if any(not lease["alive"] for lease in leases):
        problems.append("a lease is held by a dead owner (the next tick reclaims it)")
    if any(job["alive"] is False for job in running):
        problems.append("a running job's runner is dead (the next tick reaps it)")
    if tick is None:
        problems.append("no tick has run yet: install the timer (`orch install cron --print`)")
    elif rt.now() - tick[1] > STALE_TICK_S:
        problems.append(f"the last tick was {rt.now() - tick[1]:.0f}s ago")
    if counts["escalated"]:
        problems.append(f"{counts['escalated']} escalated task(s) wait for a person")
    return {
        "healthy": not problems,
        "problems": problems,
        "running": running,
        "queued": queued,
        "waiting": waiting,
        "leases": leases,
        "hosts": hosts(active, held, keys),
        "dependency_line": line,
        "blocked": blocked,
        "stages": counts["stages"],
        "jobs": counts["jobs"],
        "outbox_pending": counts["outbox_pending"],
        "inbox_pending": sum(n for state, n in store.inbox_count().items() if state in ("pending", "failed")),
        "inbox_parked": store.inbox_count().get("parked", 0),
        "last_tick": {"at": tick[1], "ago_s": round(rt.now() - tick[1], 1), **tick[0]} if tick else None,
        "max_concurrency": rt.config.work.max_concurrency,
        "reconcile": _reconcile_facts(rt),
    }


def hosts(active: list[Job], leases: list[Lease], keys: dict[int, str]) -> list[dict[str, Any]]:
    """Each host (its owners' `identity.host()`, which ORCH_HOST overrides) with the jobs
    its runners run and the leases its processes hold: this host first (always listed,
    even idle), the others by name. `alive` is None where it cannot be judged from here:
    a process of another host with no shared store's sessions to speak for it."""
    here = identity.host()
    by_host: dict[str, dict[str, Any]] = {here: {"host": here, "here": True, "jobs": [], "leases": []}}

    def entry(name: str) -> dict[str, Any]:
        return by_host.setdefault(name, {"host": name, "here": False, "jobs": [], "leases": []})

    for j in active:
        if j.state != "running" or j.owner is None:
            continue
        entry(j.owner.host)["jobs"].append(
            {
                "id": j.id,
                "task": keys.get(j.task_id, f"#{j.task_id}"),
                "agent": j.agent,
                "pid": j.owner.pid,
                "pgid": j.pgid,
                "alive": identity.judged_alive(j.owner),
            }
        )
    for lease in leases:
        entry(lease.owner.host)["leases"].append(
            {
                "name": lease.name,
                "actor": lease.actor,
                "purpose": lease.purpose,
                "pid": lease.owner.pid,
                "alive": identity.judged_alive(lease.owner),
            }
        )
    return [by_host[here], *(by_host[h] for h in sorted(by_host) if h != here)]


def _reconcile_facts(rt: Runtime) -> dict[str, Any] | None:
    last, total = rt.store.fact("reconcile_last"), rt.store.fact("reconcile_total")
    if last is None:
        return None
    return {
        "last": {**last[0], "at": last[1], "ago_s": round(rt.now() - last[1], 1)},
        "total": total[0] if total else {},
    }


def _finished(rt: Runtime, task: Task) -> bool:
    return task.stage in rt.config.deps.finished_stages or task.stage == "cancelled"


def explain(rt: Runtime, key: str) -> dict[str, Any]:
    """Why the task is where it is, and what happens next."""
    cfg, store = rt.config, rt.store
    task = rt.task(key)
    stage = cfg.pipeline.stages.get(task.stage)
    transitions = []
    for tr in cfg.pipeline.transitions_from(task.stage):
        gates = [evaluate(rt, task, cfg.gates[g]).as_dict() for g in tr.gates]
        transitions.append(
            {
                "to": tr.target,
                "green": all(g["passed"] for g in gates),
                "gates": gates,
                "effects": list(tr.effects),
                "retry": tr.retry,
            }
        )
    leases = [store.get_lease(lease_names.task(task.key)), store.get_lease(lease_names.merge(task.repo))]
    unfinished = [d for d in store.deps_of(task.id) if not _finished(rt, d)]
    job = store.active_job(task.id)
    last = store.jobs(task_id=task.id)[-1:] if not job else [job]
    history = store.history(task.id)[-8:]
    return {
        "task": task.as_dict(),
        "branch": rt.forge.branch(task),
        "head": rt.forge.branch_head(task)
        if task.stage in cfg.pipeline.stages and not cfg.pipeline.is_terminal(task.stage)
        else None,
        "max_retries": cfg.pipeline.max_retries,
        "transitions": transitions,
        "leases": [_lease(rt, lease) for lease in leases if lease],
        "effects_running": effects.running(rt, task),
        "waits_on": [{"task": d.key, "stage": d.stage} for d in unfinished],
        "job": {
            "id": last[0].id,
            "agent": last[0].agent,
            "state": last[0].state,
            "attempt": last[0].attempt,
            "reason": last[0].reason,
            "log": last[0].log_path,
        }
        if last
        else None,
        "recent": [r.as_dict() for r in history],
        "next": _next_actor(
            rt,
            task,
            stage.agent if stage else None,
            stage.human if stage else False,
            transitions,
            job,
            unfinished,
            leases,
        ),
    }


def _next_actor(
    rt: Runtime,
    task: Task,
    agent: str | None,
    human: bool,
    transitions: list[dict[str, Any]],
    job: Job | None,
    unfinished: list[Task],
    leases: list[Lease | None],
) -> str:
    cfg = rt.config
    if cfg.pipeline.is_terminal(task.stage):
        return f"nobody: the task is {task.stage}"
    if task.blocked and task.escalated and agent and " gave up after " in (task.block_reason or ""):
        return (
            f"a person: it is escalated ({task.block_reason}); "
            f"`orch logs {task.key}`, then `orch retry {task.key}`"
        )
    if task.blocked:
        what = "escalated" if task.escalated else "blocked"
        return f"a person: it is {what} ({task.block_reason}); `orch unblock {task.key}` after a look"
    if unfinished and cfg.deps.enabled:
        return f"nobody yet: it waits for {', '.join(d.key for d in unfinished)} to be merged"
    for e in effects.running(rt, task):
        if not e["owner_alive"]:  # its owner died; the command it started still runs
            return f"nobody yet: effect {e['effect']} still runs (pid {e['pid']}); then the next tick probes"
    held = [lease for lease in leases if lease and is_alive(lease.owner)]
    if held:
        return f"{held[0].actor} (holds {held[0].name}); then the next tick"
    if job is not None and job.state == "running":
        return f"the running {job.agent} job {job.id}; when it ends, the task advances if its gates are green"
    if job is not None:
        return f"the next tick: it starts the queued {job.agent} job {job.id}"
    green = [t for t in transitions if t["green"]]
    if green:
        return f"the next tick (or `orch advance {task.key}`): -> {green[0]['to']} is green"
    red = [g for t in transitions for g in t["gates"] if not g["passed"]]
    if human and any("person" in g["reason"] for g in red):
        return f"a person: `orch approve {task.key}` (or reject)"
    if agent and any("job" in g["evidence"] and g["evidence"].get("state") != "succeeded" for g in red):
        return (
            f"a person: the {agent} job ended without making the gates green; see `orch history {task.key}`"
        )
    if any(g["gate"].startswith("ci") or "ci " in g["reason"] for g in red):
        return "CI: a result for the current head (`orch gate report ci`), then the next tick"
    if agent:
        return (
            f"a person: the {agent} job ended without making the gates green; see `orch history {task.key}`"
        )
    return f"whatever turns these gates green: {', '.join(g['gate'] for g in red)}"


def overview(rt: Runtime, *, limit: int = 20) -> dict[str, Any]:
    """`orch status`: what runs, what waits on a person, what is broken. One glance, so
    each list is capped at `limit` rows and says how many more there are."""
    view = queue(rt)
    cfg = rt.config
    people: list[dict[str, Any]] = []
    active = {j["task"] for j in (*view["running"], *view["queued"], *view["waiting"])}
    for stage in cfg.pipeline.stages.values():
        if not stage.human:
            continue
        for t in rt.store.list_tasks(stage=stage.name, limit=limit + 1):
            if t.key in active or t.blocked:
                continue
            v = rt.store.latest_verdict(t.id, t.version)
            if v is None:
                needs = f"orch approve {t.key} (or reject)"
                people.append({"task": t.key, "stage": t.stage, "needs": needs, "why": t.title})
    for b in view["blocked"]:
        needs = (
            f"orch retry {b['task']}"
            if " gave up after " in (b["reason"] or "")
            else f"orch unblock {b['task']}"
        )
        people.append({"task": b["task"], "stage": b["stage"], "needs": needs, "why": b["reason"]})
    broken = list(view["problems"])
    failed = rt.store.jobs(states=("failed", "timed_out", "stalled", "reaped"))
    recent = [j for j in failed if j.ended_at and rt.now() - j.ended_at < 3600]
    keys = {t.id: t.key for t in rt.store.list_tasks(limit=100_000)} if recent else {}
    return {
        "healthy": view["healthy"],
        "running": view["running"][:limit],
        "queued": len(view["queued"]),
        "waiting_on_deps": len(view["waiting"]),
        "people": people[:limit],
        "people_more": max(0, len(people) - limit),
        "broken": broken,
        "failed_last_hour": [
            {
                "job": j.id,
                "task": keys.get(j.task_id, f"#{j.task_id}"),
                "agent": j.agent,
                "state": j.state,
                "reason": j.reason,
                "ago_s": round(rt.now() - (j.ended_at or 0), 1),
            }
            for j in recent[-limit:]
        ],
        "stages": view["stages"],
        "max_concurrency": view["max_concurrency"],
        "last_tick": view["last_tick"],
    }


def job_logs(rt: Runtime, key: str) -> list[dict[str, Any]]:
    """The task's jobs, oldest first, each with its log file (None if it never started)."""
    task = rt.task(key)
    return [
        {
            "job": j.id,
            "agent": j.agent,
            "stage": j.stage,
            "attempt": j.attempt,
            "state": j.state,
            "reason": j.reason,
            "log": j.log_path,
            # A log is a file on the host that ran the job (a shared store spans hosts).
            "host": j.owner.host if j.owner else None,
        }
        for j in rt.store.jobs(task_id=task.id)
    ]
