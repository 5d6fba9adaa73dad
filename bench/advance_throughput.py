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
import itertools
import json
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

import scratch

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
        from orch.app.wiring import open_runtime
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
                # not_ready/failed cannot happen on this chain: drop the task, _check_done reports it
                done = cfg.pipeline.is_terminal((r.to_stage if r.outcome == "advanced" else None) or r.stage)
                if done or outcome in ("not_ready", "failed"):
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
        nxt = dict(itertools.pairwise(names))
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


def _toml_value(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return json.dumps(v)  # strings and numbers: JSON spells them as TOML does


def write_toml(path: Path, *, stages: int, lease: bool, url: str = "") -> None:
    """An orch.toml with a gate-less, effect-less, agent-less chain s0 -> ... -> done.

    The default stages (analysis .. cancelled, from orch.config.DEFAULTS) are written out
    too, unreachable: whether [pipeline.stages] merges with the defaults or replaces them,
    every stage a default setting names (an agent's stage, a finished stage) exists. The
    default gates, effects and agents stay defined, so validation passes; the transitions
    list replaces the default one, so only s0 -> ... -> done is reachable. With `url`, the
    store is that PostgreSQL database (its password in $PGPASSWORD) instead of orch.db.
    """
    from orch.config import DEFAULTS

    repo = path.parent / "repo"
    repo.mkdir(exist_ok=True)
    lines = [
        "[store]",
        f"url = {json.dumps(url)}" if url else 'path = "orch.db"',
        f"busy_timeout_ms = {BUSY_TIMEOUT_MS}",
        "",
        "[transition_lease]",
        f"enabled = {'true' if lease else 'false'}",
        "",
        "[repos.app]",
        f"path = {json.dumps(str(repo))}",  # a JSON string is a valid TOML basic string
        "",
        "[pipeline]",
        'initial = "s0"',
        "",
    ]
    names = [f"s{i}" for i in range(stages)] + ["done"]
    tables: dict[str, dict[str, Any]] = {name: {} for name in names[:-1]}
    tables.update(DEFAULTS["pipeline"]["stages"])
    tables["done"] = {"terminal": True}
    for name, table in tables.items():
        lines += [f"[pipeline.stages.{name}]", *(f"{k} = {_toml_value(v)}" for k, v in table.items()), ""]
    for a, b in itertools.pairwise(names):
        lines += ["[[pipeline.transitions]]", f'from = "{a}"', f'to = "{b}"', ""]
    path.write_text("\n".join(lines), encoding="utf-8")


def make_orch_db(
    run_dir: Path, template_db: Path | None, *, stages: int, lease: bool, keys: list[str], url: str = ""
) -> Path:
    """A run's orch.toml and its store with `keys` added: a copy of `template_db`, or the
    (empty) PostgreSQL database at `url`."""
    from orch import config
    from orch.app.wiring import open_runtime
    from orch.engine import tasks

    run_dir.mkdir(parents=True)
    toml = run_dir / "orch.toml"
    write_toml(toml, stages=stages, lease=lease, url=url)
    if template_db is not None:
        shutil.copy(template_db, run_dir / "orch.db")
    cfg = config.load(toml)
    if cfg.transition_lease.enabled is not lease or cfg.pipeline.initial != "s0":
        sys.exit(
            f"{toml}: config did not load as written "
            f"(lease {cfg.transition_lease.enabled}, {cfg.pipeline.initial})"
        )
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
    tmp: Path, template: Path, *, workers: int, mode: str, lease: bool, stages: int, raw_steps: int, tag: str
) -> tuple[Result, Result | None]:
    """One orch run and (lease on only: the raw reference does not depend on it) one raw run."""
    n_tasks = DISJOINT_TASKS if mode == "disjoint" else SHARED_TASKS
    keys = [f"B-{i}" for i in range(n_tasks)]
    toml = make_orch_db(tmp / f"orch-{tag}", template, stages=stages, lease=lease, keys=keys)
    # disjoint: worker w gets every n-th task; shared: every worker walks all tasks in the same order
    parts = split(keys, workers) if mode == "disjoint" else [list(keys) for _ in range(workers)]
    orch = run_workers(_orch_worker, [(str(toml), part) for part in parts])
    _check_done(toml, keys, orch)
    if not lease:
        return orch, None
    db, ids = make_raw_db(tmp / f"raw-{tag}", template, n_tasks)
    id_parts = split(ids, workers) if mode == "disjoint" else [list(ids) for _ in range(workers)]
    raw = run_workers(_raw_worker, [(str(db), part, raw_steps) for part in id_parts])
    return orch, raw


def median_run(results: list[Result]) -> Result:
    """The run with the median rate (the middle one of an odd number of repeats)."""
    return sorted(results, key=lambda r: r.rate)[len(results) // 2]


def _check_done(toml: Path, keys: list[str], res: Result) -> None:
    """Every task must be at `done`, with exactly one move per stage: else report it."""
    from orch import config
    from orch.app.wiring import open_store

    store = open_store(config.load(toml))
    try:
        rows = [tuple(r) for r in store.db.read("SELECT key, stage, version FROM tasks")]
        leases = len(store.list_leases())
    finally:
        store.close()
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
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="shorter chain, one repeat, no lease-off rows")
    ap.add_argument("--repeat", type=int, help="runs per configuration, the median is shown (default 3)")
    ap.add_argument("--no-lease-rows", action="store_true", help="skip the transition_lease = false rows")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = ap.parse_args(argv)
    for var in [v for v in os.environ if v.startswith("ORCH_")]:
        del os.environ[var]  # e.g. ORCH_TRANSITION_LEASE_ENABLED would change what is measured
    stages = 20 if args.quick else 50
    raw_steps = 300 if args.quick else 750
    repeat = args.repeat or (1 if args.quick else 3)
    leases = (True,) if args.quick or args.no_lease_rows else (True, False)
    configs = [(m, n, lease) for m in ("disjoint", "shared") for lease in leases for n in WORKER_COUNTS]

    print(
        f"advance throughput: python {platform.python_version()}, sqlite {sqlite3.sqlite_version}, "
        f"{os.cpu_count()} cpus, load average {os.getloadavg()[0]:.2f}, {platform.platform()}"
    )
    print(
        f"chain: {stages} stages + done; disjoint: {DISJOINT_TASKS} tasks split between the workers; "
        f"shared: {SHARED_TASKS} tasks advanced by every worker; raw chain: {raw_steps} steps; "
        f"median of {repeat} run(s)"
    )
    tmp = Path(tempfile.mkdtemp(prefix="orch-bench-adv-"))
    t_start = time.monotonic()
    orch_runs: dict[tuple[str, int, bool], list[Result]] = {c: [] for c in configs}
    raw_runs: dict[tuple[str, int], list[Result]] = {(m, n): [] for m, n, _ in configs}
    try:
        template = make_template(tmp)
        for rep in range(repeat):  # repeats interleaved, so drift hits every configuration alike
            print(f"  .. run {rep + 1}/{repeat}", file=sys.stderr)
            for mode, n, lease in configs:
                tag = f"{mode}-{n}-{'lease' if lease else 'nolease'}-{rep}"
                orch, raw = measure(
                    tmp,
                    template,
                    workers=n,
                    mode=mode,
                    lease=lease,
                    stages=stages,
                    raw_steps=raw_steps,
                    tag=tag,
                )
                orch_runs[(mode, n, lease)].append(orch)
                if raw is not None:
                    raw_runs[(mode, n)].append(raw)
    finally:
        scratch.leave(tmp, args.keep)

    head = (
        f"{'mode':8} {'wrk':>3} {'lease':5} {'adv/s':>6} {'raw/s':>6} {'ratio':>6} "
        f"{'calls':>5} {'busy':>5} {'cas':>4} {'noop':>4} {'nrdy':>4} {'p50 ms':>6} {'p99 ms':>6} "
        f"{'raw p50':>7} {'raw p99':>7} {'raw lost':>8} {'wall s':>6}"
    )
    print()
    print(head)
    print("-" * len(head))
    ratios: dict[tuple[str, int, bool], float] = {}
    for mode, n, lease in configs:
        orch, raw = median_run(orch_runs[(mode, n, lease)]), median_run(raw_runs[(mode, n)])
        ratios[(mode, n, lease)] = orch.rate / raw.rate
        o = orch.outcomes
        print(
            f"{mode:8} {n:>3} {'on' if lease else 'off':5} {orch.rate:>6.0f} {raw.rate:>6.0f} "
            f"{orch.rate / raw.rate:>6.3f} {orch.calls:>5} {o['busy_lease'] + o['busy_locked']:>5} "
            f"{o['busy_cas']:>4} {o['nothing']:>4} {o['not_ready'] + o['failed']:>4} "
            f"{orch.p50_ms:>6.2f} {orch.p99_ms:>6.2f} {raw.p50_ms:>7.3f} "
            f"{raw.p99_ms:>7.3f} {raw.outcomes['busy_cas'] + raw.outcomes['busy_locked']:>8} "
            f"{orch.wall:>6.2f}"
        )
    errors = [
        f"{key}: {e}" for key, runs in [*orch_runs.items(), *raw_runs.items()] for r in runs for e in r.errors
    ]
    for e in errors:
        print(f"   !! {e}")
    print()
    print("adv/s   successful advance() moves per second (wall: first worker start to last worker end)")
    print("raw/s   successful raw CASes per second, same workers and mode (measured with lease on only)")
    print("busy    advance() said busy: lease held by a live owner (or Busy raised: database locked)")
    print("cas     advance() lost the compare-and-swap;  noop: 'nothing' (moved on while it checked)")
    print("nrdy    advance() said not_ready or failed (expected 0: the chain has no gates or effects)")
    print("p50/p99 per advance() call, every call counted;  raw lost: raw CAS that matched no row")
    print(f"total bench time {time.monotonic() - t_start:.1f} s")
    if errors:
        print(f"WARNING: {len(errors)} run(s) reported problems (lines marked !! above)")
    for mode in ("disjoint", "shared"):
        worst, at = min((r, n) for (m, n, lease), r in ratios.items() if m == mode and lease)
        met = "met" if worst >= GOAL_RATIO else "NOT met"
        print(
            f"goal: ratio >= {GOAL_RATIO:.2f} of raw ({mode}, lease on, worst of "
            f"{'/'.join(map(str, WORKER_COUNTS))} workers, at {at}) -> {worst:.3f} ({met})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
