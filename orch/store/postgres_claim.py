"""A job claim on PostgreSQL as one call to a server-side function: one round trip.

orch/store/jobs.py's claim is one transaction: the claims' lock, one statement that counts
the limits and takes the job, the audit row, the commit. From a client that is four round
trips, and on a network each costs what the claim's own work does (issue 13 asks for a
claim p50 of 1 ms with 100,000 jobs queued; four round trips made it 1.4-1.5 ms on one
machine). `orch_claim_job_v1` does the same work inside the server, called in autocommit:
its implicit transaction holds the claims' lock until the call commits.

It is the PL/pgSQL twin of jobs.py's statement, not a translation of it: the same rules
(a running-jobs limit across every host, each agent's limit, `ready`, `not_before`, a
named job or the next by priority then age, a row another write holds passed over with
SKIP LOCKED), checked by the same contract tests on both backends. Each statement in the
function takes its snapshot after the lock (a VOLATILE function under READ COMMITTED), so
every earlier claim's commit is counted: the limits stay exact, as in jobs.py. Its lock is
the claims' lock the previous orch's claim transaction took, so orchs of both versions
can share a database during an upgrade.

The name carries a version: a change to the body is a new function (`_v2`), created by the
next orch to open the database, and the old one stays for the orch that still calls it.
"""

from __future__ import annotations

import json
from typing import Any

from orch.store.backend import JobClaim

NAME = "orch_claim_job_v1"
ARGS = "double precision, text, text, bigint, text, text, text, bigint, jsonb, boolean, bigint, jsonb"
SIGNATURE = f"{NAME}({ARGS})"


def create_sql(schema: str, lock_space: int, lock: int) -> str:
    """The CREATE OR REPLACE of the function in `schema` (quoted: the one of orch's tables),
    taking the advisory lock (lock_space, lock). Its search_path is that schema alone: no
    other role's table or function of the same name is ever what it reads."""
    # Each statement is planned once per session, for any arguments (force_generic_plan:
    # left to choose, the server re-planned them on every call, 0.2 ms of a claim). So the
    # picks are three statements: a generic plan keeps an index only for a WHERE without
    # `OR <argument>`, and the job-id pick's one is the primary key.
    pick_tail = "AND not_before <= p_now AND agent <> ALL (v_full)"
    return f"""
CREATE OR REPLACE FUNCTION {schema}.{NAME}(
    p_now double precision, p_host text, p_boot text, p_pid bigint, p_start text,
    p_log_prefix text, p_actor text, p_max_running bigint,
    p_limits jsonb, p_deps boolean, p_job bigint, p_timeouts jsonb
) RETURNS SETOF jobs LANGUAGE plpgsql VOLATILE
  SET plan_cache_mode = force_generic_plan SET search_path = {schema}, pg_temp AS $fn$
DECLARE
    v_full text[] := '{{}}';
    v_id bigint;
    v_job jobs;
BEGIN
    PERFORM pg_advisory_xact_lock({int(lock_space)}, {int(lock)});
    IF (SELECT count(*) FROM jobs WHERE state = 'running') >= p_max_running THEN
        RETURN;
    END IF;
    IF p_limits <> '{{}}' THEN  -- '{{}}': no agent has a limit of its own, nothing to count
        SELECT coalesce(array_agg(l.agent), '{{}}') INTO v_full
          FROM jsonb_each_text(p_limits) AS l(agent, n)
         WHERE (SELECT count(*) FROM jobs r WHERE r.state = 'running' AND r.agent = l.agent) >= l.n::bigint;
    END IF;
    IF p_job IS NOT NULL THEN
        SELECT id INTO v_id FROM jobs
         WHERE id = p_job AND state = 'queued' AND (ready = 1 OR NOT p_deps) {pick_tail}
           FOR UPDATE SKIP LOCKED;
    ELSIF p_deps THEN
        SELECT id INTO v_id FROM jobs
         WHERE state = 'queued' AND ready = 1 {pick_tail}
         ORDER BY priority DESC, id LIMIT 1 FOR UPDATE SKIP LOCKED;
    ELSE
        SELECT id INTO v_id FROM jobs
         WHERE state = 'queued' {pick_tail}
         ORDER BY priority DESC, id LIMIT 1 FOR UPDATE SKIP LOCKED;
    END IF;
    IF v_id IS NULL THEN
        RETURN;
    END IF;
    UPDATE jobs SET state = 'running', started_at = p_now, owner_host = p_host,
           owner_boot = p_boot, owner_pid = p_pid, owner_start = p_start,
           log_path = p_log_prefix || id || '.log',
           deadline = p_now + (p_timeouts ->> agent)::double precision
     WHERE id = v_id
     RETURNING * INTO v_job;
    -- Audit.detail_json's layout (keys sorted, ", " and ": "): for an ASCII agent name the
    -- same bytes as SQLite's row; any name stays valid JSON (json.dumps would escape it).
    INSERT INTO transitions (task_id, at, actor, event, detail)
    VALUES (v_job.task_id, p_now, p_actor, 'job_claimed',
            '{{"agent": ' || to_json(v_job.agent)::text || ', "attempt": ' || v_job.attempt
            || ', "job": ' || v_job.id || '}}');
    RETURN NEXT v_job;
END
$fn$
"""


def call_sql(schema: str) -> str:
    """The call, in `schema` (quoted), every argument cast to its declared type: an
    overload another role added with closer types (psycopg sends a small int as
    smallint) would otherwise be the one PostgreSQL picks."""
    casts = [t.strip() for t in ARGS.split(",")]
    return f"SELECT * FROM {schema}.{NAME}({', '.join(f'%s::{t}' for t in casts)})"


def call_params(claim: JobClaim) -> tuple[Any, ...]:
    """The function's arguments for `claim`, in its order. The limits and timeouts travel
    as JSON objects, agent to number: psycopg takes 0.1 ms to send four arrays."""
    o = claim.owner
    return (
        claim.now, o.host, o.boot_id, o.pid, o.start_time, claim.log_prefix, o.label(),
        claim.max_running, json.dumps(dict(claim.agent_limits)), claim.deps_enabled, claim.job_id,
        json.dumps(dict(claim.timeouts)),
    )  # fmt: skip
