"""Agent jobs: queued, claimed within the concurrency limits, run, finished."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from orch.identity import Owner
from orch.store.audit import write_audit
from orch.store.backend import Database, JobClaim, Tx
from orch.store.models import Audit, Job
from orch.store.rows import record, records

TERMINAL_JOB_STATES = ("succeeded", "failed", "timed_out", "stalled", "cancelled", "reaped")


def enqueue_in(
    c: Tx,
    *,
    task_id: int,
    agent: str,
    stage: str,
    task_version: int,
    now: float,
    attempt: int = 1,
    not_before: float = 0.0,
    note: str | None = None,
) -> int | None:
    """Queue a job inside `c`; None when this attempt of this visit is queued already."""
    # ready mirrors the task's waiting_on at insert; release_dependents keeps it true.
    # (The WHERE before ON CONFLICT is what keeps SQLite's parser from reading the upsert
    # as a join constraint.)
    got = c.execute(
        "INSERT INTO jobs (task_id, agent, stage, task_version, attempt, state, queued_at, "
        "not_before, note, ready) SELECT ?, ?, ?, ?, ?, 'queued', ?, ?, ?, "
        "CASE WHEN waiting_on = 0 THEN 1 ELSE 0 END FROM tasks WHERE id = ? "
        "ON CONFLICT DO NOTHING RETURNING id",
        (task_id, agent, stage, task_version, attempt, now, not_before, note, task_id),
    ).fetchall()
    return int(got[0][0]) if got else None


class JobStore:
    db: Database

    def enqueue_job(
        self,
        *,
        task_id: int,
        agent: str,
        stage: str,
        task_version: int,
        now: float,
        attempt: int = 1,
        not_before: float = 0.0,
        note: str | None = None,
        audit: Audit | None = None,
    ) -> Job | None:
        """Queue a job; None if that visit already has this attempt (idempotent)."""
        with self.db.write() as c:
            job_id = enqueue_in(
                c,
                task_id=task_id,
                agent=agent,
                stage=stage,
                task_version=task_version,
                now=now,
                attempt=attempt,
                not_before=not_before,
                note=note,
            )
            if job_id is None:
                return None
            if audit is not None:
                write_audit(c, audit, now)
            r = c.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return record(Job, r)

    def claim_job(
        self,
        *,
        owner: Owner,
        now: float,
        log_dir: Path,
        max_running: int,
        agent_limits: dict[str, int] | None = None,
        deps_enabled: bool = True,
        job_id: int | None = None,
        timeouts: dict[str, float] | None = None,
    ) -> Job | None:
        """Claim one queued job in one transaction: the next by priority then age, or `job_id`.

        Refuses when `max_running` jobs run already or the job's agent is at its own limit.
        A job whose task waits on a dependency (ready = 0) is never chosen and holds no slot.
        Claims are serialised with each other (the counts decide). A backend with a
        `server_claim` runs its own twin of the statement below (PostgreSQL: a function,
        which passes over a job row another write holds); the contract tests hold both.
        """
        claim = JobClaim(
            owner=owner,
            now=now,
            log_prefix=str(log_dir / "job-"),
            max_running=max_running,
            agent_limits=tuple((agent, limit) for agent, limit in (agent_limits or {}).items() if limit),
            deps_enabled=deps_enabled,
            job_id=job_id,
            timeouts=tuple((timeouts or {}).items()),
        )
        on_server = self.db.server_claim
        row = on_server(claim) if on_server is not None else self._claim_here(claim)
        return None if row is None else record(Job, row)

    def _claim_here(self, claim: JobClaim) -> Any | None:
        # One statement picks and takes the job, with the limits counted inside it. Without
        # dependencies the next job comes from jobs_queued (schema v11): SQLite's planner,
        # with no statistics, would rather search jobs_claim by state and sort every queued
        # job (66 ms with 100,000 queued, under the write lock).
        source = "jobs"
        if not claim.deps_enabled and claim.job_id is None:
            source = "jobs INDEXED BY jobs_queued"
        pick = f"SELECT id FROM {source} WHERE state = 'queued' AND not_before <= ?"
        params: list[Any] = [claim.now]
        if claim.deps_enabled:
            pick += " AND ready = 1"
        if claim.job_id is not None:
            pick += " AND id = ?"
            params.append(claim.job_id)
        if claim.agent_limits:
            each = " UNION ALL ".join(
                ["SELECT CAST(? AS TEXT) AS agent, CAST(? AS INTEGER) AS n"] * len(claim.agent_limits)
            )
            pick += (
                f" AND agent NOT IN (SELECT l.agent FROM ({each}) l WHERE (SELECT count(*) FROM jobs r "
                "WHERE r.state = 'running' AND r.agent = l.agent) >= l.n)"
            )
            params.extend(v for pair in claim.agent_limits for v in pair)
        pick += " AND (SELECT count(*) FROM jobs WHERE state = 'running') < ?"
        params.append(claim.max_running)
        pick += " ORDER BY priority DESC, id LIMIT 1"
        deadline = "NULL"
        if claim.timeouts:
            deadline = f"? + CASE agent {' '.join(['WHEN ? THEN ?'] * len(claim.timeouts))} ELSE NULL END"
        o = claim.owner
        took: list[Any] = [claim.now, o.host, o.boot_id, o.pid, o.start_time, claim.log_prefix]
        if claim.timeouts:
            took.append(claim.now)
            took.extend(v for pair in claim.timeouts for v in pair)
        with self.db.write() as c:
            row = c.execute(
                "UPDATE jobs SET state = 'running', started_at = ?, owner_host = ?, owner_boot = ?, "
                f"owner_pid = ?, owner_start = ?, log_path = ? || id || '.log', deadline = {deadline} "
                f"WHERE id = ({pick}) RETURNING *",
                [*took, *params],
            ).fetchone()
            if row is None:
                return None
            write_audit(
                c,
                Audit(
                    row["task_id"],
                    o.label(),
                    "job_claimed",
                    {"job": row["id"], "agent": row["agent"], "attempt": row["attempt"]},
                ),
                claim.now,
            )
        return row

    def claimable_count(self, *, now: float, deps_enabled: bool = True) -> int:
        sql = "SELECT count(*) FROM (SELECT 1 FROM jobs WHERE state = 'queued' AND not_before <= ?"
        sql += " AND ready = 1" if deps_enabled else ""
        r = self.db.one(sql + " LIMIT 1000)", (now,))
        return int(r[0]) if r else 0

    def running_count(self) -> int:
        r = self.db.one("SELECT count(*) FROM jobs WHERE state = 'running'")
        return int(r[0]) if r else 0

    def finish_job(
        self,
        job_id: int,
        *,
        state: str,
        exit_code: int | None,
        reason: str,
        now: float,
        head_sha: str | None,
        audit: Audit,
        owner: Owner | None = None,
    ) -> bool:
        """End a running job; only if it is still running (under `owner`, when given)."""
        assert state in TERMINAL_JOB_STATES
        with self.db.write() as c:
            sql = (
                "UPDATE jobs SET state = ?, exit_code = ?, reason = ?, ended_at = ?, head_sha = ? "
                "WHERE id = ? AND state IN ('running', 'queued')"
            )
            params: list[Any] = [state, exit_code, reason, now, head_sha, job_id]
            if owner is not None:
                sql += " AND owner_pid = ? AND owner_start = ? AND owner_boot = ?"
                params += [owner.pid, owner.start_time, owner.boot_id]
            if c.execute(sql, params).rowcount != 1:
                return False
            write_audit(c, audit, now)
        return True

    def set_job_process(self, job_id: int, *, pgid: int, pgid_start: str | None) -> None:
        with self.db.write() as c:
            c.execute("UPDATE jobs SET pgid = ?, pgid_start = ? WHERE id = ?", (pgid, pgid_start, job_id))

    def get_job(self, job_id: int) -> Job | None:
        r = self.db.one("SELECT * FROM jobs WHERE id = ?", (job_id,))
        return record(Job, r) if r else None

    def latest_job(self, task_id: int, agent: str, task_version: int) -> Job | None:
        r = self.db.one(
            "SELECT * FROM jobs WHERE task_id = ? AND agent = ? AND task_version = ? "
            "ORDER BY attempt DESC LIMIT 1",
            (task_id, agent, task_version),
        )
        return record(Job, r) if r else None

    def jobs(self, *, task_id: int | None = None, states: tuple[str, ...] | None = None) -> list[Job]:
        sql, params = "SELECT * FROM jobs WHERE 1=1", list[Any]()
        if task_id is not None:
            sql += " AND task_id = ?"
            params.append(task_id)
        if states:
            sql += f" AND state IN ({','.join('?' * len(states))})"
            params.extend(states)
        return records(Job, self.db.read(sql + " ORDER BY id", params))

    def active_job(self, task_id: int) -> Job | None:
        r = self.db.one(
            "SELECT * FROM jobs WHERE task_id = ? AND state IN ('queued', 'running') ORDER BY id LIMIT 1",
            (task_id,),
        )
        return record(Job, r) if r else None
