"""The inbox: every webhook delivery committed (durably) before it is acknowledged, then
claimed and processed once by whichever drain gets it."""

from __future__ import annotations

import json
from typing import Any

from orch.identity import Owner, is_alive, judged_alive
from orch.identity import host as identity_host
from orch.store.backend import Database
from orch.store.models import InboxItem, InboxRow
from orch.store.rows import record, records

_UNCLAIM = "claimed_at = NULL, claim_host = NULL, claim_boot = NULL, claim_pid = NULL, claim_start = NULL"


def _claim_lapsed(r: Any, now: float, claim_s: float, ceiling_s: float) -> bool:
    """May an inbox claim be taken over? (See InboxStore.inbox_claim.)"""
    age = now - float(r["claimed_at"])
    if age >= ceiling_s:
        return True
    if not r["claim_host"]:  # a claim from before claimers were recorded
        return age >= claim_s
    claimer = Owner(r["claim_host"], r["claim_boot"] or "", int(r["claim_pid"] or 0), r["claim_start"] or "")
    if claimer.host != identity_host():
        # A shared store's sessions may say (PostgreSQL: a relay on another host that
        # died, or that the server dropped); with nobody to say, the claim ages out.
        verdict = judged_alive(claimer)
        return age >= claim_s if verdict is None else not verdict
    return not is_alive(claimer)


def _text(value: str, limit: int) -> str:
    """`value` as text SQLite can store: lone surrogates and NULs escaped, length capped."""
    value = value[:limit]
    if value.isascii() and "\x00" not in value:
        return value
    return value.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")


class InboxStore:
    db: Database

    def inbox_put(
        self,
        *,
        source: str,
        event: str,
        delivery: str | None,
        digest: str,
        headers: dict[str, str],
        body: bytes,
        now: float,
    ) -> tuple[int, bool]:
        """Commit a delivery durably (before it is acknowledged). Returns (id, new).

        Not exclusive: the inbox's unique keys refuse a second copy of a delivery (a
        concurrent insert of it is waited for, then found), so a 202 does not wait for
        every other write of the store."""
        with self.db.write(durable=True, exclusive=False) as c:
            got = c.execute(
                "INSERT INTO inbox (source, event, delivery, digest, headers, body, received_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING RETURNING id",
                (source, event, delivery, digest, json.dumps(headers, sort_keys=True), body, now),
            ).fetchall()
            if got:
                return int(got[0][0]), True
            r = c.execute(
                "SELECT id FROM inbox WHERE source = ? "
                "AND (digest = ? OR (delivery IS NOT NULL AND delivery = ?))",
                (source, digest, delivery),
            ).fetchone()
            return int(r[0]), False

    def inbox_claim(
        self,
        *,
        now: float,
        owner: Owner | None = None,
        claim_s: float = 300.0,
        ceiling_s: float = 14400.0,
    ) -> InboxItem | None:
        """The oldest due delivery, claimed for processing by `owner`.

        A claim holds while its claimer lives, judged by identity as for leases: one whose
        claimer is gone (this host: process missing, pid reused, or an older boot; another
        host: its database sessions all ended, on PostgreSQL) is taken at once. A claim by
        another host that nothing here can judge lapses after `claim_s`; any claim lapses
        after `ceiling_s` (the reaper's hard limit).
        """
        due = "state IN ('pending', 'failed') AND next_at <= ?"
        with self.db.write() as c:
            # INDEXED BY: SQLite's planner does not pick the partial index by itself, even
            # after ANALYZE (not portable SQL; a PostgreSQL store would not need the hint).
            # Claimed rows are few (one per running drain, plus any left by a dead one).
            claimed = c.execute(
                "SELECT id, claimed_at, claim_host, claim_boot, claim_pid, claim_start "
                f"FROM inbox INDEXED BY inbox_claimed WHERE {due} AND claimed_at IS NOT NULL ORDER BY id",
                (now,),
            ).fetchall()
            free = c.execute(
                f"SELECT id FROM inbox INDEXED BY inbox_open WHERE {due} AND claimed_at IS NULL "
                "ORDER BY id LIMIT 1",
                (now,),
            ).fetchone()
            ids = [r["id"] for r in claimed if _claim_lapsed(r, now, claim_s, ceiling_s)]
            if free is not None:
                ids.append(free[0])
            if not ids:
                return None
            pick = min(ids)
            me = owner or Owner("", "", 0, "")
            c.execute(
                "UPDATE inbox SET claimed_at = ?, attempts = attempts + 1, claim_host = ?, "
                "claim_boot = ?, claim_pid = ?, claim_start = ? WHERE id = ?",
                (now, me.host or None, me.boot_id or None, me.pid or None, me.start_time or None, pick),
            )
            row = c.execute("SELECT * FROM inbox WHERE id = ?", (pick,)).fetchone()
        return record(InboxItem, row)

    def inbox_release_claims(self, owner: Owner) -> int:
        """Drop the claims `owner` holds on open deliveries (a drain restarting in a process
        that lives on: its claims would otherwise look held)."""
        with self.db.write() as c:
            cur = c.execute(
                "UPDATE inbox SET claimed_at = NULL, claim_host = NULL, claim_boot = NULL, "
                "claim_pid = NULL, claim_start = NULL WHERE state IN ('pending', 'failed') "
                "AND claimed_at IS NOT NULL AND claim_host = ? AND claim_boot = ? AND claim_pid = ? "
                "AND claim_start = ?",
                (owner.host, owner.boot_id, owner.pid, owner.start_time),
            )
            return cur.rowcount

    def inbox_done(self, item_id: int, *, now: float, result: str) -> None:
        with self.db.write(exclusive=False) as c:  # one row, by its id
            c.execute(
                "UPDATE inbox SET state = 'done', processed_at = ?, result = ?, error = NULL, "
                f"{_UNCLAIM} WHERE id = ?",
                (now, _text(result, 1000), item_id),
            )

    def inbox_failed(self, item_id: int, *, now: float, error: str, retry_at: float | None) -> None:
        """Failed: tried again at retry_at, or parked (retry_at None) until a person retries it."""
        state = "failed" if retry_at is not None else "parked"
        with self.db.write(exclusive=False) as c:  # one row, by its id
            c.execute(
                f"UPDATE inbox SET state = ?, error = ?, next_at = ?, {_UNCLAIM} WHERE id = ?",
                (state, _text(error, 1000), retry_at or 0, item_id),
            )

    def inbox_set(self, item_id: int, *, state: str, now: float) -> bool:
        """A person's retry (back to pending) or drop."""
        with self.db.write() as c:
            cur = c.execute(
                f"UPDATE inbox SET state = ?, next_at = 0, {_UNCLAIM}, "
                "attempts = CASE WHEN ? = 'pending' THEN 0 ELSE attempts END WHERE id = ?",
                (state, state, item_id),
            )
            return cur.rowcount == 1

    def inbox_rows(self, *, states: tuple[str, ...] | None = None, limit: int = 200) -> list[InboxRow]:
        """Deliveries, newest first (without their bodies)."""
        sql = (
            "SELECT id, source, event, delivery, received_at, state, attempts, next_at, error, result, "
            "processed_at, claimed_at, claim_host, claim_boot, claim_pid, claim_start FROM inbox"
        )
        params: list[Any] = []
        if states:
            sql += f" WHERE state IN ({','.join('?' * len(states))})"
            params.extend(states)
        params.append(limit)
        return records(InboxRow, self.db.read(sql + " ORDER BY id DESC LIMIT ?", params))

    def inbox_count(self) -> dict[str, int]:
        return {r[0]: r[1] for r in self.db.read("SELECT state, count(*) FROM inbox GROUP BY state")}
