"""The effect ledger: each irreversible effect recorded `started` (durably) before it runs
and ended after; taking over a row is a compare-and-swap on the row that was probed."""

from __future__ import annotations

import json
from typing import Any

from orch.identity import Owner
from orch.store.audit import write_audit
from orch.store.backend import Database, Tx
from orch.store.models import Audit, EffectRow
from orch.store.rows import owner_params, record, records

_STARTED_BY = (
    " AND state = 'started' AND owner_host = ? AND owner_boot = ? AND owner_pid = ? AND owner_start = ?"
)


_SAME_ROW = (
    "task_id = ? AND transition = ? AND effect = ? AND state = ? AND attempts = ? "
    "AND owner_host = ? AND owner_boot = ? AND owner_pid = ? AND owner_start = ?"
)


def _row_key(row: EffectRow) -> tuple[Any, ...]:
    o = row.owner
    return (row.task_id, row.transition, row.effect, row.state, row.attempts, *owner_params(o))


def _at_stage(c: Tx, task_id: int, stage: str, version: int) -> bool:
    r = c.execute("SELECT stage, version FROM tasks WHERE id = ?", (task_id,)).fetchone()
    return r is not None and r["stage"] == stage and r["version"] == version


class LedgerStore:
    db: Database

    def get_effect(self, task_id: int, transition: str, effect: str) -> EffectRow | None:
        r = self.db.one(
            "SELECT * FROM effects WHERE task_id = ? AND transition = ? AND effect = ?",
            (task_id, transition, effect),
        )
        return record(EffectRow, r) if r else None

    def effects_of(self, task_id: int) -> list[EffectRow]:
        found = self.db.read("SELECT * FROM effects WHERE task_id = ? ORDER BY started_at", (task_id,))
        return records(EffectRow, found)

    def started_effects(self) -> list[EffectRow]:
        """Every effect row still marked started (the reaper's and `orch lease show`'s view)."""
        found = self.db.read("SELECT * FROM effects WHERE state = 'started' ORDER BY started_at")
        return records(EffectRow, found)

    def start_effect(
        self,
        task_id: int,
        transition: str,
        effect: str,
        *,
        owner: Owner,
        now: float,
        seen: EffectRow | None,
        stage: str,
        version: int,
        acting: bool = False,
    ) -> tuple[str, EffectRow | None]:
        """Mark an effect started (durably), a compare-and-swap on what the caller saw.

        Returns ("started", seen) when the row was created (seen None) or taken over from
        exactly the row the caller probed (same state, attempts and owner); ("moved", None)
        when the task is no longer at `stage` and `version` (cancelled, moved on): nothing
        starts; ("changed", current) when the row is not the one seen: look again.
        """
        with self.db.write(durable=True) as c:
            if not _at_stage(c, task_id, stage, version):
                return "moved", None
            if seen is None:
                cur = c.execute(
                    "INSERT INTO effects (task_id, transition, effect, state, owner_host, "
                    "owner_boot, owner_pid, owner_start, started_at, acting) "
                    "VALUES (?, ?, ?, 'started', ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                    (task_id, transition, effect, *owner_params(owner), now, int(acting)),
                )
            else:
                cur = c.execute(
                    "UPDATE effects SET state = 'started', attempts = attempts + 1, owner_host = ?, "
                    "owner_boot = ?, owner_pid = ?, owner_start = ?, started_at = ?, ended_at = NULL, "
                    "proc_pid = NULL, proc_pgid = NULL, proc_start = NULL, acting = ? "
                    f"WHERE {_SAME_ROW}",
                    (*owner_params(owner), now, int(acting), *_row_key(seen)),
                )
            if cur.rowcount == 1:
                return "started", seen
            r = c.execute(
                "SELECT * FROM effects WHERE task_id = ? AND transition = ? AND effect = ?",
                (task_id, transition, effect),
            ).fetchone()
            return "changed", record(EffectRow, r) if r else None

    def set_effect_process(
        self,
        task_id: int,
        transition: str,
        effect: str,
        *,
        owner: Owner,
        pid: int,
        pgid: int,
        start: str | None,
    ) -> bool:
        """Record the effect command's process in the row `owner` holds (durably: the
        command waits for this write before it runs)."""
        with self.db.write(durable=True) as c:
            cur = c.execute(
                "UPDATE effects SET proc_pid = ?, proc_pgid = ?, proc_start = ? "
                "WHERE task_id = ? AND transition = ? AND effect = ?" + _STARTED_BY,
                (pid, pgid, start, task_id, transition, effect, *owner_params(owner)),
            )
            return cur.rowcount == 1

    def mark_effect_acting(
        self, task_id: int, transition: str, effect: str, *, owner: Owner, stage: str, version: int
    ) -> bool:
        """The point of no return, taken only while the task is still at `stage` and
        `version` (a cancel committed first wins: the effect then does nothing)."""
        with self.db.write(durable=True) as c:
            if not _at_stage(c, task_id, stage, version):
                return False
            cur = c.execute(
                "UPDATE effects SET acting = 1 "
                "WHERE task_id = ? AND transition = ? AND effect = ?" + _STARTED_BY,
                (task_id, transition, effect, owner.host, owner.boot_id, owner.pid, owner.start_time),
            )
            return cur.rowcount == 1

    def end_effect(
        self,
        task_id: int,
        transition: str,
        effect: str,
        *,
        state: str,
        result: dict[str, Any],
        now: float,
        audit: Audit,
        seen: EffectRow | None = None,
        owner: Owner | None = None,
        forget_process: bool = False,
    ) -> bool:
        """End the row; only if it is still `seen` (a probe's verdict on that row), or still
        started by `owner`, when given. False (nothing written) otherwise.

        `forget_process`: also drop the recorded command's process (a person vouched that
        it no longer runs, on a host nobody here can look at)."""
        ended = "state = ?, result = ?, ended_at = ?"
        if forget_process:
            ended += ", proc_pid = NULL, proc_pgid = NULL, proc_start = NULL"
        sql = f"UPDATE effects SET {ended} WHERE task_id = ? AND transition = ? AND effect = ?"
        text = json.dumps(result, sort_keys=True)
        params: tuple[Any, ...] = (state, text, now, task_id, transition, effect)
        if seen is not None:
            sql = f"UPDATE effects SET {ended} WHERE " + _SAME_ROW
            params = (state, text, now, *_row_key(seen))
        elif owner is not None:
            sql += _STARTED_BY
            params += owner_params(owner)
        with self.db.write(durable=True) as c:
            cur = c.execute(sql, params)
            if cur.rowcount:
                write_audit(c, audit, now)
            return cur.rowcount == 1
