"""Leases as operators see them: show, and release by hand (always audited)."""

from __future__ import annotations

from typing import Any

from orch.engine.runtime import Runtime, task_lease
from orch.errors import Busy
from orch.identity import is_alive
from orch.store import Audit


def show(rt: Runtime, key: str | None = None) -> list[dict[str, Any]]:
    if key is not None:
        lease = rt.store.get_lease(task_lease(rt.task(key)))
        leases = [lease] if lease else []
    else:
        leases = rt.store.list_leases()
    return [
        {
            **lease.as_dict(),
            "age_s": max(0.0, rt.now() - lease.acquired_at),
            "alive": is_alive(lease.owner),
        }
        for lease in leases
    ]


def release(rt: Runtime, key: str, *, force: bool = False) -> str:
    task = rt.task(key)
    name = task_lease(task)
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
