"""Events from outside that may turn gates green: a push, a CI result.

An event never moves a task by itself: it records what it says (a CI status bound to
its sha) and then asks `advance` for each task it concerns, so it goes through the
same gates, lease, ledger and CAS as everything else. A push needs no record: CI
results and verdicts are bound to the sha they were given for, so a new head makes
the old ones stop counting by itself.
"""

from __future__ import annotations

from typing import Any

from orch.engine import advance as advance_mod
from orch.engine.runtime import Runtime
from orch.errors import OrchError, UsageError
from orch.store import Task

BRANCH_PREFIX = "refs/heads/"


def tasks_on_ref(rt: Runtime, repo: str, ref: str) -> list[Task]:
    """The non-terminal tasks of `repo` whose branch is `ref` (refs/heads/orch/<key>)."""
    branch = ref[len(BRANCH_PREFIX) :] if ref.startswith(BRANCH_PREFIX) else ref
    return [
        t
        for t in rt.store.list_tasks(limit=100_000)
        if t.repo == repo and not rt.config.pipeline.is_terminal(t.stage) and rt.forge.branch(t) == branch
    ]


def push(rt: Runtime, *, repo: str, ref: str, sha: str | None = None) -> list[dict[str, Any]]:
    """A branch moved: advance the tasks on it (their gates now look at the new head).

    `sha` is informational: the head is read from the forge, which is the truth.
    """
    if repo not in rt.config.repos:
        raise UsageError(f"unknown repo {repo!r} (configured: {', '.join(rt.config.repos) or 'none'})")
    return [_advance(rt, task) for task in tasks_on_ref(rt, repo, ref)]


def ci_report(
    rt: Runtime, key: str, *, state: str, sha: str | None, context: str, description: str | None
) -> dict[str, Any]:
    """Record a CI result for the task's head (or `sha`), then advance the task."""
    if state not in ("pending", "success", "failure", "error"):
        raise UsageError(f"--state {state!r}: expected pending, success, failure or error")
    task = rt.task(key)
    head = sha or rt.forge.branch_head(task)
    if head is None:
        raise UsageError(f"{key} has no branch head to report CI for")
    rt.store.set_commit_status(
        repo=task.repo, sha=head, context=context, state=state, description=description, now=rt.now()
    )
    return {"sha": head, **_advance(rt, task)}


def _advance(rt: Runtime, task: Task) -> dict[str, Any]:
    try:
        results = advance_mod.advance_chain(rt, task.key)
    except OrchError as e:
        return {"task": task.key, "outcome": "error", "message": str(e)}
    last = results[-1]
    moved = [f"{r.stage} -> {r.to_stage}" for r in results if r.outcome == "advanced"]
    return {"task": task.key, "outcome": last.outcome, "moved": moved, "message": last.message}
