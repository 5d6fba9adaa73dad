"""Leases as operators see them: show, and release by hand (always audited)."""

from __future__ import annotations

from typing import Any

from orch.engine import effects, lease_names
from orch.engine.runtime import Runtime
from orch.errors import Busy
from orch.identity import is_alive
from orch.store import Audit


def show(rt: Runtime, key: str | None = None) -> list[dict[str, Any]]:
    """Leases held, each with the effects its task runs now (and their command's pid).

    An effect command whose owner died keeps running without any lease: it is listed
    too, as `effect:KEY:EFFECT`, because it is what blocks that task now.
    """
    if key is not None:
        lease = rt.store.get_lease(lease_names.task(rt.task(key).key))
        leases = [lease] if lease else []
    else:
        leases = rt.store.list_leases()
    rows: list[dict[str, Any]] = []
    shown: set[tuple[int, str]] = set()
    for lease in leases:
        row = {
            **lease.as_dict(),
            "age_s": max(0.0, rt.now() - lease.acquired_at),
            "alive": is_alive(lease.owner),
        }
        owner_key = lease_names.task_key(lease.name)
        task = rt.store.get_task(owner_key) if owner_key is not None else None
        row["effects"] = effects.running(rt, task) if task else []
        shown.update((task.id, e["effect"]) for e in row["effects"] if task)
        rows.append(row)
    started = rt.store.started_effects()
    if key is not None:
        started = [e for e in started if e.task_id == rt.task(key).id]
    for e in started:
        proc = effects.process_of(e)
        if (e.task_id, e.effect) in shown or proc is None or not proc["alive"] or is_alive(e.owner):
            continue
        task = rt.store.get_task_by_id(e.task_id)
        rows.append(
            {
                "name": lease_names.orphan_effect(task.key if task else str(e.task_id), e.effect),
                "owner": {**e.owner.as_dict(), "pid": proc["pid"], "start_time": proc["start_time"]},
                "actor": "effect command",
                "purpose": f"{e.transition}, its owner pid {e.owner.pid} is gone",
                "acquired_at": e.started_at,
                "age_s": max(0.0, rt.now() - e.started_at),
                "alive": True,
                "effects": [],
            }
        )
    return rows


def release(rt: Runtime, key: str, *, force: bool = False) -> str:
    task = rt.task(key)
    name = lease_names.task(task.key)
    lease = rt.store.get_lease(name)
    if lease is None:
        return f"{key}: no lease held"
    alive = is_alive(lease.owner)
    if alive and not force:
        raise Busy(
            f"{name} is held by a live owner ({lease.actor}, {lease.owner.label()}): "
            "pass --force to release it anyway"
        )
    rt.store.release_lease(
        name,
        owner=None,
        now=rt.now(),
        audit=Audit(
            task.id,
            rt.actor,
            "lease_released_by_hand",
            {"lease": name, "owner": lease.owner.as_dict(), "owner_alive": alive, "forced": force},
        ),
    )
    return f"{key}: released {name} (owner was {'alive' if alive else 'dead'})"
