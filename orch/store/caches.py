"""What orch remembers beside its tasks: verdicts, commit statuses (the local forge's CI),
tracker states, request budgets and holds shared by every process, and facts."""

from __future__ import annotations

import json
from typing import Any

from orch.store.audit import write_audit
from orch.store.backend import Database
from orch.store.models import Audit, Verdict
from orch.store.rows import record


class CacheStore:
    db: Database

    def add_verdict(self, v: Verdict, *, audit: Audit) -> None:
        with self.db.write() as c:
            c.execute(
                "INSERT INTO verdicts (task_id, task_version, stage, sha, verdict, actor, reason, at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (v.task_id, v.task_version, v.stage, v.sha, v.verdict, v.actor, v.reason, v.at),
            )
            write_audit(c, audit, v.at)

    def latest_verdict(self, task_id: int, task_version: int) -> Verdict | None:
        r = self.db.one(
            "SELECT * FROM verdicts WHERE task_id = ? AND task_version = ? ORDER BY id DESC LIMIT 1",
            (task_id, task_version),
        )
        return record(Verdict, r) if r else None

    # -- commit statuses (the local forge's CI results) ----------------------------

    def set_commit_status(
        self, *, repo: str, sha: str, context: str, state: str, description: str | None, now: float
    ) -> None:
        with self.db.write() as c:
            c.execute(
                "INSERT INTO commit_statuses (repo, sha, context, state, description, at) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (repo, sha, context) DO UPDATE SET "
                "state = excluded.state, description = excluded.description, at = excluded.at",
                (repo, sha, context, state, description, now),
            )

    def commit_statuses(self, repo: str, sha: str) -> list[tuple[str, str, str | None]]:
        found = self.db.read(
            "SELECT context, state, description FROM commit_statuses WHERE repo = ? AND sha = ? "
            "ORDER BY context",
            (repo, sha),
        )
        return [(r[0], r[1], r[2]) for r in found]

    # -- tracker state cache ---------------------------------------------------------

    def cache_states(self, project: str, states: list[tuple[str, str, str]], *, now: float) -> None:
        """Replace the cached states (id, name, group) of a tracker project. One id may come
        with several names (an aliased state): each is kept; an exact duplicate once."""
        with self.db.write() as c:
            c.execute("DELETE FROM tracker_states WHERE project = ?", (project,))
            c.executemany(
                "INSERT INTO tracker_states (project, id, name, grp, fetched_at) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                [(project, i, n, g, now) for i, n, g in states],
            )

    def cached_states(self, project: str) -> tuple[list[tuple[str, str, str]], float | None]:
        """The cached states of a project and when they were fetched (None: never)."""
        found = self.db.read(
            "SELECT id, name, grp, fetched_at FROM tracker_states WHERE project = ? ORDER BY name, id",
            (project,),
        )
        if not found:
            return [], None
        return [(r[0], r[1], r[2]) for r in found], float(min(r[3] for r in found))

    # -- request budgets and holds (rate limits shared by every process) ---------------

    def rate_take(self, bucket: str, window: int, limit: int, *, prev_weight: float = 0.0) -> bool:
        """Count one request in `bucket` for `window` unless that would pass `limit`, where
        the count is this window's plus `prev_weight` times the previous one's (a sliding
        window: the share of the last window still inside the period). False, with nothing
        counted, when full. Windows older than the previous one are dropped."""
        with self.db.write() as c:
            c.execute("DELETE FROM rate_windows WHERE bucket = ? AND minute < ?", (bucket, window - 1))
            rows = dict(
                c.execute(
                    "SELECT minute, used FROM rate_windows WHERE bucket = ? AND minute IN (?, ?)",
                    (bucket, window - 1, window),
                ).fetchall()
            )
            if rows.get(window, 0) + prev_weight * rows.get(window - 1, 0) + 1 > limit:
                return False
            c.execute(
                "INSERT INTO rate_windows (bucket, minute, used) VALUES (?, ?, 1) "
                "ON CONFLICT (bucket, minute) DO UPDATE SET used = rate_windows.used + 1",
                (bucket, window),
            )
            return True

    def rate_used(self, bucket: str, window: int) -> int:
        row = self.db.one("SELECT used FROM rate_windows WHERE bucket = ? AND minute = ?", (bucket, window))
        return int(row[0]) if row else 0

    def hold_set(
        self, name: str, *, until: float, value: str | None = None, reason: str | None = None
    ) -> None:
        """Record a hold; a later `until` wins, a `value` given replaces the old one."""
        with self.db.write() as c:
            c.execute(
                "INSERT INTO holds (name, until, value, reason) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (name) DO UPDATE SET "
                "until = CASE WHEN excluded.until > holds.until THEN excluded.until ELSE holds.until END, "
                "value = coalesce(excluded.value, holds.value), "
                "reason = coalesce(excluded.reason, holds.reason)",
                (name, until, value, reason),
            )

    def hold_get(self, name: str) -> tuple[float, str | None] | None:
        """(until, value) of a hold, or None."""
        row = self.db.one("SELECT until, value FROM holds WHERE name = ?", (name,))
        return (float(row[0]), row[1]) if row else None

    def set_fact(self, name: str, value: Any, *, now: float) -> None:
        with self.db.write() as c:
            c.execute(
                "INSERT INTO facts (name, value, at) VALUES (?, ?, ?) "
                "ON CONFLICT (name) DO UPDATE SET value = excluded.value, at = excluded.at",
                (name, json.dumps(value, sort_keys=True, default=str), now),
            )

    def fact(self, name: str) -> tuple[Any, float] | None:
        r = self.db.one("SELECT value, at FROM facts WHERE name = ?", (name,))
        return (json.loads(r[0]), float(r[1])) if r else None

    def facts_since(self, prefix: str, since: float) -> dict[str, tuple[Any, float]]:
        """The facts named `prefix...` written after `since`, by name (one read of a key range)."""
        found = self.db.read(
            "SELECT name, value, at FROM facts WHERE name >= ? AND name < ? AND at > ?",
            (prefix, prefix + "\uffff", since),
        )
        return {r[0]: (json.loads(r[1]), float(r[2])) for r in found}
