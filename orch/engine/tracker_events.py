"""What a tracker item's state means for its task. Shared by the Plane webhooks and the
reconciler, so that both take the same path and a race between them is harmless:

    to_analyse, in_progress   create the task (once: the unique tracker reference) and
                              show it at its first stage (Analysis); or resume it if the
                              tracker paused it (a block made in orch stays: only
                              `orch unblock` lifts it)
    approved, rejected        a person's verdict at the current stage, then advance
    blocked, needs_input      pause (block) the task
    cancelled (group)         cancel the task
    done (group), others      nothing: orch moves its own tasks to done

The logical state of an item is decided by the tracker adapter, which recognises
terminal states by their group, never by a name or a UUID alone.
"""

from __future__ import annotations

from orch import log
from orch.engine import advance as advance_mod
from orch.engine import tasks
from orch.engine.runtime import Runtime
from orch.errors import KeyTaken, OrchError, UsageError
from orch.ports import ExternalTracker, Project
from orch.store import Audit


def on_item_state(
    rt: Runtime,
    *,
    tracker: ExternalTracker,
    project: Project,
    item_id: str,
    sequence_id: int | None,
    title: str | None,
    logical: str | None,
) -> str:
    task = rt.store.task_for_ref(item_id)
    if logical in ("to_analyse", "in_progress"):
        if task is None:
            return _create(rt, tracker, project, item_id, sequence_id, title, logical)
        if task.blocked and not task.escalated:
            if tasks.blocked_by(rt, task) != "tracker":
                # The tracker still shows what orch wrote before the block: that is no
                # decision of a person's, and a person's decision in orch outranks it.
                return f"ignored: {task.key} was blocked in orch; `orch unblock {task.key}` lifts it"
            tasks.unblock(rt, task.key, f"tracker says {logical}")
            return f"{task.key}: resumed"
        return f"{task.key}: already under way ({task.stage})"
    if task is None:
        return f"ignored: no task for this item ({logical or 'unmapped state'})"
    if rt.config.pipeline.is_terminal(task.stage):
        return f"ignored: {task.key} is {task.stage}"
    if logical in ("approved", "rejected"):
        stage = rt.config.pipeline.stages.get(task.stage)
        if stage is None or not stage.human:
            return f"ignored: {task.key} is at {task.stage}, not at a person's gate"
        if rt.store.latest_verdict(task.id, task.version) is not None:
            return f"ignored: {task.key} has a verdict for this stage already"
        word = "approve" if logical == "approved" else "reject"
        tasks.verdict(rt, task.key, word, reason=f"{logical} in the tracker")
        results = advance_mod.advance_chain(rt, task.key)
        moved = [f"{r.stage} -> {r.to_stage}" for r in results if r.outcome == "advanced"]
        return f"{task.key}: {word}d" + (f"; {', '.join(moved)}" if moved else f"; {results[-1].outcome}")
    if logical in ("blocked", "needs_input"):
        if task.blocked:
            return f"ignored: {task.key} is paused already"
        changed = tasks.block(rt, task.key, f"{logical.replace('_', ' ')} in the tracker", by="tracker")
        return f"{task.key}: {'paused' if changed else 'already paused'}"
    if logical == "cancelled":
        tasks.cancel(rt, task.key, "cancelled in the tracker")
        return f"{task.key}: cancelled"
    return f"ignored: {task.key} is {logical or 'in an unmapped state'} in the tracker"


def _create(
    rt: Runtime,
    tracker: ExternalTracker,
    project: Project,
    item_id: str,
    seq: int | None,
    title: str | None,
    logical: str,
) -> str:
    cfg = rt.config
    if seq is None:
        raise UsageError(f"work item {item_id} has no sequence id: cannot name its task")
    stage = cfg.pipeline.initial
    if logical == "in_progress" and "development" in cfg.pipeline.stages:
        stage = "development"  # work starts without an analysis
    key = tracker.task_key(project, seq)
    agent = cfg.pipeline.stages[stage].agent
    try:
        task, created = rt.store.ensure_task_for_ref(
            ref=item_id,
            key=key,
            title=(title or key)[:500],
            repo=project.repo,
            stage=stage,
            now=rt.now(),
            actor=rt.actor,
            agent=agent,
        )
    except KeyTaken:  # a configuration problem: two items map to one key
        raise UsageError(f"task key {key} is taken by another tracker item") from None
    log.info("task_from_tracker", task=task.key, created=created, stage=stage, actor=rt.actor)
    if created:
        # Show the task where it is (To Analyse -> Analysis) now, not on the reconciler's
        # next run: with no webhook lost, the reconciler has nothing to write back.
        try:
            rt.tracker.stage_changed(task, task.stage)
        except OrchError as e:  # the reconciler's write-back tries again
            rt.store.audit(Audit(task.id, rt.actor, "follow_up_failed", {"error": str(e)}), now=rt.now())
    return f"{task.key}: {'created at ' + stage if created else 'exists already'}"
