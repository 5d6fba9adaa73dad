"""A transition's commit, owned here.

Three moves write a stage: `forward` (advance, through a transition's gates and
effects), `back` (a failed effect sends the task to the transition's `on_fail` stage)
and `cancel`. Each is built here into a `StageChange`: the compare-and-swap on the
stage and version, its audit row, the message keyed by the version it creates (so a
stage passed twice is told twice, a replay never), and the follow-ups (the next
stage's agent job, or the escalation that replaces it). `commit` is the only caller of
`Store.commit_transition`, which writes all of it in one transaction or nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from orch.config import Config, Transition
from orch.engine.runtime import Runtime
from orch.store import Audit, EffectRow, Message, NextJob, StageChange, Task


def message_key(key: str, version: int) -> str:
    """The outbox key of a stage change: the task and the version the change created."""
    return f"task:{key}:v{version}"


def escalation(cfg: Config, task: Task, why: str | None = None) -> str | None:
    """The block reason when this retry uses up `max_retries`, else None: an escalated
    task is left alone by every automatic actor until a person unblocks it."""
    tries = task.retries + 1
    if tries < cfg.pipeline.max_retries:
        return None
    reason = f"escalated after {tries} retries (max_retries = {cfg.pipeline.max_retries})"
    return f"{reason}: {why}" if why else reason


def finishes(cfg: Config, old: str, new: str) -> bool:
    """Does this move finish the task for the tasks that wait on it (its work is in main)?"""
    done = (*cfg.deps.finished_stages, "cancelled")
    return new in done and old not in done


# What each task that waited on a finished one is told ({waiter}: its key; {key}: the
# finished task's): the store fills it in for every task it releases.
RELEASED = Message("released:{waiter}:{key}", "{waiter} no longer waits: {key} is finished")


def _release(cfg: Config, old: str, new: str) -> Message | None:
    return RELEASED if finishes(cfg, old, new) else None


def _next_job(cfg: Config, stage: str, note: str | None) -> NextJob | None:
    agent = cfg.pipeline.stages[stage].agent
    return NextJob(agent, note) if agent else None


def forward(rt: Runtime, task: Task, tr: Transition, ran: list[dict[str, Any]]) -> StageChange:
    """Through `tr`, its effects done (`ran` says what each did)."""
    cfg = rt.config
    escalate = escalation(cfg, task) if tr.retry else None
    text = f"{task.key} {task.stage} -> {tr.target}: {task.title}"
    if escalate:
        text = f"{task.key} ESCALATED at {tr.target}: {escalate}. A person must look, then `orch unblock`."
    detail = {"transition": tr.name, "version": task.version + 1, "effects": ran, "escalated": bool(escalate)}
    return StageChange(
        task_id=task.id,
        from_stage=task.stage,
        to_stage=tr.target,
        expected_version=task.version,
        retry=tr.retry,
        audit=Audit(task.id, rt.actor, "stage_changed", detail, task.stage, tr.target),
        message=Message(message_key(task.key, task.version + 1), text),
        job=_next_job(cfg, tr.target, _reject_note(rt, task) if tr.retry else None),
        escalation=escalate,
        release=_release(cfg, task.stage, tr.target),
    )


def back(rt: Runtime, task: Task, tr: Transition, why: str) -> StageChange:
    """A failed effect of `tr` (a rebase conflict, CI red after the rebase) returns the
    task to `tr.on_fail`, as a retry, with why in the next job's note."""
    assert tr.on_fail is not None
    detail = {"transition": f"{task.stage}->{tr.on_fail}", "effect_failed": why, "version": task.version + 1}
    text = f"{task.key} {task.stage} -> {tr.on_fail}: {why}"
    return StageChange(
        task_id=task.id,
        from_stage=task.stage,
        to_stage=tr.on_fail,
        expected_version=task.version,
        retry=True,
        audit=Audit(task.id, rt.actor, "stage_changed", detail, task.stage, tr.on_fail),
        message=Message(message_key(task.key, task.version + 1), text),
        job=_next_job(rt.config, tr.on_fail, f"{tr.name} failed: {why}"),
        escalation=escalation(rt.config, task, why),
    )


def cancel(rt: Runtime, task: Task, stage: str, reason: str | None) -> StageChange:
    """To the terminal `stage` (cancelled), from wherever the task is."""
    return StageChange(
        task_id=task.id,
        from_stage=task.stage,
        to_stage=stage,
        expected_version=task.version,
        retry=False,
        audit=Audit(
            task.id,
            rt.actor,
            "stage_changed",
            {"transition": f"{task.stage}->{stage}", "reason": reason},
            task.stage,
            stage,
        ),
        message=Message(
            message_key(task.key, task.version + 1), f"{task.key} cancelled: {reason or 'by ' + rt.actor}"
        ),
        # A task cancelled after its merge (at deploy, at monitoring) released its
        # dependents then: releasing them again would free one still waiting on another.
        release=_release(rt.config, task.stage, stage),
    )


def commit(
    rt: Runtime, change: StageChange, *, unless_in_flight: Callable[[EffectRow], bool] | None = None
) -> bool:
    """Write the change by compare-and-swap; False if the task moved first (nothing written)."""
    return rt.store.commit_transition(change, now=rt.now(), unless_in_flight=unless_in_flight)


def said(change: StageChange) -> str:
    """What the change tells people (its message's text)."""
    return change.message.text if change.message else ""


def _reject_note(rt: Runtime, task: Task) -> str | None:
    """The reviewer's reason, for the job that takes a rejected task back."""
    v = rt.store.latest_verdict(task.id, task.version)
    if v is None or v.verdict != "reject":
        return None
    return f"Rejected by {v.actor}: {v.reason or 'no reason given'}"
