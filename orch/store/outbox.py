"""The outbox: a message is committed before it is sent, and sent at least once.

A message's key is the change it reports, so the same change is queued once, ever.
"""

from __future__ import annotations

import time

from orch.store.backend import Database, Tx
from orch.store.models import Notification, OutboxRow
from orch.store.rows import records

CLAIM_S = 120.0  # an outbox claim older than this belongs to a sender that died


def notify_in(c: Tx, key: str, task_id: int | None, text: str, now: float) -> None:
    # The key is the change being reported: the same change is queued once, ever.
    c.execute(
        "INSERT INTO outbox (key, task_id, text, created_at) VALUES (?, ?, ?, ?) "
        "ON CONFLICT (key) DO NOTHING",
        (key, task_id, text, now),
    )


class OutboxStore:
    db: Database

    def notify(self, key: str, task_id: int | None, text: str, *, now: float) -> None:
        with self.db.write() as c:
            notify_in(c, key, task_id, text, now)

    def pending_notifications(self, limit: int = 100, *, now: float | None = None) -> list[Notification]:
        """Messages due now: unsent, past their backoff, and not claimed by a live sender."""
        now = time.time() if now is None else now
        found = self.db.read(
            "SELECT * FROM outbox WHERE sent_at IS NULL AND next_at <= ? "
            "AND (claimed_at IS NULL OR claimed_at < ?) ORDER BY created_at, key LIMIT ?",
            (now, now - CLAIM_S, limit),
        )
        return records(Notification, found)

    def claim_notification(self, key: str, *, now: float) -> bool:
        """Take a message for sending. The claim expires after CLAIM_S: a sender that died
        mid-send leaves it to the next one (at least once; the key keeps it to one row)."""
        with self.db.write() as c:
            cur = c.execute(
                "UPDATE outbox SET claimed_at = ?, attempts = attempts + 1 WHERE key = ? AND sent_at IS NULL "
                "AND (claimed_at IS NULL OR claimed_at < ?)",
                (now, key, now - CLAIM_S),
            )
            return cur.rowcount == 1

    def notification_attempts(self, key: str) -> int:
        r = self.db.one("SELECT attempts FROM outbox WHERE key = ?", (key,))
        return int(r[0]) if r else 0

    def notification_sent(self, key: str, *, now: float) -> None:
        with self.db.write() as c:
            c.execute("UPDATE outbox SET sent_at = ?, last_error = NULL WHERE key = ?", (now, key))

    def notification_failed(self, key: str, *, now: float, retry_at: float, error: str) -> None:
        with self.db.write() as c:
            c.execute(
                "UPDATE outbox SET claimed_at = NULL, next_at = ?, last_error = ? WHERE key = ?",
                (retry_at, error[:500], key),
            )

    def outbox_rows(self, *, pending_only: bool = True, limit: int = 200) -> list[OutboxRow]:
        sql = "SELECT key, task_id, text, created_at, sent_at, attempts, next_at, last_error FROM outbox"
        if pending_only:
            sql += " WHERE sent_at IS NULL"
        return records(OutboxRow, self.db.read(sql + " ORDER BY created_at LIMIT ?", (limit,)))
