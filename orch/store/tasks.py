"""Tasks, and the one write of a stage: `commit_transition`'s compare-and-swap."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from orch.errors import KeyTaken
from orch.store.audit import write_audit
from orch.store.backend import Database
from orch.store.deps import release_dependents
from orch.store.jobs import enqueue_in
from orch.store.models import Audit, EffectRow, StageChange, Task
from orch.store.outbox import notify_in
from orch.store.rows import record, records


class TaskStore:
    db: Database

    def add_task(
        self,
        *,
        title: str,
        repo: str,
        stage: str,
        now: float,
        key: str | None,
        key_prefix: str,
        actor: str,
        agent: str | None = None,
    ) -> Task:
        """Insert a task; with no key, the key is `<prefix>-<id>`. A taken key is KeyTaken.

        With `agent`, the task's first job is queued in the same transaction: a failure
        between the two can never leave a task that no actor would ever give a job."""
        with self.db.write() as c:
            placeholder = key or f"pending-{random.getrandbits(64):x}"
            got = c.execute(
                "INSERT INTO tasks (key, title, repo, stage, created_at, updated_at) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (key) DO NOTHING RETURNING id",
                (placeholder, title, repo, stage, now, now),
            ).fetchall()
            if not got:
                raise KeyTaken(placeholder)
            task_id = int(got[0][0])
            if key is None:
                key = f"{key_prefix}-{task_id}"
                cur = c.execute(
                    "UPDATE tasks SET key = ? WHERE id = ? "
                    "AND NOT EXISTS (SELECT 1 FROM tasks WHERE key = ?)",
                    (key, task_id, key),
                )
                if cur.rowcount != 1:
                    raise KeyTaken(key)
            write_audit(
                c,
                Audit(task_id, actor, "created", {"title": title, "repo": repo}, None, stage),
                now,
            )
            if agent:
                enqueue_in(c, task_id=task_id, agent=agent, stage=stage, task_version=1, now=now)
            row = c.execute("SELECT * FROM tasks WHERE id = ?", (task_id,)).fetchone()
        return record(Task, row)

    def get_task(self, key: str) -> Task | None:
        r = self.db.one("SELECT * FROM tasks WHERE key = ?", (key,))
        return record(Task, r) if r else None

    def get_task_by_id(self, task_id: int) -> Task | None:
        r = self.db.one("SELECT * FROM tasks WHERE id = ?", (task_id,))
        return record(Task, r) if r else None

    def list_tasks(self, *, stage: str | None = None, limit: int = 1000) -> list[Task]:
        if stage:
            found = self.db.read("SELECT * FROM tasks WHERE stage = ? ORDER BY id LIMIT ?", (stage, limit))
        else:
            found = self.db.read("SELECT * FROM tasks ORDER BY id LIMIT ?", (limit,))
        return records(Task, found)

    def quiet_tasks(self, stages: tuple[str, ...], *, older_than: float, limit: int = 10_000) -> list[Task]:
        """Tasks at these stages untouched since `older_than`, with no queued or running job:
        the reconciler's candidates, oldest first (indexed by stage, updated_at)."""
        if not stages:
            return []
        found = self.db.read(
            f"SELECT * FROM tasks WHERE stage IN ({','.join('?' * len(stages))}) AND updated_at <= ? "
            "AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.task_id = tasks.id "
            "AND j.state IN ('queued', 'running')) ORDER BY updated_at LIMIT ?",
            (*stages, older_than, limit),
        )
        return records(Task, found)

    def quiet_count(self, stage: str, *, older_than: float) -> int:
        """How many tasks `quiet_tasks` would return for one stage, without loading them."""
        r = self.db.one(
            "SELECT count(*) FROM tasks WHERE stage = ? AND updated_at <= ? "
            "AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.task_id = tasks.id "
            "AND j.state IN ('queued', 'running'))",
            (stage, older_than),
        )
        return int(r[0]) if r else 0

    def set_blocked(
        self,
        task_id: int,
        *,
        blocked: bool,
        reason: str | None,
        now: float,
        audit: Audit,
        notify: tuple[str, str] | None = None,
        escalated: bool | None = None,
        reset_retries: bool = False,
    ) -> bool:
        """Block or unblock; False if the task already was in that state."""
        with self.db.write() as c:
            sets = "blocked = ?, block_reason = ?, updated_at = ?"
            params: list[Any] = [int(blocked), reason, now]
            if reset_retries:
                sets += ", retries = 0"
            if escalated is not None:
                sets += ", escalated = ?"
                params.append(int(escalated))
            cur = c.execute(
                f"UPDATE tasks SET {sets} WHERE id = ? AND blocked = ?",
                (*params, task_id, int(not blocked)),
            )
            if cur.rowcount != 1:
                return False
            write_audit(c, audit, now)
            if notify:
                notify_in(c, notify[0], task_id, notify[1], now)
        return True

    def commit_transition(
        self,
        change: StageChange,
        *,
        now: float,
        unless_in_flight: Callable[[EffectRow], bool] | None = None,
    ) -> bool:
        """The only write of a stage: compare-and-swap, with its follow-ups in one transaction.

        `change` (built by engine/transition.py) says the move, the stage and version it
        expects, the audit row, the message, and the next job or the escalation.

        The follow-ups (the next agent job, the outbox message, the audit row, releasing
        the tasks that waited on this one when it `release`s them) commit with the CAS or not at
        all, so a crash after the CAS loses none of them. With `unless_in_flight` (a
        cancel), nothing is written while one of the task's effects past its point of no
        return is in flight by that test: checked in the same transaction, so an effect
        either reached that point first (and the cancel waits) or never does.
        """
        task_id = change.task_id
        with self.db.write() as c:
            if unless_in_flight is not None:
                acting = c.execute(
                    "SELECT * FROM effects WHERE task_id = ? AND acting = 1 AND state != 'done'", (task_id,)
                ).fetchall()
                if any(unless_in_flight(record(EffectRow, r)) for r in acting):
                    return False
            cur = c.execute(
                "UPDATE tasks SET stage = ?, version = version + 1, retries = retries + ?, "
                "updated_at = ? WHERE id = ? AND stage = ? AND version = ?",
                (
                    change.to_stage,
                    int(change.retry),
                    now,
                    task_id,
                    change.from_stage,
                    change.expected_version,
                ),
            )
            if cur.rowcount != 1:
                return False
            write_audit(c, change.audit, now)
            if change.escalation:
                c.execute(
                    "UPDATE tasks SET blocked = 1, escalated = 1, block_reason = ? WHERE id = ?",
                    (change.escalation, task_id),
                )
            elif change.job:
                enqueue_in(
                    c,
                    task_id=task_id,
                    agent=change.job.agent,
                    stage=change.to_stage,
                    task_version=change.version,
                    now=now,
                    note=change.job.note,
                )
            if change.message:
                notify_in(c, change.message.key, task_id, change.message.text, now)
            if change.release:
                release_dependents(c, task_id, now, change.audit.actor, change.release)
        return True

    def task_for_ref(self, ref: str) -> Task | None:
        r = self.db.one("SELECT * FROM tasks WHERE tracker_ref = ?", (ref,))
        return record(Task, r) if r else None

    def ensure_task_for_ref(
        self,
        *,
        ref: str,
        key: str,
        title: str,
        repo: str,
        stage: str,
        now: float,
        actor: str,
        agent: str | None,
    ) -> tuple[Task, bool]:
        """The task of a tracker item, created at most once: the unique tracker_ref decides
        between a webhook and the reconciler racing from two processes. The first job is
        queued in the same transaction, so it too exists once. Returns (task, created)."""
        with self.db.write() as c:
            got = c.execute(
                "INSERT INTO tasks (key, title, repo, stage, tracker_ref, created_at, updated_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING RETURNING id",
                (key, title, repo, stage, ref, now, now),
            ).fetchall()
            if not got:
                row = c.execute("SELECT * FROM tasks WHERE tracker_ref = ?", (ref,)).fetchone()
                if row is None:  # the key is taken by another item: a configuration problem
                    raise KeyTaken(key)
                return record(Task, row), False
            task_id = int(got[0][0])
            write_audit(
                c,
                Audit(task_id, actor, "created", {"title": title, "repo": repo, "ref": ref}, None, stage),
                now,
            )
            if agent:
                enqueue_in(c, task_id=task_id, agent=agent, stage=stage, task_version=1, now=now)
            row = c.execute("SELECT * FROM tasks WHERE id = ?", (task_id,)).fetchone()
        return record(Task, row), True

    def counts(self) -> dict[str, Any]:
        """The numbers the queue view shows, in one read each."""
        jobs = {r[0]: r[1] for r in self.db.read("SELECT state, count(*) FROM jobs GROUP BY state")}
        stages = {r[0]: r[1] for r in self.db.read("SELECT stage, count(*) FROM tasks GROUP BY stage")}
        r = self.db.one("SELECT count(*) FROM outbox WHERE sent_at IS NULL")
        blocked = self.db.one("SELECT count(*), sum(escalated) FROM tasks WHERE blocked = 1")
        return {
            "jobs": jobs,
            "stages": stages,
            "outbox_pending": int(r[0]) if r else 0,
            "blocked": int(blocked[0]) if blocked else 0,
            "escalated": int(blocked[1] or 0) if blocked else 0,
        }
