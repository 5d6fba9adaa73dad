"""The local tracker's verbs: add a task, and what a person does to one.

approve/reject record a verdict for the task's current stage visit (and, where the
stage has a branch, its head): the human gate of analysis and the review gates read
them. block/unblock pause automatic actors; cancel ends the task through the CAS.

A block remembers where it came from (`by` in its audit row): a work item moved to
Blocked / Needs Input blocks `by="tracker"`, and the tracker may lift that block (the
item moved back to To Analyse / In Progress). Any other block (a person's `orch block`,
an escalation, a failed effect) is orch's: only `orch unblock` lifts it, whatever the
tracker replays (docs/tracker.md).
"""

from __future__ import annotations

import time
from typing import NamedTuple

from orch.config import Config
from orch.engine import effects, lease_names, transition
from orch.engine.runtime import Runtime
from orch.errors import Busy, ConfigError, KeyTaken, UsageError
from orch.names import is_safe_name, safe_name
from orch.store import Audit, Job, Task, Verdict


def add(rt: Runtime, title: str, *, repo: str | None = None, key: str | None = None) -> Task:
    cfg = rt.config
    title = title.strip()
    if not title:
        raise UsageError("a task needs a title")
    if len(title) > 500:
        raise UsageError(f"title is {len(title)} characters; at most 500")
    try:
        title.encode("utf-8")
    except UnicodeEncodeError:  # undecodable argv bytes, a lone surrogate: SQLite cannot store it
        raise UsageError("the title is not valid UTF-8 text") from None
    if key is not None and (not is_safe_name(key) or len(key) > 64):
        raise UsageError(f"key {key!r} may hold only A-Z a-z 0-9 . _ - (at most 64), e.g. {safe_name(key)!r}")
    repo = repo or cfg.default_repo()
    if repo not in cfg.repos:
        raise UsageError(f"unknown repo {repo!r} (configured: {', '.join(cfg.repos) or 'none'})")
    missing = missing_repos(cfg, (repo,))
    if missing:
        raise ConfigError(missing[0])
    # One transaction: the task and its first job exist together or not at all.
    try:
        return rt.store.add_task(
            title=title,
            repo=repo,
            stage=cfg.pipeline.initial,
            now=rt.now(),
            key=key,
            key_prefix=safe_name(cfg.tracker.key_prefix),
            actor=rt.actor,
            agent=cfg.pipeline.stages[cfg.pipeline.initial].agent,
        )
    except KeyTaken as e:
        raise UsageError(f"task {e.key} exists already" + ("" if key else " (pass --key)")) from None


def missing_repos(cfg: Config, names: tuple[str, ...] | None = None) -> list[str]:
    """One line per configured repository whose path is not there (local forge only: a
    remote forge clones from its server when the path is absent)."""
    if cfg.forge.kind != "local":
        return []
    out = []
    for name in names if names is not None else tuple(cfg.repos):
        path = cfg.repos[name].path
        if not path.is_dir():
            where = cfg.source or "orch.toml"
            out.append(f"[repos.{name}] path: {path} does not exist (fix the path in {where})")
    return out


def verdict(
    rt: Runtime,
    key: str,
    verdict: str,
    *,
    reason: str | None = None,
    by_agent: str | None = None,
    sha: str | None = None,
) -> Verdict:
    """Record approve/reject for the current stage visit (bound to the head where there is one)."""
    task = rt.task(key)
    if rt.config.pipeline.is_terminal(task.stage):
        raise UsageError(f"{key} is {task.stage}: nothing to {verdict}")
    if by_agent is None:
        _require_verdict_gate(rt, task, verdict)
    if sha is None and rt.config.pipeline.stages[task.stage].human is False:
        sha = rt.forge.branch_head(task)
    actor = f"agent:{by_agent}" if by_agent else rt.actor
    v = Verdict(task.id, task.version, task.stage, sha, verdict, actor, reason, rt.now())
    rt.store.add_verdict(v, audit=Audit(task.id, actor, verdict, {"reason": reason, "sha": sha}, task.stage))
    return v


def _require_verdict_gate(rt: Runtime, task: Task, verdict: str) -> None:
    """A person's verdict where no gate reads one would be recorded and never read."""
    cfg = rt.config
    names = [g for tr in cfg.pipeline.transitions_from(task.stage) for g in tr.gates]
    if any(cfg.gates[g].type == "verdict" for g in names if g in cfg.gates):
        return
    waits = ", ".join(dict.fromkeys(names)) or "nothing a person gives"
    raise UsageError(
        f"{task.key} is at {task.stage}, where no gate reads a verdict (it waits on {waits}); "
        f"nothing recorded. See `orch explain {task.key}`"
    )


def block(rt: Runtime, key: str, reason: str | None, *, by: str = "orch") -> bool:
    """Pause the task. `by` is "tracker" for a pause seen in the tracker, else "orch"."""
    task = rt.task(key)
    if rt.config.pipeline.is_terminal(task.stage):
        raise UsageError(f"{key} is {task.stage}: there is nothing left to block")
    why = reason or f"blocked by {rt.actor}"
    audit = Audit(task.id, rt.actor, "blocked", {"reason": why, "by": by}, task.stage)
    changed = rt.store.set_blocked(
        task.id,
        blocked=True,
        reason=why,
        now=rt.now(),
        audit=audit,
        notify=(
            f"blocked:{task.key}:{rt.store.count_events(task.id, 'blocked')}",
            f"{task.key} blocked: {why}",
        ),
    )
    if not changed and by != "tracker" and blocked_by(rt, task) == "tracker":
        # A person blocks in orch what the tracker had paused: the block is theirs now,
        # and the tracker can no longer lift it.
        rt.store.audit(audit, now=rt.now())
    return changed


def blocked_by(rt: Runtime, task: Task) -> str:
    """Who holds the task's block: "tracker" or "orch" (see the module docstring)."""
    for row in reversed(rt.store.history(task.id)):
        if row.event == "blocked":
            return "tracker" if row.detail.get("by") == "tracker" else "orch"
        if row.event == "unblocked":
            break
    return "orch"


def unblock(rt: Runtime, key: str, reason: str | None) -> bool:
    """Clear a block. After an escalation a person has looked: the retry count starts
    again, and the stage's agent gets a new job if its last one did not succeed."""
    task = rt.task(key)
    changed = rt.store.set_blocked(
        task.id,
        blocked=False,
        reason=None,
        now=rt.now(),
        escalated=False,
        reset_retries=task.escalated,
        audit=Audit(task.id, rt.actor, "unblocked", {"reason": reason, "was": task.block_reason}, task.stage),
        notify=(
            f"unblocked:{task.key}:{rt.store.count_events(task.id, 'unblocked')}",
            f"{task.key} unblocked",
        ),
    )
    stage = rt.config.pipeline.stages.get(task.stage)
    if changed and stage is not None and stage.agent:
        last = rt.store.latest_job(task.id, stage.agent, task.version)
        if last is None or last.state not in ("queued", "running", "succeeded"):
            rt.store.enqueue_job(
                task_id=task.id,
                agent=stage.agent,
                stage=task.stage,
                task_version=task.version,
                now=rt.now(),
                attempt=(last.attempt + 1) if last else 1,
                note=f"unblocked by {rt.actor}: {reason or 'no reason given'}",
            )
    return changed


def retry(rt: Runtime, key: str, reason: str | None) -> Job:
    """Queue the stage's agent again from its first attempt, after a person has looked.

    The usual case is a job that used up its attempts and escalated the task: that
    escalation is cleared (the review retry count is kept: a give-up is not a reject).
    A task a person blocked stays refused until it is unblocked.
    """
    task = rt.task(key)
    if rt.config.pipeline.is_terminal(task.stage):
        raise UsageError(f"{key} is {task.stage}: nothing to retry")
    stage = rt.config.pipeline.stages.get(task.stage)
    if stage is None or not stage.agent:
        raise UsageError(f"{key} is at {task.stage}, which runs no agent; see `orch explain {key}`")
    if task.blocked and not task.escalated:
        raise UsageError(f"{key} is blocked ({task.block_reason}); `orch unblock {key}` first")
    active = rt.store.active_job(task.id)
    if active is not None:
        raise UsageError(f"{key} already has job {active.id} {active.state}; see `orch queue`")
    last = rt.store.latest_job(task.id, stage.agent, task.version)
    # Attempt numbers stay unique per visit; the agent's max_attempts counts from here
    # (jobs.attempts_in_series): the note, unique per retry, marks where the series began.
    attempt = (last.attempt + 1) if last else 1
    note = f"retried by {rt.actor} (from attempt {attempt}): {reason or 'no reason given'}"
    if task.blocked:
        rt.store.set_blocked(
            task.id,
            blocked=False,
            reason=None,
            now=rt.now(),
            escalated=False,
            audit=Audit(
                task.id, rt.actor, "unblocked", {"reason": note, "was": task.block_reason}, task.stage
            ),
        )
    job = rt.store.enqueue_job(
        task_id=task.id,
        agent=stage.agent,
        stage=task.stage,
        task_version=task.version,
        now=rt.now(),
        attempt=attempt,
        note=note,
        audit=Audit(task.id, rt.actor, "job_retry", {"attempt": attempt, "reason": note}, task.stage),
    )
    if job is None:
        raise Busy(f"{key}: a job for {stage.agent} is already queued; see `orch queue`")
    return job


class Cancelled(NamedTuple):
    task: Task
    before: list[str]  # what happened before the cancel, in words (an effect that ran)


def cancel(rt: Runtime, key: str, reason: str | None, *, wait_s: float = 10.0) -> Cancelled:
    """Move the task to the terminal `cancelled` stage, by CAS like any other move.

    After this returns no effect of the task starts (each start is conditional on the
    stage and version) or completes: an effect past its point of no return (a deploy
    command running, a merge moving the default branch) cannot be stopped half-way, so
    the cancel waits up to `wait_s` for it and reports that it happened before the
    cancel, or raises Busy naming what runs.
    """
    cancelled = next(
        (s for s in rt.config.pipeline.stages.values() if s.terminal and s.name == "cancelled"), None
    )
    if cancelled is None:
        raise UsageError("the pipeline has no `cancelled` stage")
    deadline = time.monotonic() + max(0.0, wait_s)
    for _ in range(10_000):
        task = rt.task(key)
        if rt.config.pipeline.is_terminal(task.stage):
            raise UsageError(f"{key} is {task.stage} already")
        won = transition.commit(
            rt, transition.cancel(rt, task, cancelled.name, reason), unless_in_flight=effects.in_flight
        )
        if won:
            moved = rt.task(key)
            stop_jobs(rt, moved, f"task cancelled by {rt.actor}")
            lease = lease_names.task(moved.key)
            rt.store.release_lease(
                lease,
                owner=None,
                now=rt.now(),
                audit=Audit(moved.id, rt.actor, "lease_released_by_cancel", {"lease": lease}),
            )
            rt.forge.remove_worktree(moved)
            return Cancelled(moved, effects.before_cancel(rt, task))
        running = [e for e in rt.store.effects_of(task.id) if e.acting and effects.in_flight(e)]
        if running and time.monotonic() >= deadline:
            what = "; ".join(effects.describe_running(rt, task, e) for e in running)
            raise Busy(
                f"{key} not cancelled: {what}. It cannot be stopped half-way: cancel again when it "
                "has ended (it will be reported as done before the cancel), or pass a longer --wait"
            )
        time.sleep(0.1 if running else 0.01)
    raise Busy(f"{key} kept changing under us; try again")


def stop_jobs(rt: Runtime, task: Task, reason: str) -> list[int]:
    """Cancel the task's queued and running jobs; a running one's whole group is killed
    and its death confirmed. Returns the ids of the jobs stopped."""
    stopped = []
    for job in rt.store.jobs(task_id=task.id, states=("queued", "running")):
        # Mark first: the job's own runner then sees the verdict and does not overwrite it.
        if not rt.store.finish_job(
            job.id,
            state="cancelled",
            exit_code=None,
            reason=reason,
            now=rt.now(),
            head_sha=None,
            audit=Audit(task.id, rt.actor, "job_cancelled", {"job": job.id, "reason": reason}),
        ):
            continue
        if job.state == "running" and job.pgid and not rt.runner.kill_group(job.pgid, job.pgid_start):
            raise Busy(f"job {job.id}: process group {job.pgid} survived SIGKILL")
        stopped.append(job.id)
    return stopped
