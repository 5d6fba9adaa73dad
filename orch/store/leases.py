"""Leases (a name held by a live owner, no TTL) and each repository's merge line."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from orch.identity import Owner, is_alive
from orch.store.audit import write_audit
from orch.store.backend import Database
from orch.store.models import Audit, Lease
from orch.store.rows import record, records


def _reclaimed(task_id: int, actor: str, dead: Lease) -> Audit:
    return Audit(
        task_id,
        actor,
        "lease_reclaimed",
        {"lease": dead.name, "dead_owner": dead.owner.as_dict(), "dead_actor": dead.actor},
    )


class LeaseStore:
    db: Database

    def get_lease(self, name: str) -> Lease | None:
        r = self.db.one("SELECT * FROM leases WHERE name = ?", (name,))
        return record(Lease, r) if r else None

    def list_leases(self) -> list[Lease]:
        return records(Lease, self.db.read("SELECT * FROM leases ORDER BY acquired_at"))

    def acquire_lease(
        self,
        name: str,
        *,
        owner: Owner,
        actor: str,
        purpose: str,
        now: float,
        audit_task: int | None = None,
        alive: Callable[[Owner], bool] = is_alive,
        detail: dict[str, Any] | None = None,
    ) -> tuple[bool, Lease | None]:
        """Take `name` for `owner`. Returns (acquired, holder-or-reclaimed-from).

        (True, None): taken fresh or already ours. (True, old): reclaimed from a dead
        owner, audited. (False, holder): a live owner holds it; nothing written.
        """
        # Read first, outside any transaction: a loser of a race learns it lost without
        # taking the write lock that the winner needs next (WAL readers never block).
        seen = self.db.one("SELECT * FROM leases WHERE name = ?", (name,))
        if seen is not None:
            current = record(Lease, seen)
            if current.owner != owner and alive(current.owner):
                return False, current
        with self.db.write() as c:
            r = c.execute("SELECT * FROM leases WHERE name = ?", (name,)).fetchone()
            held = record(Lease, r) if r else None
            if held is not None:
                if held.owner == owner:
                    return True, None
                if alive(held.owner):
                    return False, held
                c.execute("DELETE FROM leases WHERE name = ?", (name,))
                if audit_task is not None:
                    write_audit(c, _reclaimed(audit_task, actor, held), now)
            c.execute(
                "INSERT INTO leases (name, owner_host, owner_boot, owner_pid, owner_start, actor, "
                "purpose, acquired_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (name, owner.host, owner.boot_id, owner.pid, owner.start_time, actor, purpose, now),
            )
            if audit_task is not None:
                write_audit(
                    c, Audit(audit_task, actor, "lease_acquired", {"lease": name, **(detail or {})}), now
                )
        return True, held

    def release_lease(
        self, name: str, *, owner: Owner | None, now: float, audit: Audit | None = None
    ) -> bool:
        """Release `name`; only if held by `owner` unless owner is None (forced)."""
        with self.db.write() as c:
            if owner is None:
                cur = c.execute("DELETE FROM leases WHERE name = ?", (name,))
            else:
                cur = c.execute(
                    "DELETE FROM leases WHERE name = ? AND owner_host = ? AND owner_boot = ? "
                    "AND owner_pid = ? AND owner_start = ?",
                    (name, owner.host, owner.boot_id, owner.pid, owner.start_time),
                )
            if cur.rowcount and audit is not None:
                write_audit(c, audit, now)
            return cur.rowcount == 1

    def dead_leases(self, names: tuple[str, ...], alive: Callable[[Owner], bool] = is_alive) -> list[Lease]:
        """Those of `names` held by a dead owner: one read, free when none is held."""
        found = self.db.read(f"SELECT * FROM leases WHERE name IN ({','.join('?' * len(names))})", names)
        return [lease for lease in records(Lease, found) if not alive(lease.owner)]

    def clear_dead_lease(
        self,
        name: str,
        *,
        actor: str,
        now: float,
        audit_task: int | None,
        alive: Callable[[Owner], bool] = is_alive,
    ) -> Lease | None:
        """Remove `name` if its owner is dead; returns the removed lease. Reads first: free when absent."""
        held = self.get_lease(name)
        if held is None or alive(held.owner):
            return None
        with self.db.write() as c:
            cur = c.execute(
                "DELETE FROM leases WHERE name = ? AND owner_pid = ? AND owner_start = ? AND owner_boot = ?",
                (name, held.owner.pid, held.owner.start_time, held.owner.boot_id),
            )
            if cur.rowcount and audit_task is not None:
                write_audit(c, _reclaimed(audit_task, actor, held), now)
        return held if cur.rowcount else None

    def take_merge_line(
        self, repo: str, *, task_id: int, stage: str, version: int, now: float, max_age_s: float
    ) -> int | None:
        """Take (or keep) `repo`'s merge line for this task visit; returns the id of the
        task that holds it instead, or None when it is ours. A holder that left its visit
        (merged, sent back, cancelled), is blocked, or has held it past `max_age_s` loses it."""
        with self.db.write() as c:
            r = c.execute("SELECT * FROM merge_line WHERE repo = ?", (repo,)).fetchone()
            if r is not None and (r["task_id"], r["task_version"]) == (task_id, version):
                return None
            if r is not None and now - r["since"] < max_age_s:
                h = c.execute(
                    "SELECT stage, version, blocked FROM tasks WHERE id = ?", (r["task_id"],)
                ).fetchone()
                if (
                    h is not None
                    and (h["stage"], h["version"]) == (stage, r["task_version"])
                    and not h["blocked"]
                ):
                    return int(r["task_id"])
            c.execute(
                "INSERT INTO merge_line (repo, task_id, task_version, since) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (repo) DO UPDATE SET task_id = excluded.task_id, "
                "task_version = excluded.task_version, since = excluded.since",
                (repo, task_id, version, now),
            )
            return None

    def merge_line_holder(self, repo: str) -> tuple[int, int, float] | None:
        r = self.db.one("SELECT task_id, task_version, since FROM merge_line WHERE repo = ?", (repo,))
        return (int(r[0]), int(r[1]), float(r[2])) if r else None
