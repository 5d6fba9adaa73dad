"""What a webhook delivery means for orch: one handler per kind of event.

Called by the inbox's drain (`orch.engine.inbox`) with a delivery it stored (from the
relay or from `orch event`). A handler records what the event says (a CI status
for a sha, an item's new state) and asks `advance`; a repeat changes nothing. A push or
a pull request names a branch; a status names only a sha, resolved here to the task
whose head it is (`task_for_sha`), never guessed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from orch import log
from orch.engine import advance as advance_mod
from orch.engine import events
from orch.engine.runtime import Runtime
from orch.store import Task
from orch.webhooks import payloads


def handle(rt: Runtime, source: str, body: bytes, headers: Mapping[str, str]) -> str:
    """Process one delivery; returns what was done, in words."""
    event = payloads.parse_for(source, body, headers)
    if isinstance(event, payloads.GiteaPush):
        return _push(rt, event)
    if isinstance(event, payloads.GiteaStatus):
        return _status(rt, event.repo, event.sha, event.context, event.state, event.description)
    if isinstance(event, payloads.GiteaWorkflowRun):
        if event.action != "completed" or not event.head_sha or not event.repo:
            return f"ignored: workflow {event.action}"
        state = "success" if event.conclusion == "success" else "failure"
        return _status(rt, event.repo, event.head_sha, f"workflow/{event.event}", state, event.conclusion)
    if isinstance(event, payloads.GiteaPullRequest):
        return _pull_request(rt, event)
    if isinstance(event, payloads.PlaneWorkItemEvent):
        return _plane(rt, event)
    return f"ignored: {source} {event.event} event"  # Unknown: the only kind left


def _plane(rt: Runtime, ev: payloads.PlaneWorkItemEvent) -> str:
    """A work item changed: only its state matters (Plane sends one webhook per field)."""
    tracker = rt.external
    if tracker is None:
        return "ignored: no Plane tracker is configured"
    from orch.engine import tracker_events

    project = tracker.project_for(ev.project_id or "")
    if project is None:
        return f"ignored: project {ev.project_id} is not configured"
    if ev.action in ("deleted", "delete"):
        logical: str | None = "cancelled"
    elif ev.action in ("created", "create") or ev.field == "state" or "state" in ev.changed:
        state = ev.state
        logical = tracker.logical_of(
            project,
            state_id=(state.id if state else ev.state_id),
            name=state.name if state else None,
            group=state.group if state else None,
        )
        tracker.saw_state(ev.work_item_id, state.id if state else ev.state_id)
    else:
        return f"ignored: {ev.field or 'a field'} changed"
    return tracker_events.on_item_state(
        rt,
        tracker=tracker,
        project=project,
        item_id=ev.work_item_id,
        sequence_id=ev.sequence_id,
        title=ev.name,
        logical=logical,
    )


def _repo(rt: Runtime, full_name: str) -> str | None:
    return rt.config.repo_for_forge(full_name)


def _push(rt: Runtime, ev: payloads.GiteaPush) -> str:
    repo = _repo(rt, ev.repo)
    if repo is None:
        return f"ignored: {ev.repo} is not a configured repo"
    if ev.branch is None:
        return f"ignored: {ev.ref} is not a branch"
    rows = events.push(rt, repo=repo, ref=ev.ref, sha=ev.after)
    return _summary(rows) or f"no task on {ev.ref}"


def task_for_sha(rt: Runtime, repo: str, sha: str) -> tuple[Task | None, str]:
    """The task whose branch head is `sha`; else the single task in development in that
    repo; ambiguous -> None (never guess). Shared with the reconciler."""
    live = [
        t
        for t in rt.store.list_tasks(limit=100_000)
        if t.repo == repo and not rt.config.pipeline.is_terminal(t.stage)
    ]
    with rt.forge.snapshot():  # one read of the heads per repository, not one per task
        exact = [t for t in live if rt.forge.branch_head(t) == sha]
    if len(exact) == 1:
        return exact[0], "branch head"
    if len(exact) > 1:
        return None, f"{len(exact)} tasks have head {sha[:10]}"
    dev = [t for t in live if t.stage == "development"]
    if len(dev) == 1:
        return dev[0], "the only task in development"
    return None, f"no task has head {sha[:10]} and {len(dev)} are in development"


_STATES = {
    "success": "success",
    "warning": "failure",  # one rule with the CI gate: only success (or skipped) is green
    "skipped": "success",
    "pending": "pending",
    "failure": "failure",
    "error": "error",
}


def _status(rt: Runtime, full_name: str, sha: str, context: str, state: str, description: str | None) -> str:
    repo = _repo(rt, full_name)
    if repo is None:
        return f"ignored: {full_name} is not a configured repo"
    task, why = task_for_sha(rt, repo, sha)
    if task is None:
        log.warning("status_unresolved", repo=repo, sha=sha, why=why)
        return f"ignored: {why}"
    rt.store.set_commit_status(
        repo=repo,
        sha=sha,
        context=context,
        state=_STATES.get(state, "error"),
        description=description,
        now=rt.now(),
    )
    return f"{task.key} ({why}): ci {state}; " + _summary([_advance(rt, task)])


def _pull_request(rt: Runtime, ev: payloads.GiteaPullRequest) -> str:
    repo = _repo(rt, ev.repo)
    if repo is None:
        return f"ignored: {ev.repo} is not a configured repo"
    if ev.action not in ("closed", "synchronized", "opened", "reopened"):
        return f"ignored: pull_request {ev.action}"
    rows = events.push(rt, repo=repo, ref=f"refs/heads/{ev.head_branch}", sha=ev.head_sha)
    what = "merged" if ev.merged else ev.action
    return f"pull request {ev.number} {what}: " + (_summary(rows) or f"no task on {ev.head_branch}")


def _advance(rt: Runtime, task: Task) -> dict[str, Any]:
    results = advance_mod.advance_chain(rt, task.key)
    moved = [f"{r.stage} -> {r.to_stage}" for r in results if r.outcome == "advanced"]
    return {"task": task.key, "outcome": results[-1].outcome, "moved": moved}


def _summary(rows: list[dict[str, Any]]) -> str:
    return "; ".join(f"{r['task']}: {', '.join(r.get('moved') or []) or r['outcome']}" for r in rows)
