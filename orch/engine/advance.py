"""advance(): move one task one step, exactly as DESIGN section 5 says.

  1. read the task; terminal, blocked or not at --expect -> nothing to do
  2. evaluate each transition's gates (read-only); all red -> stop, no write, no message
  3. take the transition lease; live owner -> busy; dead owner -> reclaim (audited)
  4. re-read the stage under the lease; moved on -> release, stop
  5. run the effects through the ledger (skip done, probe started)
  6. CAS the stage, with its follow-ups in the same transaction; lost -> stop
  7. tell the tracker, flush the outbox
  8. release the lease

The stage is written nowhere else: engine/transition.py builds and commits every move.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from orch import faults, log
from orch.config import Transition
from orch.engine import lease_names
from orch.engine.gates import GateResult, evaluate
from orch.engine.runtime import Runtime
from orch.errors import Busy, EffectFailed, NotReady, OrchError, PermanentFailure, RetryLater, UsageError
from orch.store import Audit, Lease, Task


class AdvanceResult(NamedTuple):
    task: str
    outcome: str  # advanced | not_ready | busy | nothing | failed
    stage: str
    to_stage: str | None = None
    message: str = ""
    gates: list[GateResult] = []  # noqa: RUF012 (never mutated)
    effects: list[dict[str, Any]] = []  # noqa: RUF012

    @property
    def exit_code(self) -> int:
        return {
            "advanced": 0,
            "nothing": 0,
            "not_ready": NotReady.exit_code,
            "busy": Busy.exit_code,
            "failed": PermanentFailure.exit_code,
        }[self.outcome]

    def as_dict(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "outcome": self.outcome,
            "stage": self.stage,
            "to_stage": self.to_stage,
            "message": self.message,
            "exit_code": self.exit_code,
            "gates": [g.as_dict() for g in self.gates],
            "effects": self.effects,
        }


def advance(rt: Runtime, key: str, *, expect: str | None = None) -> AdvanceResult:
    result = _advance(rt, key, expect)
    if result.outcome in ("advanced", "failed", "busy"):
        level = log.info if result.outcome == "advanced" else log.warning
        level(
            "advance",
            task=key,
            actor=rt.actor,
            outcome=result.outcome,
            stage=result.stage,
            to=result.to_stage,
            message=result.message,
        )
    else:
        log.debug(
            "advance",
            task=key,
            actor=rt.actor,
            outcome=result.outcome,
            stage=result.stage,
            message=result.message,
        )
    return result


def _advance(rt: Runtime, key: str, expect: str | None) -> AdvanceResult:
    cfg = rt.config
    if expect is not None and expect not in cfg.pipeline.stages:
        raise UsageError(f"--expect {expect!r}: no such stage (stages: {', '.join(cfg.pipeline.stages)})")
    task = rt.task(key)
    lease = lease_names.task(task.key)
    # A dead owner's leases (the task's, its repository's merge lease) are cleared on any
    # entry, so a crash after the CAS leaves nothing behind even when the next gates are red.
    for held in rt.store.dead_leases((lease, lease_names.merge(task.repo))):
        dead = rt.store.clear_dead_lease(held.name, actor=rt.actor, now=rt.now(), audit_task=task.id)
        if dead is not None:
            _alert_reclaimed(rt, task, dead)

    if expect is not None and task.stage != expect:
        return AdvanceResult(key, "nothing", task.stage, message=f"task is at {task.stage}, not {expect}")
    if cfg.pipeline.is_terminal(task.stage):
        return AdvanceResult(key, "nothing", task.stage, message=f"task is {task.stage}")
    if task.blocked:
        why = "escalated" if task.escalated else "blocked"
        return AdvanceResult(key, "not_ready", task.stage, message=f"{why}: {task.block_reason}")

    chosen, results = _choose(rt, task)
    degraded = [g for g in results if g.degraded]
    if chosen is None and degraded:
        reason = f"{degraded[0].name}: {degraded[0].reason} after the deploy"
        _block(rt, task, reason, alert=True)
        return AdvanceResult(key, "failed", task.stage, message=reason, gates=results)
    if chosen is None:
        if not results:
            return AdvanceResult(key, "nothing", task.stage, message=f"no transition leaves {task.stage}")
        red = "; ".join(f"{g.name}: {g.reason}" for g in results if not g.passed)
        return AdvanceResult(key, "not_ready", task.stage, message=red, gates=results)

    entered: dict[str, Any] = {
        "transition": chosen.name,
        "gates": {g.name: g.evidence or g.reason for g in results if g.passed},
    }
    if cfg.transition_lease.enabled:
        # The lease row's audit also says which transition was entered and on which
        # gates: one write where there were two (advance runs on every webhook).
        ok, holder = rt.store.acquire_lease(
            lease,
            owner=rt.owner,
            actor=rt.actor,
            purpose=chosen.name,
            now=rt.now(),
            audit_task=task.id,
            detail=entered,
        )
        if not ok:
            assert holder is not None
            return AdvanceResult(
                key,
                "busy",
                task.stage,
                chosen.target,
                f"lease held by {holder.actor} ({holder.owner.label()})",
                results,
            )
        if holder is not None:
            _alert_reclaimed(rt, task, holder)
        faults.point("after_lease")
    try:
        return _locked_step(
            rt, task, chosen, results, expect, None if cfg.transition_lease.enabled else entered
        )
    finally:
        if cfg.transition_lease.enabled:
            faults.point("before_release")
            # Not audited: the lease_acquired row and the CAS row tell the story; only a
            # release by hand, by the reaper or by a cancel is an event of its own.
            rt.store.release_lease(lease, owner=rt.owner, now=rt.now())


def _alert_reclaimed(rt: Runtime, task: Task, dead: Lease) -> None:
    rt.store.notify(
        f"reclaim:{dead.name}:{dead.owner.pid}:{dead.acquired_at}",
        task.id,
        f"{task.key}: reclaimed {dead.name} from dead owner {dead.actor} ({dead.owner.label()})",
        now=rt.now(),
    )


def advance_chain(rt: Runtime, key: str, *, limit: int = 10) -> list[AdvanceResult]:
    """Advance while steps succeed and the new stage has no agent to wait for.

    After a job ends, the next steps may need no one (merge, deploy, monitoring): take
    them now instead of waiting a tick for each.
    """
    results = [advance(rt, key)]
    while results[-1].outcome == "advanced" and len(results) < limit:
        stage = results[-1].to_stage
        if stage is None or rt.config.pipeline.stages[stage].agent is not None:
            break
        results.append(advance(rt, key))
    return results


def _choose(rt: Runtime, task: Task) -> tuple[Transition | None, list[GateResult]]:
    """The first transition whose gates are all green, and every gate result seen."""
    seen: list[GateResult] = []
    for tr in rt.config.pipeline.transitions_from(task.stage):
        results = [evaluate(rt, task, rt.config.gates[g]) for g in tr.gates]
        seen.extend(results)
        if all(r.passed for r in results):
            return tr, seen
    return None, seen


def _locked_step(
    rt: Runtime,
    task: Task,
    tr: Transition,
    gates: list[GateResult],
    expect: str | None,
    entered: dict[str, Any] | None,
) -> AdvanceResult:
    from orch.engine import tracker_check  # past the gates only: a red advance never loads it

    fresh = rt.task(task.key)
    if fresh.stage != task.stage or fresh.version != task.version:
        return AdvanceResult(
            task.key,
            "nothing" if expect is None else "busy",
            fresh.stage,
            message=f"moved on to {fresh.stage} while we checked",
        )
    if entered is not None:  # no lease to carry it: the gates get a row of their own
        rt.store.audit(Audit(task.id, rt.actor, "gates_green", entered, task.stage, tr.target), now=rt.now())
    stop = tracker_check.before_effects(rt, fresh, tr)  # a person's cancel or pause in the tracker wins
    if stop is not None:
        return AdvanceResult(task.key, stop.outcome, fresh.stage, tr.target, stop.message, gates)
    merge_lease = _merge_lease(rt, fresh, tr)
    if merge_lease is not None and rt.config.merge.line_enabled:
        waiting = _merge_line(rt, fresh)
        if waiting is not None:
            return AdvanceResult(task.key, "busy", fresh.stage, tr.target, waiting, gates)
    if merge_lease is not None:
        ok, holder = rt.store.acquire_lease(
            merge_lease, owner=rt.owner, actor=rt.actor, purpose=fresh.key, now=rt.now(), audit_task=fresh.id
        )
        if not ok:
            assert holder is not None
            return AdvanceResult(
                task.key,
                "busy",
                fresh.stage,
                tr.target,
                f"{merge_lease} held by {holder.actor} for {holder.purpose}",
                gates,
            )
    try:
        return _effects_and_cas(rt, fresh, tr, gates)
    finally:
        if merge_lease is not None:
            rt.store.release_lease(merge_lease, owner=rt.owner, now=rt.now())


def _merge_line(rt: Runtime, task: Task) -> str | None:
    """Merges into one repository go one after another: the task in line rebases, waits
    for CI on its rebased head (with a remote forge, across many advances) and merges;
    the others wait (busy) instead of rebasing onto a branch that is about to move.
    Returns why this task waits, or None when it is its turn."""
    holder = rt.store.take_merge_line(
        task.repo,
        task_id=task.id,
        stage=task.stage,
        version=task.version,
        now=rt.now(),
        max_age_s=rt.config.reaper.max_running_s,
    )
    if holder is None:
        return None
    other = rt.store.get_task_by_id(holder)
    name = other.key if other else f"#{holder}"
    return f"waiting behind {name} in the merge line of {task.repo}"


def _merge_lease(rt: Runtime, task: Task, tr: Transition) -> str | None:
    """Merges into one repository are serialized: rebase, CI re-check and merge under one lease."""
    if any(rt.config.effects[e].type in ("merge", "rebase") for e in tr.effects):
        return lease_names.merge(task.repo)
    return None


def _effects_and_cas(rt: Runtime, fresh: Task, tr: Transition, gates: list[GateResult]) -> AdvanceResult:
    from orch.engine import effects, transition  # past the gates only

    task = fresh
    try:
        ran = effects.run_all(rt, fresh, tr)
    except (Busy, RetryLater) as e:
        return AdvanceResult(task.key, "busy", fresh.stage, tr.target, str(e), gates)
    except EffectFailed as e:
        left = _moved(rt, fresh)
        if left is not None:
            return AdvanceResult(task.key, "busy", fresh.stage, tr.target, f"{left} ({e})", gates)
        if tr.on_fail:
            return _send_back(rt, fresh, tr, str(e), gates)
        _block(rt, fresh, f"{tr.name}: {e}")
        return AdvanceResult(task.key, "failed", fresh.stage, tr.target, str(e), gates)
    except PermanentFailure as e:
        left = _moved(rt, fresh)
        if left is not None:
            return AdvanceResult(task.key, "busy", fresh.stage, tr.target, f"{left} ({e})", gates)
        _block(rt, fresh, f"{tr.name}: {e}")
        return AdvanceResult(task.key, "failed", fresh.stage, tr.target, str(e), gates)
    faults.point("before_cas")
    change = transition.forward(rt, fresh, tr, ran)
    if not transition.commit(rt, change):
        rt.store.audit(Audit(fresh.id, rt.actor, "cas_lost", {"transition": tr.name}), now=rt.now())
        return AdvanceResult(
            task.key, "busy", fresh.stage, tr.target, "lost the compare-and-swap", gates, ran
        )
    faults.point("after_cas")
    moved = fresh._replace(stage=tr.target, version=change.version, retries=fresh.retries + int(tr.retry))
    try:
        rt.tracker.stage_changed(moved, tr.target)
        if rt.config.pipeline.is_terminal(tr.target):
            rt.forge.remove_worktree(moved)
    except OrchError as e:  # the stage moved; a follow-up failing is reported, not undone
        rt.store.audit(Audit(fresh.id, rt.actor, "follow_up_failed", {"error": str(e)}), now=rt.now())
    return AdvanceResult(task.key, "advanced", fresh.stage, tr.target, transition.said(change), gates, ran)


def _moved(rt: Runtime, task: Task) -> str | None:
    """Did the task leave this stage visit while its effects ran (a cancel removed the
    worktree under a CI run)? Then a failure is no news for the developer: say so."""
    now = rt.task(task.key)
    if (now.stage, now.version) == (task.stage, task.version):
        return None
    return f"{task.key} moved to {now.stage} while its effects ran: nothing more was done"


def _send_back(rt: Runtime, task: Task, tr: Transition, why: str, gates: list[GateResult]) -> AdvanceResult:
    """A failed effect (a rebase conflict, CI red after rebase) returns the task, with a note."""
    from orch.engine import transition

    change = transition.back(rt, task, tr, why)
    if not transition.commit(rt, change):
        return AdvanceResult(
            task.key, "busy", task.stage, change.to_stage, "lost the compare-and-swap", gates
        )
    return AdvanceResult(task.key, "advanced", task.stage, change.to_stage, transition.said(change), gates)


def _block(rt: Runtime, task: Task, reason: str, *, alert: bool = False) -> None:
    rt.store.set_blocked(
        task.id,
        blocked=True,
        reason=reason,
        now=rt.now(),
        audit=Audit(task.id, rt.actor, "blocked", {"reason": reason}),
        notify=(
            f"blocked:{task.key}:v{task.version}",
            f"{'ALERT ' if alert else ''}{task.key} BLOCKED: {reason}",
        ),
    )
