"""The schema, as an ordered list of migrations applied with `sqlite_utils.Migrations`.

`PRAGMA user_version` mirrors the number of migrations applied, so that the hot path
(every cron run, every webhook) can tell "up to date" from one pragma without importing
sqlite_utils (~90 ms of imports). A database whose user_version is higher than
LATEST was written by a newer orch and is refused untouched.

SQL here is kept portable where that costs nothing (a PostgreSQL backend is planned).
"""

from __future__ import annotations

from typing import Any

MIGRATION_SET = "orch"


def _steps(statements: list[str]) -> Any:
    """A migration that runs `statements` in order (inside Migrations' transaction)."""

    def apply(db: Any) -> None:
        for sql in statements:
            db.execute(sql)

    return apply


_V1 = [
    """
    CREATE TABLE tasks (
        id INTEGER PRIMARY KEY,
        key TEXT NOT NULL UNIQUE,
        title TEXT NOT NULL,
        repo TEXT NOT NULL,
        stage TEXT NOT NULL,
        version INTEGER NOT NULL DEFAULT 1,
        retries INTEGER NOT NULL DEFAULT 0,
        blocked INTEGER NOT NULL DEFAULT 0,
        block_reason TEXT,
        escalated INTEGER NOT NULL DEFAULT 0,
        tracker_ref TEXT UNIQUE,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    )
    """,
    "CREATE INDEX tasks_stage ON tasks(stage, updated_at)",
    """
    CREATE TABLE transitions (
        id INTEGER PRIMARY KEY,
        task_id INTEGER NOT NULL REFERENCES tasks(id),
        at REAL NOT NULL,
        actor TEXT NOT NULL,
        event TEXT NOT NULL,
        from_stage TEXT,
        to_stage TEXT,
        detail TEXT NOT NULL DEFAULT '{}'
    )
    """,
    "CREATE INDEX transitions_task ON transitions(task_id, id)",
    """
    CREATE TABLE leases (
        name TEXT PRIMARY KEY,
        owner_host TEXT NOT NULL,
        owner_boot TEXT NOT NULL,
        owner_pid INTEGER NOT NULL,
        owner_start TEXT NOT NULL,
        actor TEXT NOT NULL,
        purpose TEXT NOT NULL,
        acquired_at REAL NOT NULL
    )
    """,
    """
    CREATE TABLE effects (
        task_id INTEGER NOT NULL REFERENCES tasks(id),
        transition TEXT NOT NULL,
        effect TEXT NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('started', 'done', 'failed')),
        attempts INTEGER NOT NULL DEFAULT 1,
        owner_host TEXT NOT NULL,
        owner_boot TEXT NOT NULL,
        owner_pid INTEGER NOT NULL,
        owner_start TEXT NOT NULL,
        started_at REAL NOT NULL,
        ended_at REAL,
        result TEXT,
        PRIMARY KEY (task_id, transition, effect)
    )
    """,
    """
    CREATE TABLE jobs (
        id INTEGER PRIMARY KEY,
        task_id INTEGER NOT NULL REFERENCES tasks(id),
        agent TEXT NOT NULL,
        stage TEXT NOT NULL,
        task_version INTEGER NOT NULL,
        attempt INTEGER NOT NULL DEFAULT 1,
        state TEXT NOT NULL CHECK (state IN
            ('queued', 'running', 'succeeded', 'failed', 'timed_out', 'stalled',
             'cancelled', 'reaped')),
        priority INTEGER NOT NULL DEFAULT 0,
        queued_at REAL NOT NULL,
        started_at REAL,
        ended_at REAL,
        deadline REAL,
        owner_host TEXT,
        owner_boot TEXT,
        owner_pid INTEGER,
        owner_start TEXT,
        pgid INTEGER,
        exit_code INTEGER,
        reason TEXT,
        log_path TEXT,
        head_sha TEXT
    )
    """,
    "CREATE UNIQUE INDEX jobs_visit ON jobs(task_id, agent, task_version, attempt)",
    "CREATE INDEX jobs_queue ON jobs(state, priority, id)",
    "CREATE INDEX jobs_task ON jobs(task_id, agent, task_version)",
    """
    CREATE TABLE verdicts (
        id INTEGER PRIMARY KEY,
        task_id INTEGER NOT NULL REFERENCES tasks(id),
        task_version INTEGER NOT NULL,
        stage TEXT NOT NULL,
        sha TEXT,
        verdict TEXT NOT NULL CHECK (verdict IN ('approve', 'reject')),
        actor TEXT NOT NULL,
        reason TEXT,
        at REAL NOT NULL
    )
    """,
    "CREATE INDEX verdicts_task ON verdicts(task_id, task_version, id)",
    """
    CREATE TABLE commit_statuses (
        repo TEXT NOT NULL,
        sha TEXT NOT NULL,
        context TEXT NOT NULL,
        state TEXT NOT NULL,
        description TEXT,
        at REAL NOT NULL,
        PRIMARY KEY (repo, sha, context)
    )
    """,
    """
    CREATE TABLE outbox (
        key TEXT PRIMARY KEY,
        task_id INTEGER,
        text TEXT NOT NULL,
        created_at REAL NOT NULL,
        sent_at REAL
    )
    """,
    "CREATE INDEX outbox_pending ON outbox(sent_at, created_at)",
]


_V2 = [
    # Readiness is data: a queued job whose task waits on an unfinished dependency has
    # ready = 0 and the claim's index never visits it (no NOT EXISTS scan per claim).
    "ALTER TABLE jobs ADD COLUMN ready INTEGER NOT NULL DEFAULT 1",
    "ALTER TABLE jobs ADD COLUMN not_before REAL NOT NULL DEFAULT 0",
    "ALTER TABLE jobs ADD COLUMN note TEXT",
    "ALTER TABLE jobs ADD COLUMN pgid_start TEXT",
    "DROP INDEX jobs_queue",
    "CREATE INDEX jobs_claim ON jobs(state, ready, priority DESC, id)",
    "CREATE INDEX jobs_state_agent ON jobs(state, agent)",
    "ALTER TABLE tasks ADD COLUMN waiting_on INTEGER NOT NULL DEFAULT 0",
    """
    CREATE TABLE deps (
        task_id INTEGER NOT NULL REFERENCES tasks(id),
        on_task_id INTEGER NOT NULL REFERENCES tasks(id),
        created_at REAL NOT NULL,
        PRIMARY KEY (task_id, on_task_id)
    )
    """,
    "CREATE INDEX deps_on ON deps(on_task_id)",
]


_V3 = [
    # Small named facts the operator views read: the last tick, run counters.
    """
    CREATE TABLE facts (
        name TEXT PRIMARY KEY,
        value TEXT NOT NULL,
        at REAL NOT NULL
    )
    """,
]


_V4 = [
    # Webhooks are committed here before they are acknowledged. One delivery is stored
    # once: by its delivery id, and by the digest of its body (Plane sends a new
    # delivery id on every retry of the same event).
    """
    CREATE TABLE inbox (
        id INTEGER PRIMARY KEY,
        source TEXT NOT NULL,
        event TEXT NOT NULL,
        delivery TEXT,
        digest TEXT NOT NULL,
        headers TEXT NOT NULL,
        body BLOB NOT NULL,
        received_at REAL NOT NULL,
        state TEXT NOT NULL DEFAULT 'pending'
            CHECK (state IN ('pending', 'done', 'failed', 'parked', 'dropped')),
        attempts INTEGER NOT NULL DEFAULT 0,
        next_at REAL NOT NULL DEFAULT 0,
        claimed_at REAL,
        error TEXT,
        result TEXT,
        processed_at REAL,
        UNIQUE (source, digest)
    )
    """,
    "CREATE UNIQUE INDEX inbox_delivery ON inbox(source, delivery) WHERE delivery IS NOT NULL",
    "CREATE INDEX inbox_due ON inbox(state, next_at, id)",
    # The outbox becomes at-least-once: a claim is a lease that expires, a failed send
    # is tried again after a backoff, and its last error is kept.
    "ALTER TABLE outbox ADD COLUMN claimed_at REAL",
    "ALTER TABLE outbox ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0",
    "ALTER TABLE outbox ADD COLUMN next_at REAL NOT NULL DEFAULT 0",
    "ALTER TABLE outbox ADD COLUMN last_error TEXT",
]


_V5 = [
    # A tracker's states, cached across processes (each orch run is short): one fetch
    # per project per TTL, and a stale copy when a refresh fails.
    """
    CREATE TABLE tracker_states (
        project TEXT NOT NULL,
        id TEXT NOT NULL,
        name TEXT NOT NULL,
        grp TEXT NOT NULL,
        fetched_at REAL NOT NULL,
        PRIMARY KEY (project, id)
    )
    """,
]


_V6 = [
    # The drain takes the oldest open delivery: a partial index over the open ones keeps
    # that O(log n) however many are done (a sort of every open row cost 1.3-1.9 ms per
    # claim at 10,000 open rows, inside the write lock).
    "CREATE INDEX inbox_open ON inbox(id) WHERE state IN ('pending', 'failed')",
]


_V7 = [
    # A project whose states alias one UUID under two names (a badly configured Plane,
    # issue 11) must not break the cache: one row per (id, name), resolution by group.
    "DROP TABLE tracker_states",
    """
    CREATE TABLE tracker_states (
        project TEXT NOT NULL,
        id TEXT NOT NULL,
        name TEXT NOT NULL,
        grp TEXT NOT NULL,
        fetched_at REAL NOT NULL,
        PRIMARY KEY (project, id, name)
    )
    """,
    # Requests sent to a rate-limited API per bucket (an API key's digest) per window
    # (a minute), shared by every process: Plane counts per key, not per process.
    """
    CREATE TABLE rate_windows (
        bucket TEXT NOT NULL,
        minute INTEGER NOT NULL,
        used INTEGER NOT NULL,
        PRIMARY KEY (bucket, minute)
    )
    """,
    # "Not before" marks an API set (Telegram flood control, Plane's 429) and facts learnt
    # from it (a chat migrated to a supergroup), so the next process honours them too.
    """
    CREATE TABLE holds (
        name TEXT PRIMARY KEY,
        until REAL NOT NULL,
        value TEXT,
        reason TEXT
    )
    """,
]


_V8 = [
    # An effect command's own process is part of its owner (DESIGN 2.2): its pid, start
    # time and process group, so that nobody probes or reruns an effect whose command
    # still runs after orch itself died. `acting` marks the point of no return (a command
    # started, a merge about to move the default branch): a cancel waits for such an
    # effect instead of racing it.
    "ALTER TABLE effects ADD COLUMN proc_pid INTEGER",
    "ALTER TABLE effects ADD COLUMN proc_pgid INTEGER",
    "ALTER TABLE effects ADD COLUMN proc_start TEXT",
    "ALTER TABLE effects ADD COLUMN acting INTEGER NOT NULL DEFAULT 0",
    "CREATE INDEX effects_started ON effects(state) WHERE state = 'started'",
]


_V9 = [
    # An inbox claim names its claimer, as a lease does (issue 11 item 8): a delivery
    # whose claimer is gone is taken at once by the next drain, not after a fixed expiry.
    "ALTER TABLE inbox ADD COLUMN claim_host TEXT",
    "ALTER TABLE inbox ADD COLUMN claim_boot TEXT",
    "ALTER TABLE inbox ADD COLUMN claim_pid INTEGER",
    "ALTER TABLE inbox ADD COLUMN claim_start TEXT",
    # The claimed open rows are few (one per running drain): each claim checks them all,
    # through this index rather than a walk over every open row.
    "CREATE INDEX inbox_claimed ON inbox(id) WHERE claimed_at IS NOT NULL AND state IN ('pending', 'failed')",
]


_V10 = [
    # The merge line of a repository (issue 11): the task that holds it rebases, waits for
    # CI on its rebased head and merges, while the others wait their turn instead of
    # rebasing onto a default branch about to move. Held by a task visit, not a process:
    # it ends when that task leaves the visit (or is blocked), checked by the next taker.
    """
    CREATE TABLE merge_line (
        repo TEXT PRIMARY KEY,
        task_id INTEGER NOT NULL,
        task_version INTEGER NOT NULL,
        since REAL NOT NULL
    )
    """,
]


_V11 = [
    # The next queued job by priority then age when dependencies are off ([deps] enabled =
    # false): jobs_claim orders by (state, ready, ...) and cannot give that order without
    # `ready`, so such a claim sorted every queued job (55 ms on SQLite, 106 ms on
    # PostgreSQL with 100,000 queued, under the claims' lock). Partial: a job leaves the
    # index when it is claimed, so it holds only what waits.
    "CREATE INDEX jobs_queued ON jobs(priority DESC, id) WHERE state = 'queued'",
]


# Append only: never edit a migration that has shipped.
MIGRATIONS: list[tuple[str, Any]] = [
    ("v1_core", _steps(_V1)),
    ("v2_queue_deps", _steps(_V2)),
    ("v3_facts", _steps(_V3)),
    ("v4_inbox_outbox", _steps(_V4)),
    ("v5_tracker_states", _steps(_V5)),
    ("v6_inbox_open", _steps(_V6)),
    ("v7_integration_state", _steps(_V7)),
    ("v8_effect_process", _steps(_V8)),
    ("v9_inbox_claimer", _steps(_V9)),
    ("v10_merge_line", _steps(_V10)),
    ("v11_jobs_queued", _steps(_V11)),
]
LATEST = len(MIGRATIONS)
