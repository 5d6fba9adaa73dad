"""Task dependencies: B waits on A until A is finished (its work is merged into main).

Readiness is kept as data, in the same transactions that change it: a task's
`waiting_on` counts its unfinished dependencies and its queued jobs carry `ready`, so a
claim never rediscovers the graph. A cycle is refused when declared; one that appears
anyway (written by a tracker sync, or by hand) is caught by the tick, whose check blocks
every task in it and raises one alert per cycle. Kill-switch `deps.enabled`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from orch import log
from orch.engine.runtime import Runtime
from orch.errors import UsageError
from orch.store import Audit, Task


def finished(rt: Runtime, task: Task) -> bool:
    return task.stage in rt.config.deps.finished_stages or task.stage == "cancelled"


def declare(rt: Runtime, key: str, on: str) -> bool:
    """Make `key` wait on `on`; refuses a cycle, printing it. False if unfinished already declared."""
    task, dep = rt.task(key), rt.task(on)
    if task.id == dep.id:
        raise UsageError(f"{key} cannot wait on itself")
    unfinished = not finished(rt, dep)
    cycle = rt.store.add_dep(
        task.id,
        dep.id,
        unfinished=unfinished,
        now=rt.now(),
        audit=Audit(task.id, rt.actor, "dep_declared", {"on": dep.key, "finished": not unfinished}),
        notification=(f"waiting:{task.key}:{dep.key}", f"{task.key} waits for {dep.key} ({dep.stage})"),
    )
    if cycle is not None:
        names = [_key(rt, i) for i in cycle]
        raise UsageError(f"refused: {key} -> {on} closes a cycle: {' -> '.join([key, *names])}")
    return True


def remove(rt: Runtime, key: str, on: str) -> bool:
    task, dep = rt.task(key), rt.task(on)
    return rt.store.remove_dep(
        task.id,
        dep.id,
        unfinished=not finished(rt, dep),
        now=rt.now(),
        audit=Audit(task.id, rt.actor, "dep_removed", {"on": dep.key}),
    )


def _key(rt: Runtime, task_id: int) -> str:
    t = rt.store.get_task_by_id(task_id)
    return t.key if t else f"#{task_id}"


def show(rt: Runtime, key: str | None = None) -> list[dict[str, Any]]:
    """Who waits on whom and why: one row per task with dependencies."""
    tasks = [rt.task(key)] if key else [t for t in rt.store.list_tasks(limit=100_000)]
    rows = []
    for t in tasks:
        deps = rt.store.deps_of(t.id)
        if not deps and key is None:
            continue
        rows.append(
            {
                "task": t.key,
                "stage": t.stage,
                "waiting_on": t.waiting_on,
                "deps": [
                    {
                        "task": d.key,
                        "stage": d.stage,
                        "finished": finished(rt, d),
                        "why": "merged"
                        if d.stage in rt.config.deps.finished_stages
                        else ("cancelled: ignored" if d.stage == "cancelled" else f"at {d.stage}"),
                    }
                    for d in deps
                ],
                "dependents": [d.key for d in rt.store.dependents_of(t.id)],
            }
        )
    return rows


def find_cycles(edges: list[tuple[int, int]]) -> list[list[int]]:
    """Every cycle's nodes (strongly connected components of size > 1, or self-loops)."""
    graph: dict[int, list[int]] = {}
    for a, b in edges:
        graph.setdefault(a, []).append(b)
        graph.setdefault(b, [])
    index: dict[int, int] = {}
    low: dict[int, int] = {}
    on_stack: set[int] = set()
    stack: list[int] = []
    out: list[list[int]] = []
    counter = 0
    for root in graph:
        if root in index:
            continue
        # Iterative Tarjan: a deep chain must not hit Python's recursion limit.
        work = [(root, 0)]
        while work:
            node, i = work.pop()
            if i == 0:
                index[node] = low[node] = counter
                counter += 1
                stack.append(node)
                on_stack.add(node)
            children = graph[node]
            if i < len(children):
                work.append((node, i + 1))
                child = children[i]
                if child not in index:
                    work.append((child, 0))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            if low[node] == index[node]:
                comp = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.append(w)
                    if w == node:
                        break
                if len(comp) > 1 or node in graph[node]:
                    out.append(sorted(comp))
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
    return out


def check_cycles(rt: Runtime) -> list[list[str]]:
    """The tick's backstop: block the tasks of every cycle, one alert per cycle."""
    if not rt.config.deps.enabled:
        return []
    found = []
    for cycle in find_cycles(rt.store.unfinished_edges(rt.config.deps.finished_stages)):
        keys = [_key(rt, i) for i in cycle]
        found.append(keys)
        reason = f"dependency cycle: {' -> '.join([*keys, keys[0]])}"
        log.warning("dependency_cycle", tasks=",".join(keys), actor=rt.actor)
        for task_id in cycle:
            task = rt.store.get_task_by_id(task_id)
            if task is None or task.blocked or rt.config.pipeline.is_terminal(task.stage):
                continue
            rt.store.set_blocked(
                task.id,
                blocked=True,
                reason=reason,
                now=rt.now(),
                audit=Audit(task.id, rt.actor, "blocked", {"reason": reason}),
            )
        rt.store.notify(
            f"cycle:{','.join(keys)}", None, f"ALERT {reason}: blocked {', '.join(keys)}", now=rt.now()
        )
    return found


def ingest(rt: Runtime, *, progress: Callable[[str, int, int], None] | None = None) -> dict[str, Any]:
    """Make the tracker's "blocked by" relations orch dependencies (one request per linked,
    unfinished task). A blocker with no task is reported and ignored; a cycle is refused
    and reported; one failing item never stops the run."""
    tracker = rt.external
    if tracker is None:
        raise UsageError('the configured tracker has no relations to ingest ([tracker] kind = "local")')
    todo = [
        t
        for t in rt.store.list_tasks(limit=100_000)
        if t.tracker_ref and not finished(rt, t) and not rt.config.pipeline.is_terminal(t.stage)
    ]
    report: dict[str, Any] = {"declared": [], "known": 0, "unknown": [], "refused": [], "errors": []}
    for n, task in enumerate(todo):
        if progress is not None:
            progress("ingest", n, len(todo))
        project = tracker.project_of_task(task)
        if project is None or task.tracker_ref is None:
            continue
        try:
            blockers = tracker.relations(project, task.tracker_ref)
        except Exception as e:
            report["errors"].append(f"{task.key}: {e}")
            continue
        have = {d.id for d in rt.store.deps_of(task.id)}
        for ref in blockers:
            blocker = rt.store.task_for_ref(ref)
            if blocker is None:
                report["unknown"].append({"task": task.key, "blocked_by_item": ref})
                continue
            if blocker.id in have:
                report["known"] += 1
                continue
            try:
                declare(rt, task.key, blocker.key)
                report["declared"].append(f"{task.key} -> {blocker.key}")
            except UsageError as e:
                report["refused"].append(str(e))
    log.info(
        "deps_ingested",
        declared=len(report["declared"]),
        unknown=len(report["unknown"]),
        refused=len(report["refused"]),
        errors=len(report["errors"]),
    )
    return report
