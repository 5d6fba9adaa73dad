"""Rows to records: how a database row becomes the named tuple the engine gets."""

from __future__ import annotations

from typing import Any

from orch.identity import Owner
from orch.store.models import EffectRow, Job, Lease, Task


def owner_of(r: Any, prefix: str = "owner_") -> Owner:
    return Owner(r[f"{prefix}host"], r[f"{prefix}boot"], r[f"{prefix}pid"], r[f"{prefix}start"])


def owner_params(o: Owner) -> tuple[str, str, int, str]:
    """An owner as the four values of `owner_host, owner_boot, owner_pid, owner_start`."""
    return (o.host, o.boot_id, o.pid, o.start_time)


def task(r: Any) -> Task:
    return Task(
        id=r["id"],
        key=r["key"],
        title=r["title"],
        repo=r["repo"],
        stage=r["stage"],
        version=r["version"],
        retries=r["retries"],
        blocked=bool(r["blocked"]),
        block_reason=r["block_reason"],
        escalated=bool(r["escalated"]),
        created_at=r["created_at"],
        updated_at=r["updated_at"],
        waiting_on=r["waiting_on"],
        tracker_ref=r["tracker_ref"],
    )


def lease(r: Any) -> Lease:
    return Lease(
        name=r["name"],
        owner=owner_of(r),
        actor=r["actor"],
        purpose=r["purpose"],
        acquired_at=r["acquired_at"],
    )


def effect(r: Any) -> EffectRow:
    return EffectRow(
        task_id=r["task_id"],
        transition=r["transition"],
        effect=r["effect"],
        state=r["state"],
        attempts=r["attempts"],
        owner=owner_of(r),
        started_at=r["started_at"],
        ended_at=r["ended_at"],
        result=r["result"],
        proc_pid=r["proc_pid"],
        proc_pgid=r["proc_pgid"],
        proc_start=r["proc_start"],
        acting=bool(r["acting"]),
    )


def job(r: Any) -> Job:
    return Job(
        id=r["id"],
        task_id=r["task_id"],
        agent=r["agent"],
        stage=r["stage"],
        task_version=r["task_version"],
        attempt=r["attempt"],
        state=r["state"],
        priority=r["priority"],
        queued_at=r["queued_at"],
        started_at=r["started_at"],
        ended_at=r["ended_at"],
        deadline=r["deadline"],
        owner=owner_of(r) if r["owner_pid"] is not None else None,
        pgid=r["pgid"],
        pgid_start=r["pgid_start"],
        exit_code=r["exit_code"],
        reason=r["reason"],
        log_path=r["log_path"],
        head_sha=r["head_sha"],
        ready=bool(r["ready"]),
        not_before=r["not_before"],
        note=r["note"],
    )
