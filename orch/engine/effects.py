"""Effects through the ledger: each runs at most once per transition.

The ledger key is (task, transition@version, effect). Re-entry skips `done`. A `started`
row whose owner is dead means the owner died mid-effect: the effect's probe settles it
(is the head in main already?) before anything is retried. An irreversible effect with
no probe cannot be settled automatically: the task is blocked and a person is told.

An effect command's process group is part of its owner (its pid is in the row before it
may run): while it lives, nobody probes or reruns. Taking a row over is a
compare-and-swap on the row that was probed, and on the task's stage and version (a
cancel wins). docs/effects.md tells the whole story.
"""

from __future__ import annotations

import json
from typing import Any

from orch import faults, log
from orch.config import Effect, Transition
from orch.engine import env
from orch.engine.runtime import Runtime
from orch.errors import (
    BranchBehind,
    Busy,
    EffectFailed,
    IntegrationError,
    OrchError,
    PermanentFailure,
    RetryLater,
    UsageError,
)
from orch.identity import group_alive, host, is_alive, judged_alive, process_start_time
from orch.store import Audit, EffectRow, Task


def ledger_key(task: Task, tr: Transition) -> str:
    return f"{tr.name}@v{task.version}"


def run_all(rt: Runtime, task: Task, tr: Transition) -> list[dict[str, Any]]:
    """Run the transition's effects in order; returns what each did.

    Whatever happens inside an effect, its row is ended (done, failed or deferred) before
    this returns or raises: a long-lived process (the relay) never keeps a `started` row
    it is not running.
    """
    done: list[dict[str, Any]] = []
    tkey = ledger_key(task, tr)
    for name in tr.effects:
        done.append(_run_one(rt, task, tkey, rt.config.effects[name]))
    return done


def process_of(row: EffectRow) -> dict[str, Any] | None:
    """The effect command's process recorded in `row`, and whether its group still lives."""
    if row.proc_pgid is None:
        return None
    alive = row.state != "done" and group_alive(row.owner, row.proc_pgid, row.proc_start)
    return {"pid": row.proc_pid, "pgid": row.proc_pgid, "start_time": row.proc_start, "alive": alive}


def _still_running(rt: Runtime, task: Task, eff: Effect, row: EffectRow) -> str | None:
    """Why `row` must not be probed nor run again now, or None: its owner lives, or the
    command it started still runs (its process group outlives a killed orch)."""
    if row.state == "started" and row.owner != rt.owner and is_alive(row.owner):
        return f"effect {eff.name} of {task.key} is running under {row.owner.label()}"
    proc = process_of(row)
    if proc is not None and proc["alive"]:
        return (
            f"effect {eff.name} of {task.key} is still running as process group {proc['pgid']} "
            f"(pid {proc['pid']}) although its owner {row.owner.label()} is gone: waiting for it to end"
        )
    return None


def _uncertain(row: EffectRow) -> bool:
    """Was the row interrupted, or ended by an error that leaves open whether it acted?"""
    if row.state == "started":
        return True
    return row.state == "failed" and bool(_result(row).get("uncertain"))


def _result(row: EffectRow) -> dict[str, Any]:
    try:
        out = json.loads(row.result or "{}")
    except ValueError:
        return {}
    return out if isinstance(out, dict) else {}


def _run_one(rt: Runtime, task: Task, tkey: str, eff: Effect) -> dict[str, Any]:
    store = rt.store
    for _ in range(5):
        row = store.get_effect(task.id, tkey, eff.name)
        if row is not None and row.state == "done":
            return {"effect": eff.name, "ran": False, "why": "done already"}
        if row is not None:
            busy = _still_running(rt, task, eff, row)
            if busy is not None:
                raise Busy(busy)
        if row is not None and _uncertain(row):
            settled, answer = _probe(rt, task, eff)
            if settled is True:
                store.end_effect(
                    task.id,
                    tkey,
                    eff.name,
                    state="done",
                    result={"settled_by": "probe"},
                    now=rt.now(),
                    seen=row,
                    audit=Audit(task.id, rt.actor, "effect_settled", {"effect": eff.name, "probe": "done"}),
                )
                continue  # read the row again: done, unless someone else took it meanwhile
            if settled is None and eff.irreversible:
                raise PermanentFailure(_interrupted_message(task, eff, row, answer))
        outcome, _ = store.start_effect(
            task.id,
            tkey,
            eff.name,
            owner=rt.owner,
            now=rt.now(),
            seen=row,
            stage=task.stage,
            version=task.version,
            acting=eff.type == "command" and eff.irreversible,
        )
        if outcome == "moved":
            moved = rt.task(task.key)
            raise Busy(f"{task.key} moved to {moved.stage} (v{moved.version}): effect {eff.name} not started")
        if outcome == "started":
            break
        # Someone else took the row between our look and our write (and maybe ran the
        # effect, maybe died doing it): never act on the stale look, look again.
    else:
        raise Busy(f"effect {eff.name} of {task.key} keeps changing hands; try again")
    return _run_started(rt, task, tkey, eff)


def _interrupted_message(task: Task, eff: Effect, row: EffectRow, answer: str) -> str:
    proc = process_of(row)
    pid = f"its process (pid {proc['pid']}) has ended" if proc else "no process of it is recorded"
    return (
        f"effect {eff.name} of {task.key} was interrupted and may have run: {answer}; {pid}. "
        f"Check by hand, then `orch effect settle {task.key} {eff.name} --done` (it happened) "
        f"or `--redo` (run it again), then `orch unblock {task.key}`"
    )


def _run_started(rt: Runtime, task: Task, tkey: str, eff: Effect) -> dict[str, Any]:
    store = rt.store
    faults.point("after_effect_started", eff.name)
    if eff.type == "command" and eff.irreversible:
        try:
            rt.tracker.effect_started(task, eff.name)
        except OrchError as e:  # showing the phase must never stop the deploy
            log.warning("tracker_phase_failed", task=task.key, effect=eff.name, error=str(e))

    def end(state: str, result: dict[str, Any], event: str, detail: dict[str, Any]) -> None:
        store.end_effect(
            task.id,
            tkey,
            eff.name,
            state=state,
            result=result,
            now=rt.now(),
            owner=rt.owner,
            audit=Audit(task.id, rt.actor, event, {"effect": eff.name, **detail}),
        )

    try:
        result = _do(rt, task, tkey, eff)
    except BranchBehind as e:
        # Another merge landed first: the rebase of this transition is done again on the
        # next advance (its row reopened), then CI on the new head, then this merge.
        end("failed", {"later": str(e)}, "effect_deferred", {"why": str(e)})
        _reopen_rebases(rt, task, tkey, str(e))
        raise
    except RetryLater as e:
        # Not now (CI still running): the row ends failed, so the next advance runs it again.
        end("failed", {"later": str(e)}, "effect_deferred", {"why": str(e)})
        raise
    except Busy as e:
        # Not now (the forge has not caught up): nothing was done; run it again later.
        end("failed", {"later": str(e)}, "effect_deferred", {"why": str(e)})
        raise
    except NotDone as e:
        # The task moved (a cancel) before the point of no return: nothing happened.
        end("failed", {"not_done": str(e)}, "effect_deferred", {"why": str(e)})
        raise Busy(str(e)) from None
    except PermanentFailure as e:
        end("failed", {"error": str(e)}, "effect_failed", {"error": str(e)})
        raise
    except IntegrationError as e:
        # The machine or a server (a git lock, a 502): not the agent's fault, and nothing
        # says whether the effect acted: the next try probes first, then runs again.
        end("failed", {"later": str(e), "uncertain": True}, "effect_deferred", {"why": str(e)})
        # Said once per stage visit: a person may have to fix the machine; no agent runs.
        rt.store.notify(
            f"effect_waits:{task.key}:v{task.version}:{eff.name}",
            task.id,
            f"{task.key}: {eff.name} waits, not the agent's fault: {e}. "
            "Once that is fixed the next tick goes on by itself",
            now=rt.now(),
        )
        raise RetryLater(f"effect {eff.name} of {task.key}: {e}", delay=60) from None
    except BaseException as e:
        why = f"{type(e).__name__}: {e}"
        end("failed", {"error": why, "uncertain": True}, "effect_failed", {"error": why})
        raise
    faults.point("before_effect_done", eff.name)
    end("done", result, "effect_done", result)
    faults.point("after_effect_done", eff.name)
    return {"effect": eff.name, "ran": True, **result}


def _reopen_rebases(rt: Runtime, task: Task, tkey: str, why: str) -> None:
    for row in rt.store.effects_of(task.id):
        eff = rt.config.effects.get(row.effect)
        if row.transition == tkey and row.state == "done" and eff is not None and eff.type == "rebase":
            rt.store.end_effect(
                task.id,
                tkey,
                row.effect,
                state="failed",
                result={"redo": why},
                now=rt.now(),
                seen=row,
                audit=Audit(task.id, rt.actor, "effect_reopened", {"effect": row.effect, "why": why}),
            )


class NotDone(Exception):
    """The task left the stage and version the effect was started for, before the effect's
    point of no return: it did nothing."""


def _do(rt: Runtime, task: Task, tkey: str, eff: Effect) -> dict[str, Any]:
    if eff.type == "rebase":
        return _rebase(rt, task)
    if eff.type == "merge":
        _require_green_ci(rt, task)

        def point_of_no_return() -> None:
            if not rt.store.mark_effect_acting(
                task.id, tkey, eff.name, owner=rt.owner, stage=task.stage, version=task.version
            ):
                now = rt.task(task.key)
                raise NotDone(f"{task.key} moved to {now.stage} before the merge: nothing merged")

        return rt.forge.merge(task, before_update=point_of_no_return)
    assert eff.command is not None
    log = rt.config.log_dir / f"effect-{task.key}-{eff.name}-v{task.version}.log"

    def started(pid: int) -> None:
        # Recorded before the command may run (the runner holds it until this returns).
        rt.store.set_effect_process(
            task.id, tkey, eff.name, owner=rt.owner, pid=pid, pgid=pid, start=process_start_time(pid)
        )

    out = env.run(
        rt, task, eff.command, log_path=log, timeout_s=eff.timeout_s, pass_env=eff.pass_env, on_start=started
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
    if not rt.config.merge.premerge_rebase_always:
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


def _probe(rt: Runtime, task: Task, eff: Effect) -> tuple[bool | None, str]:
    """Did the interrupted effect happen? (True yes, False no, None cannot tell; what the
    probe answered, in words for the message that asks a person.)"""
    if eff.type == "merge":
        merged = rt.forge.is_merged(task)
        return merged, f"the forge says {'merged' if merged else 'not merged'}"
    if eff.type == "rebase":
        return False, "a rebase is run again"  # reversible and idempotent
    if eff.probe:
        log = rt.config.log_dir / f"probe-{task.key}-{eff.name}.log"
        out = env.run(rt, task, eff.probe, log_path=log, timeout_s=eff.timeout_s, pass_env=eff.pass_env)
        if out.exit_code in (0, 1):
            return out.exit_code == 0, f"its probe answered {'done' if out.exit_code == 0 else 'not done'}"
        answer = f"its probe could not tell ({out.reason}; log {log})"
        return (None, answer) if eff.irreversible else (False, answer)
    return (None, "it has no probe") if eff.irreversible else (False, "no probe")


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
            "result": _result(e) if e.result else None,
            "process": process_of(e),
        }
        for e in rt.store.effects_of(task.id)
    ]


def in_flight(row: EffectRow) -> bool:
    """Can this effect still act? Its owner runs it, or its command's group lives."""
    if row.state == "done":
        return False
    if row.state == "started" and is_alive(row.owner):
        return True
    proc = process_of(row)
    return proc is not None and bool(proc["alive"])


def describe_running(rt: Runtime, task: Task, row: EffectRow) -> str:
    proc = process_of(row)
    pid = proc["pid"] if proc and proc["alive"] else row.owner.pid
    since = max(0.0, rt.now() - row.started_at)
    return f"effect {row.effect} of {task.key} is running (pid {pid}, for {since:.0f}s)"


def before_cancel(rt: Runtime, task: Task) -> list[str]:
    """What the irreversible effects of the cancelled stage visit (or of the move that led
    to it) did before the cancel: ran, or were interrupted past their point of no return
    (then the probe says). A cancel undoes none of them: the output must say so."""
    out = []
    visits = (f"@v{task.version}", f"@v{task.version - 1}")
    for row in rt.store.effects_of(task.id):
        eff = rt.config.effects.get(row.effect)
        if eff is None or not eff.irreversible or not row.transition.endswith(visits):
            continue  # a rebase that ran is no news: nothing was merged or deployed
        if row.state == "done":
            if not _result(row).get("already"):
                out.append(f"{row.effect} ran before the cancel")
        elif row.acting:
            answer = _probe(rt, task, eff)[1]
            out.append(f"{row.effect} was interrupted before the cancel and may have run: {answer}")
    return out


def running(rt: Runtime, task: Task) -> list[dict[str, Any]]:
    """The task's effects that may be running now: started by a live owner, or whose
    command's process group still lives (for `orch lease show` and `orch explain`)."""
    out = []
    for e in rt.store.effects_of(task.id):
        if e.state == "done":
            continue
        proc = process_of(e)
        owner_alive = e.state == "started" and is_alive(e.owner)
        if owner_alive or (proc is not None and proc["alive"]):
            out.append(
                {
                    "effect": e.effect,
                    "transition": e.transition,
                    "owner": e.owner.as_dict(),
                    "owner_alive": owner_alive,
                    "process": proc,
                    "pid": proc["pid"] if proc else e.owner.pid,
                    "started_at": e.started_at,
                }
            )
    return out


def settle(rt: Runtime, key: str, effect: str, *, done: bool, host_gone: bool = False) -> str:
    """A person's word on an interrupted effect: it happened (done), or run it again.

    `host_gone`: the effect ran on another host that will not come back. Its command's
    process group cannot be seen from here, so without this word nobody could settle it;
    the person vouches that nothing of it still runs. Refused while that host's orch is
    alive by what the store can tell (its database sessions)."""
    task = rt.task(key)
    rows = [e for e in rt.store.effects_of(task.id) if e.effect == effect and e.state != "done"]
    if not rows:
        raise UsageError(f"{key} has no unsettled {effect!r} effect (see `orch effect list {key}`)")
    row = rows[-1]
    gone = row.owner.host
    if host_gone and gone == host():
        raise UsageError(
            f"the {effect} of {key} ran on this host ({gone}): --host-gone is for another host's"
        )
    if host_gone and judged_alive(row.owner):
        raise Busy(
            f"its owner {row.owner.label()} on {gone} is alive (its database session is open): "
            "settle it there"
        )
    eff = rt.config.effects.get(effect)
    if eff is not None and not host_gone:
        busy = _still_running(rt, task, eff, row)
        if busy is not None:
            raise Busy(f"{busy}. Settle it once it has ended")
    state = "done" if done else "failed"  # a failed row is run again on the next advance
    ended = rt.store.end_effect(
        task.id,
        row.transition,
        effect,
        state=state,
        result={"settled_by": rt.actor},
        now=rt.now(),
        seen=row,
        # Its process group was on that host: kept, it would read as running forever here
        # (another host's group is assumed alive) and block the rerun of a --redo.
        forget_process=host_gone,
        audit=Audit(
            task.id,
            rt.actor,
            "effect_settled",
            {
                "effect": effect,
                "as": "done" if done else "redo",
                **({"host_gone": gone} if host_gone else {}),
            },
        ),
    )
    if not ended:
        raise Busy(f"{key}: the {effect} row changed while we settled it; see `orch effect list {key}`")
    return f"{key}: {effect} of {row.transition} settled as {'done' if done else 'to run again'}"
