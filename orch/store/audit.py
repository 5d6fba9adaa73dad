"""The audit trail: one row per thing that happened to a task (`orch history`)."""

from __future__ import annotations

from orch.store.backend import Database, Tx
from orch.store.models import Audit, AuditRow
from orch.store.rows import records


def write_audit(c: Tx, a: Audit, now: float) -> None:
    """Write `a` inside the transaction `c` that makes the change it reports."""
    c.execute(
        "INSERT INTO transitions (task_id, at, actor, event, from_stage, to_stage, detail) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        (a.task_id, now, a.actor, a.event, a.from_stage, a.to_stage, a.detail_json()),
    )


class AuditStore:
    db: Database

    def audit(self, a: Audit, *, now: float) -> None:
        with self.db.write() as c:
            write_audit(c, a, now)

    def history(self, task_id: int) -> list[AuditRow]:
        return records(
            AuditRow, self.db.read("SELECT * FROM transitions WHERE task_id = ? ORDER BY id", (task_id,))
        )

    def count_events(self, task_id: int, event: str) -> int:
        r = self.db.one("SELECT count(*) FROM transitions WHERE task_id = ? AND event = ?", (task_id, event))
        return int(r[0]) if r else 0
