"""In-process `advance()` throughput against a raw sqlite3 compare-and-swap loop.

A pipeline of STAGES stages (s0 -> s1 -> ... -> done) with no gates, no effects and no
agents, so every `advance()` call is pure orch bookkeeping: the task read, the dead-lease
check, the transition lease, the audit rows, the CAS, the outbox flush, the lease release.

For 1, 2, 4 and 8 worker processes (multiprocessing, 'spawn'), two workloads:

  disjoint  every worker advances its own tasks (16 tasks in all, split between them)
  shared    every worker advances the same 4 tasks, so they contend for leases and the CAS

Each worker opens its own runtime (`orch.app.open_runtime`), with a notifier that drops
messages, waits at a barrier, then calls `advance()` until its tasks reach `done`. The
reference is the same number of processes running `SELECT stage` + `UPDATE tasks SET
stage = ?, version = version + 1 WHERE id = ? AND stage = ?` in autocommit with plain
sqlite3 (WAL, synchronous=NORMAL, busy_timeout) on a table of the same shape (the raw
database is created by orch's own migrations), over a longer chain so it runs long enough
to time. Rates are successful moves per second of wall time (first worker start to last
worker end); latencies are per call, every call counted (busy and no-op calls too).

Nothing leaves the machine; everything lives in a temporary directory.

    .venv/bin/python bench/advance_throughput.py            # full run
    .venv/bin/python bench/advance_throughput.py --quick    # smaller run
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import platform
import shutil
import sqlite3
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

GOAL_RATIO = 0.10
WORKER_COUNTS = (1, 2, 4, 8)
DISJOINT_TASKS = 16  # split between the workers: 16, 8, 4, 2 each
SHARED_TASKS = 4  # every worker advances all of them
BUSY_TIMEOUT_MS = 5000


@dataclass
class Run:
    """What one worker process saw."""

    start: float = 0.0
    end: float = 0.0
    latencies: list[float] = field(default_factory=list)
    outcomes: Counter[str] = field(default_factory=Counter)
    error: str | None = None


@dataclass
class Result:
    """One (engine, workers, mode) measurement, summed over its workers."""

    wall: float
    moves: int
    calls: int
    outcomes: Counter[str]
    p50_ms: float
    p99_ms: float
    errors: list[str]

    @property
    def rate(self) -> float:
        return self.moves / self.wall if self.wall > 0 else 0.0


# -- the two kinds of worker ----------------------------------------------------------


class _NullNotifier:
    def send(self, text: str) -> None:
        return None


def _orch_worker(toml: str, keys: list[str], barrier: Any, out: Any) -> None:
    run = Run()
    try:
        from orch import config
        from orch.app import open_runtime
        from orch.engine.advance import advance
        from orch.errors import Busy

        cfg = config.load(toml)
        rt = open_runtime(cfg, actor=f"bench:{os.getpid()}")
        rt.notifier = _NullNotifier()
        rt.task(keys[0])  # one read before the clock starts, like the raw worker's connect
        barrier.wait()
        run.start = time.monotonic()
        remaining = list(keys)
        while remaining:
            for key in list(remaining):
                t0 = time.perf_counter()
                try:
                    r = advance(rt, key)
                except Busy:  # the database stayed locked for busy_timeout_ms
                    run.latencies.append(time.perf_counter() - t0)
                    run.outcomes["busy_locked"] += 1
                    continue
                run.latencies.append(time.perf_counter() - t0)
                outcome = r.outcome
                if outcome == "busy":
                    outcome = "busy_cas" if "compare-and-swap" in r.message else "busy_lease"
                run.outcomes[outcome] += 1
                if cfg.is_terminal(r.to_stage if r.outcome == "advanced" else r.stage):
                    remaining.remove(key)
        run.end = time.monotonic()
        rt.close()
    except Exception as e:  # reported in the table, never hidden
        run.error = f"{type(e).__name__}: {e}"
    out.put(run)


def _raw_worker(db: str, ids: list[int], steps: int, barrier: Any, out: Any) -> None:
    run = Run()
    try:
        conn = sqlite3.connect(db, isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        names = [f"s{i}" for i in range(steps)] + ["done"]
        nxt = dict(zip(names, names[1:], strict=False))
        conn.execute("SELECT stage FROM tasks WHERE id = ?", (ids[0],)).fetchone()
        barrier.wait()
        run.start = time.monotonic()
        remaining = list(ids)
        while remaining:
            for task_id in list(remaining):
                t0 = time.perf_counter()
                try:
                    stage = conn.execute("SELECT stage FROM tasks WHERE id = ?", (task_id,)).fetchone()[0]
                    if stage == "done":
                        run.latencies.append(time.perf_counter() - t0)
                        run.outcomes["nothing"] += 1
                        remaining.remove(task_id)
                        continue
                    cur = conn.execute(
                        "UPDATE tasks SET stage = ?, version = version + 1 WHERE id = ? AND stage = ?",
                        (nxt[stage], task_id, stage),
                    )
                except sqlite3.OperationalError:
                    run.latencies.append(time.perf_counter() - t0)
                    run.outcomes["busy_locked"] += 1
                    continue
                run.latencies.append(time.perf_counter() - t0)
                if cur.rowcount == 1:
                    run.outcomes["advanced"] += 1
                    if nxt[stage] == "done":
                        remaining.remove(task_id)
                else:
                    run.outcomes["busy_cas"] += 1
        run.end = time.monotonic()
        conn.close()
    except Exception as e:
        run.error = f"{type(e).__name__}: {e}"
    out.put(run)


# -- set-up ---------------------------------------------------------------------------


def write_toml(path: Path, *, stages: int, lease: bool) -> None:
    """An orch.toml with a gate-less, effect-less, agent-less chain s0 -> ... -> done.

    config.merged() lays this over DEFAULTS: tables merge, so the default stages
    (analysis .. cancelled) stay defined, but no transition reaches them, and their
    agents, gates and effects stay defined too, so validation passes. The transitions
    list replaces the default one.
    """
    repo = path.parent / "repo"
    repo.mkdir(exist_ok=True)
    lines = [
        "[store]",
        'path = "orch.db"',
        f"busy_timeout_ms = {BUSY_TIMEOUT_MS}",
        "",
        "[transition_lease]",
        f"enabled = {'true' if lease else 'false'}",
        "",
        "[repos.app]",
        f'path = "{repo}"',
        "",
        "[pipeline]",
        'initial = "s0"',
        "",
    ]
    names = [f"s{i}" for i in range(stages)] + ["done"]
    for name in names[:-1]:
        lines += [f"[pipeline.stages.{name}]", ""]
    lines += ["[pipeline.stages.done]", "terminal = true", ""]
    for a, b in zip(names, names[1:], strict=False):
        lines += ["[[pipeline.transitions]]", f'from = "{a}"', f'to = "{b}"', ""]
    path.write_text("\n".join(lines), encoding="utf-8")


def make_orch_db(run_dir: Path, template_db: Path, *, stages: int, lease: bool, keys: list[str]) -> Path:
    from orch import config
    from orch.app import open_runtime
    from orch.engine import tasks

    run_dir.mkdir(parents=True)
    toml = run_dir / "orch.toml"
    write_toml(toml, stages=stages, lease=lease)
    shutil.copy(template_db, run_dir / "orch.db")
    cfg = config.load(toml)
    assert cfg.lease_enabled is lease and cfg.initial_stage == "s0"
    rt = open_runtime(cfg, actor="bench:setup")
    for key in keys:
        tasks.add(rt, f"bench task {key}", key=key)
    rt.close()
    return toml


def make_raw_db(run_dir: Path, template_db: Path, n_tasks: int) -> tuple[Path, list[int]]:
    run_dir.mkdir(parents=True)
    db = run_dir / "raw.db"
    shutil.copy(template_db, db)  # the same tasks table and indexes as orch's
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    now = time.time()
    ids = []
    for i in range(n_tasks):
        cur = conn.execute(
            "INSERT INTO tasks (key, title, repo, stage, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?)",
            (f"R-{i}", f"raw task {i}", "app", "s0", now, now),
        )
        ids.append(int(cur.lastrowid or 0))
    conn.close()
    return db, ids


def make_template(tmp: Path) -> Path:
    """An empty, migrated orch database, copied for every run (migrating costs ~0.1 s)."""
    from orch.store import Store

    db = tmp / "template.db"
    Store.open(db).close()
    return db


# -- running --------------------------------------------------------------------------


def run_workers(target: Any, per_worker_args: list[tuple[Any, ...]]) -> Result:
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(len(per_worker_args))
    out = ctx.Queue()
    procs = [ctx.Process(target=target, args=(*a, barrier, out)) for a in per_worker_args]
    for p in procs:
        p.start()
    runs: list[Run] = [out.get(timeout=300) for _ in procs]
    for p in procs:
        p.join()
    errors = [r.error for r in runs if r.error]
    ok = [r for r in runs if not r.error]
    outcomes: Counter[str] = Counter()
    lat: list[float] = []
    for r in ok:
        outcomes.update(r.outcomes)
        lat.extend(r.latencies)
    lat.sort()
    wall = max(r.end for r in ok) - min(r.start for r in ok) if ok else 0.0
    return Result(
        wall=wall,
        moves=outcomes["advanced"],
        calls=len(lat),
        outcomes=outcomes,
        p50_ms=pct(lat, 50) * 1000,
        p99_ms=pct(lat, 99) * 1000,
        errors=errors,
    )


def pct(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    if not sorted_values:
        return float("nan")
    rank = max(1, round(q / 100 * len(sorted_values) + 0.5))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def split(items: list[Any], n: int) -> list[list[Any]]:
    return [items[i::n] for i in range(n)]


def measure(
    tmp: Path, template: Path, *, workers: int, mode: str, lease: bool, stages: int, raw_steps: int
) -> tuple[Result, Result | None]:
    tag = f"{mode}-{workers}-{'lease' if lease else 'nolease'}"
    n_tasks = DISJOINT_TASKS if mode == "disjoint" else SHARED_TASKS
    keys = [f"B-{i}" for i in range(n_tasks)]
    toml = make_orch_db(tmp / f"orch-{tag}", template, stages=stages, lease=lease, keys=keys)
    if mode == "disjoint":
        orch_args = [(str(toml), part) for part in split(keys, workers)]
    else:
        orch_args = [(str(toml), list(keys)) for _ in range(workers)]
    orch = run_workers(_orch_worker, orch_args)
    _check_done(toml, keys, orch)
    if not lease:
        return orch, None
    db, ids = make_raw_db(tmp / f"raw-{tag}", template, n_tasks)
    if mode == "disjoint":
        raw_args = [(str(db), part, raw_steps) for part in split(ids, workers)]
    else:
        raw_args = [(str(db), list(ids), raw_steps) for _ in range(workers)]
    raw = run_workers(_raw_worker, raw_args)
    return orch, raw


def _check_done(toml: Path, keys: list[str], res: Result) -> None:
    """Every task must be at `done`, with exactly one move per stage: else report it."""
    db = toml.parent / "orch.db"
    conn = sqlite3.connect(db)
    rows = conn.execute(
        f"SELECT key, stage, version FROM tasks WHERE key IN ({','.join('?' * len(keys))})", keys
    ).fetchall()
    leases = conn.execute("SELECT count(*) FROM leases").fetchone()[0]
    conn.close()
    bad = [r for r in rows if r[1] != "done"]
    moves = sum(r[2] - 1 for r in rows)
    if bad or len(rows) != len(keys):
        res.errors.append(f"tasks not done: {bad}")
    if moves != res.moves:
        res.errors.append(f"versions say {moves} moves, workers counted {res.moves}")
    if leases:
        res.errors.append(f"{leases} leases left behind")


# -- report ---------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="shorter chain, no lease-off rows")
    ap.add_argument("--no-lease-rows", action="store_true", help="skip the transition_lease=false rows")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = ap.parse_args(argv)
    stages = 25 if args.quick else 100
    raw_steps = 400 if args.quick else 1500
    with_nolease = not (args.quick or args.no_lease_rows)

    import sqlite3 as _sqlite

    print(
        f"advance throughput: python {platform.python_version()}, sqlite {_sqlite.sqlite_version}, "
        f"{os.cpu_count()} cpus, {platform.platform()}"
    )
    print(
        f"chain: {stages} stages + done; disjoint: {DISJOINT_TASKS} tasks split between workers; "
        f"shared: {SHARED_TASKS} tasks advanced by every worker; raw chain: {raw_steps} steps"
    )
    tmp = Path(tempfile.mkdtemp(prefix="orch-bench-adv-"))
    t_start = time.monotonic()
    rows: list[tuple[str, int, bool, Result, Result | None]] = []
    try:
        template = make_template(tmp)
        for mode in ("disjoint", "shared"):
            for lease in (True, False) if with_nolease else (True,):
                for n in WORKER_COUNTS:
                    orch, raw = measure(
                        tmp, template, workers=n, mode=mode, lease=lease, stages=stages, raw_steps=raw_steps
                    )
                    rows.append((mode, n, lease, orch, raw))
                    print(f"  .. {mode:8} workers={n} lease={'on' if lease else 'off'}", file=sys.stderr)
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    raw_of = {(m, n): raw for m, n, lease, _, raw in rows if lease and raw}
    head = (
        f"{'mode':8} {'wrk':>3} {'lease':5} {'adv/s':>7} {'raw/s':>8} {'ratio':>6} "
        f"{'busy':>5} {'cas':>4} {'noop':>5} {'p50ms':>6} {'p99ms':>7} "
        f"{'raw p50':>7} {'raw p99':>7} {'raw lost':>8} {'wall s':>6}"
    )
    print()
    print(head)
    print("-" * len(head))
    for mode, n, lease, orch, _ in rows:
        raw = raw_of[(mode, n)]
        o = orch.outcomes
        busy = o["busy_lease"] + o["busy_locked"]
        print(
            f"{mode:8} {n:>3} {'on' if lease else 'off':5} {orch.rate:>7.0f} {raw.rate:>8.0f} "
            f"{orch.rate / raw.rate:>6.3f} {busy:>5} {o['busy_cas']:>4} {o['nothing']:>5} "
            f"{orch.p50_ms:>6.2f} {orch.p99_ms:>7.2f} {raw.p50_ms:>7.3f} {raw.p99_ms:>7.3f} "
            f"{raw.outcomes['busy_cas'] + raw.outcomes['busy_locked']:>8} {orch.wall:>6.2f}"
        )
        for e in orch.errors + (raw.errors if lease else []):
            print(f"   !! {mode} workers={n} lease={'on' if lease else 'off'}: {e}")
    print()
    print(
        "adv/s: successful advance() moves per second; raw/s: successful raw CASes per second; "
        "busy: advance() returned busy (lease held by a live owner) or raised Busy (database locked); "
        "cas: advance() lost the compare-and-swap; noop: 'nothing' (task moved on while checking, or "
        "already done); raw lost: raw CAS that matched no row or hit 'database is locked'; "
        "latencies over every call."
    )
    print(f"total bench time {time.monotonic() - t_start:.1f} s")
    for mode in ("disjoint", "shared"):
        ratios = [(orch.rate / raw_of[(m, n)].rate, n) for m, n, lease, orch, _ in rows if m == mode and lease]
        worst, at = min(ratios)
        met = "met" if worst >= GOAL_RATIO else "NOT met"
        print(
            f"goal: advance/raw ratio >= {GOAL_RATIO:.2f} ({mode}, lease on, worst of 1-8 workers: "
            f"{at}) -> {worst:.3f} ({met})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
