"""Effects through the ledger: each runs at most once per transition.

The ledger key is (task, transition@version, effect). Re-entry skips `done`. A `started`
row whose owner is dead means the owner died mid-effect: the effect's probe settles it
(is the head in main already?) before anything is retried. An irreversible effect with
no probe cannot be settled automatically: the task is blocked and a person is told.
"""

from __future__ import annotations

from typing import Any

from orch import faults, log
from orch.config import Effect, Transition
from orch.engine.env import task_env
from orch.engine.runtime import Runtime
from orch.errors import Busy, EffectFailed, OrchError, PermanentFailure, RetryLater, UsageError
from orch.identity import is_alive
from orch.store import Audit, Task


def ledger_key(task: Task, tr: Transition) -> str:
    return f"{tr.name}@v{task.version}"


def run_all(rt: Runtime, task: Task, tr: Transition) -> list[dict[str, Any]]:
    """Run the transition's effects in order; returns what each did."""
    done: list[dict[str, Any]] = []
    tkey = ledger_key(task, tr)
    for name in tr.effects:
        done.append(_run_one(rt, task, tkey, rt.config.effects[name]))
    return done


def _run_one(rt: Runtime, task: Task, tkey: str, eff: Effect) -> dict[str, Any]:
    store = rt.store
    row = store.get_effect(task.id, tkey, eff.name)
    if row is not None and row.state == "done":
        return {"effect": eff.name, "ran": False, "why": "done already"}
    if row is not None and row.state == "started" and row.owner != rt.owner:
        if is_alive(row.owner):
            raise Busy(f"effect {eff.name} of {task.key} is running under {row.owner.label()}")
        settled = _probe(rt, task, eff)
        if settled is True:
            store.end_effect(
                task.id,
                tkey,
                eff.name,
                state="done",
                result={"settled_by": "probe"},
                now=rt.now(),
                audit=Audit(task.id, rt.actor, "effect_settled", {"effect": eff.name, "probe": "done"}),
            )
            return {"effect": eff.name, "ran": False, "why": "probe: already done"}
        if settled is None and eff.irreversible:
            raise PermanentFailure(
                f"effect {eff.name} of {task.key} was interrupted and has no probe: it may have run. "
                "Check by hand, then `orch unblock` the task"
            )
    started, existing = store.start_effect(task.id, tkey, eff.name, owner=rt.owner, now=rt.now())
    if not started:
        assert existing is not None
        if existing.state == "done":
            return {"effect": eff.name, "ran": False, "why": "done already"}
        raise Busy(f"effect {eff.name} of {task.key} is running under {existing.owner.label()}")
    faults.point("after_effect_started", eff.name)
    if eff.type == "command" and eff.irreversible:
        try:
            rt.tracker.effect_started(task, eff.name)
        except OrchError as e:  # showing the phase must never stop the deploy
            log.warning("tracker_phase_failed", task=task.key, effect=eff.name, error=str(e))
    try:
        result = _do(rt, task, eff)
    except (RetryLater, EffectFailed) as e:
        # Either way the row ends failed, so the next advance runs the effect again: not
        # now (CI still running) is "deferred", a real failure is "failed".
        later = isinstance(e, RetryLater)
        store.end_effect(
            task.id,
            tkey,
            eff.name,
            state="failed",
            result={"later" if later else "error": str(e)},
            now=rt.now(),
            audit=Audit(
                task.id,
                rt.actor,
                "effect_deferred" if later else "effect_failed",
                {"effect": eff.name, "why" if later else "error": str(e)},
            ),
        )
        raise
    faults.point("before_effect_done", eff.name)
    store.end_effect(
        task.id,
        tkey,
        eff.name,
        state="done",
        result=result,
        now=rt.now(),
        audit=Audit(task.id, rt.actor, "effect_done", {"effect": eff.name, **result}),
    )
    faults.point("after_effect_done", eff.name)
    return {"effect": eff.name, "ran": True, **result}


def _do(rt: Runtime, task: Task, eff: Effect) -> dict[str, Any]:
    if eff.type == "rebase":
        return _rebase(rt, task)
    if eff.type == "merge":
        _require_green_ci(rt, task)
        return rt.forge.merge(task)
    assert eff.command is not None
    log = rt.config.log_dir / f"effect-{task.key}-{eff.name}-v{task.version}.log"
    out = rt.runner.run(
        eff.command,
        cwd=rt.config.base_dir,
        env=task_env(rt, task, pass_env=eff.pass_env),
        log_path=log,
        timeout_s=eff.timeout_s,
    )
    if out.state != "succeeded":
        raise EffectFailed(f"effect {eff.name} {out.reason} (log: {log})")
    return {"exit_code": out.exit_code, "log": str(log)}


def _rebase(rt: Runtime, task: Task) -> dict[str, Any]:
    """Pre-merge rebase, then CI again on the rebased head (a green CI was for the old one).

    A branch already on top of the default branch is left alone: no new head, no new CI.
    With merge.premerge_rebase_always off there is no rebase at all: a branch that cannot
    fast-forward fails the merge and goes back to development.
    """
    if not rt.config.premerge_rebase_always:
        return {"rebased": False, "skipped": "merge.premerge_rebase_always = false"}
    return rt.forge.rebase(task)


def _require_green_ci(rt: Runtime, task: Task) -> None:
    """The head being merged must have green CI: after a rebase it is a new head, whose CI
    runs again (synchronously for the local forge, on the forge's own runners otherwise)."""
    head = rt.forge.branch_head(task)
    if head is None:
        raise EffectFailed(f"{task.key} has no branch head to merge")
    state, _ = rt.forge.ci_status(task, head)
    if state is None:
        rt.forge.request_ci(task, head)
        state, _ = rt.forge.ci_status(task, head)
    if state in (None, "pending"):
        raise RetryLater(
            f"CI for {head[:10]} is {state or 'not reported yet'}: merge when it is green", delay=60
        )
    if state != "success":
        raise EffectFailed(f"CI is {state} on the head to merge {head[:10]}")


def _probe(rt: Runtime, task: Task, eff: Effect) -> bool | None:
    """Did the interrupted effect happen? True yes, False no, None cannot tell."""
    if eff.type == "merge":
        return rt.forge.is_merged(task)
    if eff.type == "rebase":
        return False  # reversible and idempotent: just run it again
    if eff.probe:
        log = rt.config.log_dir / f"probe-{task.key}-{eff.name}.log"
        out = rt.runner.run(
            eff.probe,
            cwd=rt.config.base_dir,
            env=task_env(rt, task, pass_env=eff.pass_env),
            log_path=log,
            timeout_s=eff.timeout_s,
        )
        if out.exit_code in (0, 1):
            return out.exit_code == 0
    return None if eff.irreversible else False


def ledger(rt: Runtime, key: str) -> list[dict[str, Any]]:
    task = rt.task(key)
    return [
        {
            "transition": e.transition,
            "effect": e.effect,
            "state": e.state,
            "attempts": e.attempts,
            "owner": e.owner.as_dict(),
            "started_at": e.started_at,
            "ended_at": e.ended_at,
            "result": e.result,
        }
        for e in rt.store.effects_of(task.id)
    ]


def settle(rt: Runtime, key: str, effect: str, *, done: bool) -> str:
    """A person's word on an interrupted effect: it happened (done), or run it again."""
    task = rt.task(key)
    rows = [e for e in rt.store.effects_of(task.id) if e.effect == effect and e.state != "done"]
    if not rows:
        raise UsageError(f"{key} has no unsettled {effect!r} effect (see `orch effect list {key}`)")
    row = rows[-1]
    state = "done" if done else "failed"  # a failed row is run again on the next advance
    rt.store.end_effect(
        task.id,
        row.transition,
        effect,
        state=state,
        result={"settled_by": rt.actor},
        now=rt.now(),
        audit=Audit(
            task.id, rt.actor, "effect_settled", {"effect": effect, "as": "done" if done else "redo"}
        ),
    )
    return f"{key}: {effect} of {row.transition} settled as {'done' if done else 'to run again'}"
