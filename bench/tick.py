"""`orch tick` with 10,000 idle tasks and nothing to do, against the cold start of `orch --help`.

Set-up, in a temporary directory: a git repo (`git init -b main`, one commit), and two sites,
each an `orch.toml` with `[repos.app] path = "<repo>"` and `[store] path = ".orch/orch.db"`:

  idle   10,000 tasks written through orch's Store in one transaction, shaped like real idle
         tasks: 90% at `analysis` waiting on a person (their analyst job `succeeded`, no
         verdict), 10% at `development` whose developer job `failed` 3 times (attempts
         exhausted: the task blocked as escalated, the message already sent); 1,000 dependency rows between
         `analysis` tasks, with `waiting_on` consistent. No job is queued or running and no
         task sits at a stage the tick advances by itself (merge, deploy, monitoring).
  empty  the same config with no task at all: the tick's fixed cost

One `orch tick --json` on each site must report nothing to do (nothing reaped, repaired,
advanced or started, no message sent) and exit 0. Then every command below runs as a fresh
subprocess of the venv's console script, interleaved round by round after 2 warm-up rounds,
with bytecode cached in a private PYTHONPYCACHEPREFIX (as bench/startup.py's "cached" mode):

  floor          `python -c pass`
  --help         `orch --help`
  tick (empty)   `orch -c <empty>/orch.toml tick`
  tick (idle)    `orch -c <idle>/orch.toml tick`

Goal: the median of tick (idle) <= 1.5x the median of `orch --help`. Then `python -X importtime`
gives both commands' import time, and orch.engine.tick.tick() runs in this process on the same
databases with each of its parts timed (inbox drain, reap, deps repair, cycle check, sweep,
work, outbox, the tick leases, the last_tick fact: whichever this version of tick() has). The
`calls` column counts the outermost calls of each part in one tick. The databases are compared
before and after all of it: a tick with nothing to do must change nothing (but the `facts` row
where each tick records itself).

    .venv/bin/python bench/tick.py            # 20 runs per command
    .venv/bin/python bench/tick.py --quick    # 5 runs per command
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import scratch

GOAL_RATIO = 1.5
WARMUP = 2
TASKS = 10_000
FAILED_SHARE = 0.10  # tasks at development whose developer gave up
DEPS = 1_000
MAX_ATTEMPTS = 3  # the default [agents.developer] max_attempts
SEED = 20261124


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    s = sorted(values)
    rank = max(1, round(q / 100 * len(s) + 0.5))
    return s[min(rank, len(s)) - 1]


def timed(cmd: list[str], *, env: dict[str, str], cwd: Path) -> tuple[float, int]:
    """(wall seconds, exit code) of one run; os.wait4 blocks, so no polling rounds the time up."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, _ = os.wait4(proc.pid, 0)
    return time.perf_counter() - t0, os.waitstatus_to_exitcode(status)


# -- set-up --------------------------------------------------------------------------


def make_repo(tmp: Path, env: dict[str, str]) -> Path:
    repo = tmp / "repo"
    git_env = {**env, "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1"}
    ident = ["-c", "user.name=bench", "-c", "user.email=bench@localhost", "-c", "commit.gpgsign=false"]
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], env=git_env, check=True)
    (repo / "README").write_text("bench\n")
    subprocess.run(["git", "-C", str(repo), "add", "README"], env=git_env, check=True)
    subprocess.run(["git", "-C", str(repo), *ident, "commit", "-q", "-m", "init"], env=git_env, check=True)
    return repo


def make_site(site: Path, repo: Path) -> Path:
    site.mkdir()
    toml = site / "orch.toml"
    # A JSON string is a valid TOML basic string for any path.
    toml.write_text(f'[repos.app]\npath = {json.dumps(str(repo))}\n\n[store]\npath = ".orch/orch.db"\n')
    return toml


def fill(toml: Path, n_tasks: int, rng: random.Random) -> None:
    """Migrate the site's database with orch's Store and write n_tasks idle tasks in one transaction."""
    from orch import config
    from orch.store import Store

    cfg = config.load(toml)
    store = Store.open(cfg.store.db_path)
    if n_tasks == 0:
        store.close()
        return
    now = time.time()
    failed = set(rng.sample(range(1, n_tasks + 1), int(n_tasks * FAILED_SHARE)))
    analysis = [t for t in range(1, n_tasks + 1) if t not in failed]
    deps: set[tuple[int, int]] = set()
    while len(deps) < DEPS:  # an analysis task waits on an older analysis task: no cycle
        a, b = rng.sample(analysis, 2)
        deps.add((max(a, b), min(a, b)))
    waiting: dict[int, int] = {}
    for t, _ in deps:
        waiting[t] = waiting.get(t, 0) + 1

    tasks, jobs, audits, verdicts, outbox = [], [], [], [], []
    for tid in range(1, n_tasks + 1):
        created = now - 86400 * 7 + tid * 10
        key = f"APP-{tid}"
        audits.append((tid, created, "cli:bench", "created", None, "analysis", '{"repo": "app"}'))
        jobs.append((tid, "analyst", "analysis", 1, 1, "succeeded", created + 1, created + 60, 0))
        audits.append((tid, created + 60, "runner", "job_succeeded", "analysis", None, "{}"))
        if tid in failed:
            verdicts.append((tid, 1, "analysis", "approve", "cli:bench", created + 120))
            audits.append((tid, created + 121, "cli:bench", "advanced", "analysis", "development", "{}"))
            for attempt in range(1, MAX_ATTEMPTS + 1):
                at = created + 200 * attempt
                jobs.append((tid, "developer", "development", 2, attempt, "failed", at, at + 60, 1))
                audits.append((tid, at + 60, "runner", "job_failed", "development", None, "{}"))
            outbox.append((f"job-gave-up:{tid}", tid, f"{key} escalated: developer gave up", created + 800))
            # What the runner does when a job uses up its attempts: block the task as escalated.
            why = f"developer gave up after {MAX_ATTEMPTS} attempts: exit code"
            tasks.append((tid, key, "development", 2, created, created + 800, 1, 1, why))
        else:
            tasks.append((tid, key, "analysis", 1, created, created + 60, 0, 0, None))

    with store.write() as c:
        c.executemany(
            "INSERT INTO tasks (id, key, title, repo, stage, version, created_at, updated_at, blocked, "
            "escalated, block_reason, waiting_on) "
            "VALUES (?, ?, 'an idle task', 'app', ?, ?, ?, ?, ?, ?, ?, ?)",
            ((*t, waiting.get(t[0], 0)) for t in tasks),
        )
        c.executemany(
            "INSERT INTO jobs (task_id, agent, stage, task_version, attempt, state, queued_at, started_at, "
            "ended_at, exit_code, reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'exit code')",
            ((t, ag, st, v, a, s, q, q, e, code) for t, ag, st, v, a, s, q, e, code in jobs),
        )
        c.executemany(
            "INSERT INTO transitions (task_id, at, actor, event, from_stage, to_stage, detail) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            audits,
        )
        c.executemany(
            "INSERT INTO verdicts (task_id, task_version, stage, verdict, actor, at) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            verdicts,
        )
        c.executemany(
            "INSERT INTO outbox (key, task_id, text, created_at, sent_at) VALUES (?, ?, ?, ?, ?)",
            ((k, t, text, at, at + 1) for k, t, text, at in outbox),
        )
        c.executemany(
            "INSERT INTO deps (task_id, on_task_id, created_at) VALUES (?, ?, ?)",
            ((t, o, now - 3600) for t, o in sorted(deps)),
        )
    store.close()


def snapshot(db: Path) -> tuple[object, ...]:
    """What a tick could change: every table's size (but `facts`, where each tick records itself),
    the tasks' stages and versions, the job states, the unsent messages."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        tables = [
            r[0]
            for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite%' "
                "AND name != 'facts' ORDER BY name"
            )
        ]
        counts = tuple((t, conn.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0]) for t in tables)
        tasks = conn.execute(
            "SELECT stage, count(*), sum(version), sum(blocked), sum(waiting_on), max(updated_at) "
            "FROM tasks GROUP BY stage ORDER BY stage"
        ).fetchall()
        jobs = conn.execute("SELECT state, count(*) FROM jobs GROUP BY state ORDER BY state").fetchall()
        unsent = conn.execute("SELECT count(*) FROM outbox WHERE sent_at IS NULL").fetchone()[0]
    finally:
        conn.close()
    return (counts, tasks, jobs, unsent)


def nothing_to_do(report: dict[str, Any]) -> list[str]:
    """What in a tick's report says it did something (empty: it did nothing)."""
    did = []
    inbox = report.get("inbox", {})
    if any(inbox.values()):
        did.append(f"inbox={inbox}")
    reap = report.get("reap", {})
    for k in ("reaped", "leases", "errors"):
        if reap.get(k):
            did.append(f"reap.{k}={reap[k]}")
    if "skipped" in reap:
        did.append("reap skipped")
    deps = report.get("deps", {})
    if deps.get("repaired") or deps.get("cycles") or "skipped" in deps:
        did.append(f"deps={deps}")
    for k in ("advanced", "errors"):
        if report["sweep"][k]:
            did.append(f"sweep.{k}={report['sweep'][k][:3]}")
    if report["work"]["started"]:
        did.append(f"work.started={report['work']['started']}")
    if report.get("notified"):
        did.append(f"notified={report['notified']}")
    return did


# -- measurements --------------------------------------------------------------------


def measure(
    commands: list[tuple[str, list[str]]], *, env: dict[str, str], cwd: Path, runs: int
) -> dict[str, list[tuple[float, int]]]:
    """Interleaved timing: warm-up rounds, then `runs` rounds of every command once."""
    results: dict[str, list[tuple[float, int]]] = {name: [] for name, _ in commands}
    for rnd in range(WARMUP + runs):
        for name, cmd in commands:
            sample = timed(cmd, env=env, cwd=cwd)
            if rnd >= WARMUP:
                results[name].append(sample)
    return results


def import_ms(
    py: str, cmd: list[str], *, env: dict[str, str], cwd: Path, repeats: int
) -> tuple[float, dict[str, float]]:
    """Median total import time of the python script `cmd` (ms), and of each top-level import."""
    totals, cum = [], {}
    for _ in range(repeats):
        out = subprocess.run(
            [py, "-X", "importtime", *cmd], env=env, cwd=cwd, capture_output=True, text=True, timeout=60
        )
        total = 0
        for line in out.stderr.splitlines():
            if not line.startswith("import time:") or "self [us]" in line:
                continue
            _, cum_us, name = line[len("import time:") :].split("|")
            if name.startswith(" ") and not name.startswith("  "):  # depth 0
                total += int(cum_us)
                cum.setdefault(name.strip(), []).append(int(cum_us))
        totals.append(total)
    return statistics.median(totals) / 1000, {k: statistics.median(v) / 1000 for k, v in cum.items()}


class PartTimer:
    """Wraps the functions tick() calls; only the outermost timed call counts (no double counting)."""

    def __init__(self) -> None:
        self.depth = 0
        self.acc: dict[str, float] = {}
        self.calls: dict[str, int] = {}
        self._undo: list[Callable[[], None]] = []

    def wrap(self, owner: Any, attr: str, name: str) -> None:
        fn = getattr(owner, attr)

        def timed_call(*args: Any, **kwargs: Any) -> Any:
            if self.depth:
                return fn(*args, **kwargs)
            self.depth += 1
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.depth -= 1
                self.acc[name] = self.acc.get(name, 0.0) + time.perf_counter() - t0
                self.calls[name] = self.calls.get(name, 0) + 1

        setattr(owner, attr, timed_call)
        self._undo.append(lambda: setattr(owner, attr, fn))

    def undo(self) -> None:
        while self._undo:
            self._undo.pop()()


# What tick() calls, in its order: (module or "module:Class", function, part). A target that
# this version of orch lacks is skipped.
TARGETS = (
    ("orch.engine.inbox", "drain", "inbox drain"),
    ("orch.engine.reaper", "reap", "reap"),
    ("orch.store:Store", "recount_waiting", "deps: recount_waiting"),
    ("orch.engine.deps", "check_cycles", "deps: check_cycles"),
    ("orch.engine.tick", "sweep", "sweep"),
    ("orch.engine.jobs", "spawn", "work: spawn"),
    ("orch.engine.outbox", "flush", "outbox flush"),
    ("orch.store:Store", "acquire_lease", "tick leases"),
    ("orch.store:Store", "release_lease", "tick leases"),
    ("orch.store:Store", "set_fact", "last_tick fact"),
)


def _resolve(where: str) -> Any:
    import importlib

    mod, _, cls = where.partition(":")
    try:
        owner = importlib.import_module(mod)
    except ImportError:
        return None
    return getattr(owner, cls, None) if cls else owner


def in_process(toml: Path, runs: int) -> tuple[dict[str, list[float]], dict[str, int]]:
    """orch.engine.tick.tick() in this process, `runs` times after 2 warm-ups.

    Returns the ms of every part per run, and how many times each part ran in one tick."""
    from orch import config
    from orch.app.wiring import open_runtime
    from orch.engine import tick as tick_mod

    cfg = config.load(toml)
    timer = PartTimer()
    parts = ["open_runtime"]
    for where, attr, part in TARGETS:
        owner = _resolve(where)
        if owner is not None and hasattr(owner, attr):
            timer.wrap(owner, attr, part)
            if part not in parts:
                parts.append(part)
    parts += ["rest of tick()", "tick() total"]
    out: dict[str, list[float]] = {p: [] for p in parts}
    try:
        for i in range(2 + runs):
            timer.acc, timer.calls = {}, {}
            t0 = time.perf_counter()
            rt = open_runtime(cfg, actor="tick")
            t1 = time.perf_counter()
            try:
                report = tick_mod.tick(rt)
            finally:
                t2 = time.perf_counter()
                rt.close()
            did = nothing_to_do(report)
            if did:
                raise RuntimeError(f"in-process tick did something: {did}")
            if i < 2:
                continue
            out["open_runtime"].append((t1 - t0) * 1000)
            out["tick() total"].append((t2 - t1) * 1000)
            for name in parts[1:-2]:
                out[name].append(timer.acc.get(name, 0.0) * 1000)
            out["rest of tick()"].append((t2 - t1 - sum(timer.acc.values())) * 1000)
    finally:
        timer.undo()
    return out, timer.calls


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="5 runs per command instead of 20")
    ap.add_argument("--runs", type=int, help="runs per command (default 20, --quick 5)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = ap.parse_args(argv)
    runs = args.runs or (5 if args.quick else 20)

    py = sys.executable
    script = Path(py).parent / "orch"
    if not script.is_file():
        sys.exit(f"no console script at {script}: install orch into this venv (pip install -e .)")
    t_start = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="orch-bench-tick-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORCH_")}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(tmp / "pycache")
    print(
        f"orch tick: python {platform.python_version()} ({py}), sqlite {sqlite3.sqlite_version}, "
        f"{os.cpu_count()} cpus, load average {os.getloadavg()[0]:.2f}, {platform.platform()}"
    )
    try:
        repo = make_repo(tmp, env)
        sites = {"idle": make_site(tmp / "idle", repo), "empty": make_site(tmp / "empty", repo)}
        t0 = time.perf_counter()
        fill(sites["idle"], TASKS, random.Random(SEED))
        fill(sites["empty"], 0, random.Random(SEED))
        dbs = {name: toml.parent / ".orch" / "orch.db" for name, toml in sites.items()}
        print(
            f"set-up {time.perf_counter() - t0:.1f} s: idle site {TASKS:,} tasks "
            f"({TASKS - int(TASKS * FAILED_SHARE):,} at analysis, {int(TASKS * FAILED_SHARE):,} at "
            f"development with the developer given up), {DEPS:,} deps rows, "
            f"{os.path.getsize(dbs['idle']) / 1e6:.1f} MB; empty site 0 tasks"
        )
        before = {name: snapshot(db) for name, db in dbs.items()}
        for name, toml in sites.items():
            out = subprocess.run(
                [str(script), "-c", str(toml), "tick", "--json"],
                env=env,
                cwd=tmp,
                capture_output=True,
                text=True,
                timeout=120,
            )
            if out.returncode != 0:
                sys.exit(f"orch tick --json ({name}) exited {out.returncode}: {out.stderr.strip()}")
            did = nothing_to_do(json.loads(out.stdout))
            if did:
                sys.exit(f"orch tick --json ({name}) did something: {did}")
            print(f"orch tick --json ({name}): exit 0, nothing to do: {json.dumps(json.loads(out.stdout))}")

        commands = [
            ("floor: python -c pass", [py, "-c", "pass"]),
            ("orch --help", [str(script), "--help"]),
            ("orch tick (empty, 0 tasks)", [str(script), "-c", str(sites["empty"]), "tick"]),
            (f"orch tick (idle, {TASKS:,} tasks)", [str(script), "-c", str(sites["idle"]), "tick"]),
        ]
        print()
        print(
            f"cold start, console script, bytecode cached in a private PYTHONPYCACHEPREFIX; "
            f"median of {runs} runs per command, {WARMUP} warm-up rounds, interleaved"
        )
        results = measure(commands, env=env, cwd=tmp, runs=runs)
        help_med = statistics.median(w for w, _ in results["orch --help"])
        head = f"{'command':32} {'median ms':>9} {'p90 ms':>7} {'min ms':>7} {'x --help':>8}  exit codes"
        print(head)
        print("-" * len(head))
        for name, _ in commands:
            walls = [w for w, _ in results[name]]
            bad = [rc for _, rc in results[name] if rc != 0]
            print(
                f"{name:32} {statistics.median(walls) * 1000:>9.1f} {pct(walls, 90) * 1000:>7.1f} "
                f"{min(walls) * 1000:>7.1f} {statistics.median(walls) / help_med:>8.2f}  "
                + (f"UNEXPECTED {sorted(set(bad))} x{len(bad)}" if bad else "all 0")
            )

        repeats = 1 if args.quick else 3
        print()
        print(f"python -X importtime (cached bytecode), median of {repeats} run(s):")
        for name, cmd in commands[1:]:
            total, top = import_ms(py, cmd, env=env, cwd=tmp, repeats=repeats)
            biggest = sorted(top.items(), key=lambda kv: -kv[1])[:4]
            tops = ", ".join(f"{k} {v:.1f}" for k, v in biggest)
            print(f"  {name:32} all imports {total:5.1f} ms; biggest: {tops}")

        print()
        print(f"orch.engine.tick.tick() in this process, median of {runs} runs after 2 warm-ups (ms):")
        parts = {name: in_process(toml, runs) for name, toml in sites.items()}
        head = f"  {'part':24} {'calls':>5} {'empty':>8} {'idle':>8}"
        print(head)
        print("  " + "-" * (len(head) - 2))
        calls = parts["idle"][1]
        for p in parts["idle"][0]:
            empty, idle = (statistics.median(parts[site][0][p]) for site in ("empty", "idle"))
            n = "" if p in ("open_runtime", "rest of tick()", "tick() total") else str(calls.get(p, 0))
            print(f"  {p:24} {n:>5} {empty:>8.2f} {idle:>8.2f}")

        after = {name: snapshot(db) for name, db in dbs.items()}
        print()
        for name in sites:
            if after[name] == before[name]:
                print(f"{name}: the ticks changed nothing in the database (the facts table aside)")
            else:
                print(f"WARNING {name}: the ticks changed the database: {before[name]} -> {after[name]}")
    finally:
        scratch.leave(tmp, args.keep)

    print()
    print(f"total bench time {time.monotonic() - t_start:.1f} s")
    tick_med = statistics.median(w for w, _ in results[commands[-1][0]])
    r = tick_med / help_med
    print(
        f"goal: orch tick ({TASKS:,} idle tasks) <= {GOAL_RATIO:.1f}x orch --help -> {r:.2f} "
        f"({tick_med * 1000:.1f} / {help_med * 1000:.1f} ms) ({'met' if r <= GOAL_RATIO else 'NOT met'})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
