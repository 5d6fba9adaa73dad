"""One reconcile run over 10,000 Plane-tracked tasks, against a fake Plane on 127.0.0.1.

The fake is tests/fakes' FakePlane (a real HTTP server in a thread of this process), with
20 projects set up by `add_orch_project` (orch's workflow, one state per status) and 500
work items each, in the mix of MIX below: most Done, some In Progress / Code Review that
orch has at development / review, a few in Analysis, one Approved whose webhook was lost,
a few Blocked (paused in orch too), and a few To Analyse that have no task yet. The orch
DB gets the matching tasks (tracker_ref = the item's id, stage and version consistent with
the item, the succeeded jobs of the stages passed) in one transaction. orch.toml is
`orch.app.demo.write_setup` plus [tracker] kind = "plane", [plane] with every project (one
[repos.*] entry per project, all on the demo's git repo), [reconcile] grace_s = 0 so that
every task is looked at, and [plane] requests_per_run = 0 (no budget), so that one run
lists every project.

Runs, in order, on the same data:

  1 cold         in-process `orch.engine.reconcile.reconcile(rt)`, rt from
                 orch.app.open_runtime, notifier.send a no-op; no states cached yet
  2 warm         the same with a fresh runtime (every real run is a new process): states
                 come from the DB cache, so only listing pages are expected
  3, 4           `orch -c orch.toml reconcile --json` (console script) in a new process,
                 within the states TTL, bytecode pre-compiled in a private PYTHONPYCACHEPREFIX

For each: wall time, the fake's own time (summed in its request handler), the same
requests replayed alone over one stdlib keep-alive connection, and every request the fake
saw, by kind: listing pages, states fetches, PATCHes, per-item GETs (there must be none).
For the in-process runs, the time of the reconciler's parts (inclusive, nested).

Then Plane's default limit of 60 requests a minute: the arithmetic, and TICKS in-process
runs with orch's default [plane] requests_per_run, the fake answering 429 (Retry-After: 60)
past 60 requests in a tick. Before them, one item per project goes from Analysis to
Approved (webhook lost), so the ticks also show whether orch's write-back gets through.

Goals: wall time <= 1 s plus the server's own time (runs 1 and 2); requests == pages +
states fetches (+ the PATCH of each replayed approval), no per-item GET; one run listing
every project within 60 requests; every tick within 60 requests, every project listed.

    .venv/bin/python bench/reconcile.py            # 20 projects x 500 items, ~20 s
    .venv/bin/python bench/reconcile.py --quick    # 4 projects x 500 items, ~6 s
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import os
import platform
import random
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import urlencode, urlsplit

import tomli_w

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import scratch
from fakes.plane_workflow import add_orch_project
from fakes.servers import FakePlane, Recorded, Reply

from orch import config as config_mod
from orch import log
from orch.adapters import forge_local
from orch.adapters.plane import PlaneClient
from orch.app import demo
from orch.app.wiring import open_runtime
from orch.engine import advance as advance_mod
from orch.engine import deps, tracker_events
from orch.engine import reconcile as reconcile_mod
from orch.store import Store

GOAL_BASE_S = 1.0  # wall time allowed on top of the server's own time
PLANE_PER_MINUTE = 60  # Plane's default rate limit per API key
MAX_PP = 100  # PlaneClient refuses a larger per_page
ITEMS = 500
TICKS = 3  # one-minute ticks against the throttling fake
HAS_BUDGET = "requests_per_run" in config_mod.DEFAULTS["plane"]  # orch's per-run request budget
AGENTS = (("analyst", "analysis"), ("developer", "development"), ("reviewer", "review"))
WARM_IMPORTS = (
    "import httpx, orch.cli, orch.app, orch.engine.reconcile, orch.adapters.plane, "
    "orch.adapters.tracker_plane, orch.adapters.forge_local, orch.adapters.console"
)
KINDS = ("pages", "states", "patch", "item_get", "other")


class Kind(NamedTuple):
    label: str
    state: str  # the logical key of its Plane state (fakes.plane_workflow.ORCH_WORKFLOW)
    stage: str | None  # the task's stage in orch; None: no task yet
    version: int  # the task's version (1 + moves made); the first min(version, 3) agents succeeded
    blocked: bool
    count: int  # per project, out of ITEMS


MIX = (
    Kind("Done", "done", "done", 7, False, 420),
    Kind("In Progress", "in_progress", "development", 2, False, 30),
    Kind("Code Review", "code_review", "review", 3, False, 20),
    Kind("Analysis", "analysis", "analysis", 1, False, 9),
    Kind("Approved (webhook lost)", "approved", "analysis", 1, False, 1),
    Kind("Blocked", "blocked", "development", 2, True, 10),
    Kind("To Analyse (no task yet)", "to_analyse", None, 0, False, 10),
)
assert sum(k.count for k in MIX) == ITEMS


class BenchPlane(FakePlane):
    """FakePlane that sums the time spent in its handler, and can throttle like Plane."""

    def __init__(self) -> None:
        super().__init__()
        self.serve_s = 0.0
        self.limit: int | None = None  # requests per window, then 429
        self.window = 0

    def _serve(self, handler: Any) -> None:
        t0 = time.perf_counter()
        try:
            super()._serve(handler)
        finally:
            with self.lock:
                self.serve_s += time.perf_counter() - t0

    def route(self, req: Recorded) -> Reply:
        if self.limit is not None:
            self.window += 1
            if self.window > self.limit:
                body = {"detail": "Request was throttled. Expected available in 60 seconds."}
                return Reply(429, body, {"Retry-After": "60"})
        return super().route(req)


class Run(NamedTuple):
    label: str
    wall_s: float
    server_s: float
    requests: list[Recorded]
    report: dict[str, Any]
    expected: dict[str, int]
    parts: dict[str, tuple[float, int]]  # name -> (seconds, calls); in-process runs only
    cpu_s: float | None = None  # child CPU (new-process runs)

    @property
    def tag(self) -> str:
        return "run " + self.label.split()[0]


class Parts:
    """Inclusive timers around functions the reconciler calls (nested parts count in their parents)."""

    def __init__(self) -> None:
        self.acc: dict[str, list[float]] = {}
        self._undo: list[Callable[[], None]] = []

    def wrap(self, owner: Any, attr: str, name: str) -> None:
        fn = getattr(owner, attr)
        acc = self.acc.setdefault(name, [0.0, 0])

        def timed_call(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                acc[0] += time.perf_counter() - t0
                acc[1] += 1

        setattr(owner, attr, timed_call)
        self._undo.append(lambda: setattr(owner, attr, fn))

    def take(self) -> dict[str, tuple[float, int]]:
        out = {k: (v[0], int(v[1])) for k, v in self.acc.items()}
        for v in self.acc.values():
            v[0], v[1] = 0.0, 0
        return out

    def undo(self) -> None:
        while self._undo:
            self._undo.pop()()


# (name, depth, owner, attribute): the part table, in display order
PARTS: list[tuple[str, int, Any, str]] = [
    ("_tracker_listing", 1, reconcile_mod, "_tracker_listing"),
    ("PlaneClient._call (HTTP round trips)", 2, PlaneClient, "_call"),
    ("_tracker_side", 1, reconcile_mod, "_tracker_side"),
    ("tracker_events.on_item_state", 2, tracker_events, "on_item_state"),
    ("advance.advance (approvals)", 3, advance_mod, "advance"),
    ("_gate_side", 1, reconcile_mod, "_gate_side"),
    ("Store.quiet_tasks", 2, Store, "quiet_tasks"),
    ("_guard", 2, reconcile_mod, "_guard"),
    ("gates.evaluate_until_red", 2, reconcile_mod, "evaluate_until_red"),
    ("forge_local.git (subprocess, any caller)", 3, forge_local, "git"),
    ("deps.check_cycles", 1, deps, "check_cycles"),
    ("_remember", 1, reconcile_mod, "_remember"),
]


def classify(reqs: list[Recorded]) -> dict[str, int]:
    out = dict.fromkeys(KINDS, 0)
    for r in reqs:
        seg = r.segments()
        if r.method == "GET" and seg[-1] == "states":
            out["states"] += 1
        elif r.method == "GET" and seg[-1] == "work-items":
            out["pages"] += 1
        elif r.method == "PATCH":
            out["patch"] += 1
        elif r.method == "GET" and "work-items" in seg:
            out["item_get"] += 1  # one item, its relations, or an item by key
        else:
            out["other"] += 1
    return out


# -- set-up ------------------------------------------------------------------------------------


def seed_plane(fake: BenchPlane, n_projects: int, rng: random.Random) -> tuple[dict[str, str], list[Any]]:
    """The projects (identifier -> id) and one (identifier, seq, item id, Kind) per work item."""
    projects: dict[str, str] = {}
    rows: list[Any] = []
    for p in range(n_projects):
        ident = f"P{p + 1:02d}"
        seeded = add_orch_project(fake, ident)
        kinds = [k for k in MIX for _ in range(k.count)]
        rng.shuffle(kinds)  # every listing page gets a mix
        for seq, kind in enumerate(kinds, 1):
            iid = fake.add_work_item(seeded.id, f"{ident} item {seq}", state_id=seeded.states[kind.state])
            rows.append((ident, seq, iid, kind))
        projects[ident] = seeded.id
    return projects, rows


def write_config(root: Path, fake: BenchPlane, projects: dict[str, str]) -> tuple[Path, Path]:
    """orch.toml for the measured runs (no request budget: one run lists every project) and
    orch-budget.toml, the same with orch's default [plane] requests_per_run (when orch has one)."""
    path = demo.write_setup(root)
    data = tomllib.loads(path.read_text())
    base = data["repos"]["app"]
    for ident in projects:
        data["repos"][ident.lower()] = dict(base)  # one repo entry per project, all on the demo repo
    data["tracker"]["kind"] = "plane"
    data["plane"] = {
        "base_url": fake.url,
        "workspace": fake.workspace,
        "projects": {ident: {"id": pid, "repo": ident.lower()} for ident, pid in projects.items()},
    }
    data["reconcile"] = {"grace_s": 0}
    budgeted = root / "orch-budget.toml"
    budgeted.write_text(tomli_w.dumps(data))
    if HAS_BUDGET:
        data["plane"]["requests_per_run"] = 0  # 0: no budget
        if "requests_per_minute" in config_mod.DEFAULTS["plane"]:
            data["plane"]["requests_per_minute"] = 0  # nor the budget shared through the DB
    path.write_text(tomli_w.dumps(data))
    return path, budgeted


def seed_db(db: Path, rows: list[Any], now: float) -> tuple[int, int]:
    """The tasks of every work item that has one, and their succeeded jobs, in one transaction."""
    tasks: list[tuple[Any, ...]] = []
    jobs: list[tuple[Any, ...]] = []
    quiet_since = now - 3600
    task_id = 0
    for ident, seq, iid, kind in rows:
        if kind.stage is None:
            continue
        task_id += 1
        reason = "blocked in the tracker" if kind.blocked else None
        key, title, repo = f"{ident}-{seq}", f"{ident} item {seq}", ident.lower()
        created = quiet_since - 86400
        tasks.append(
            (task_id, key, title, repo, kind.stage, kind.version, kind.blocked, reason, iid, created)
        )
        for i, (agent, stage) in enumerate(AGENTS[: min(kind.version, 3)]):
            t = quiet_since - 86400 + 3600 * i
            jobs.append((task_id, agent, stage, i + 1, t, t + 60, t + 600))
    store = Store.open(db)
    try:
        with store.write() as c:
            c.executemany(
                "INSERT INTO tasks (id, key, title, repo, stage, version, blocked, block_reason, "
                "tracker_ref, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(*t, quiet_since) for t in tasks],
            )
            c.executemany(
                "INSERT INTO jobs (task_id, agent, stage, task_version, attempt, state, queued_at, "
                "started_at, ended_at, exit_code) VALUES (?, ?, ?, ?, 1, 'succeeded', ?, ?, ?, 0)",
                jobs,
            )
    finally:
        store.close()
    return len(tasks), len(jobs)


# -- the runs ----------------------------------------------------------------------------------


def _drop(text: str) -> None:
    """The notifier: messages go nowhere."""


def run_in_process(
    label: str, cfg_path: Path, fake: BenchPlane, parts: Parts, expected: dict[str, int]
) -> Run:
    rt = open_runtime(config_mod.load(cfg_path), actor="reconciler")
    rt.notifier.send = _drop  # type: ignore[method-assign]
    first, serve0 = fake.count, fake.serve_s
    parts.take()
    try:
        t0 = time.perf_counter()
        report = reconcile_mod.reconcile(rt)
        wall = time.perf_counter() - t0
    finally:
        close = getattr(rt, "close", rt.store.close)  # Runtime.close also sends the queued messages
        close()
    with fake.lock:
        reqs = fake.requests[first:]
    return Run(label, wall, fake.serve_s - serve0, reqs, report, expected, parts.take())


def run_cli(
    label: str, cmd: list[str], env: dict[str, str], cwd: Path, fake: BenchPlane, expected: dict[str, int]
) -> Run:
    first, serve0 = fake.count, fake.serve_s
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    out = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=600)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if out.returncode != 0:
        sys.exit(f"{' '.join(cmd)} exited {out.returncode}: {out.stderr.strip()[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    with fake.lock:
        reqs = fake.requests[first:]
    return Run(label, wall, fake.serve_s - serve0, reqs, json.loads(out.stdout), expected, {}, cpu)


def replay(fake: BenchPlane, reqs: list[Recorded]) -> tuple[float, float, int]:
    """The same requests again, alone: (wall s, server s, non-2xx answers)."""
    url = urlsplit(fake.url)
    conn = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port)
    bad = 0
    serve0 = fake.serve_s
    t0 = time.perf_counter()
    for r in reqs:
        target = r.path + ("?" + urlencode(r.query) if r.query else "")
        headers = {k: v for k, v in r.headers.items() if k in ("x-api-key", "accept", "content-type")}
        conn.request(r.method, target, body=r.body or None, headers=headers)
        resp = conn.getresponse()
        resp.read()
        bad += not 200 <= resp.status < 300
    wall = time.perf_counter() - t0
    conn.close()
    return wall, fake.serve_s - serve0, bad


# -- the report --------------------------------------------------------------------------------


def requests_table(runs: list[Run], replays: dict[str, tuple[float, float, int]]) -> None:
    head = (
        f"{'run':34} {'wall s':>7} {'server s':>8} {'replay s':>8} {'orch s':>7} {'reqs':>5} {'pages':>5} "
        f"{'states':>6} {'patch':>5} {'item GET':>8} {'other':>5} {'expected':>8}"
    )
    print(head)
    print("-" * len(head))
    for run in runs:
        k = classify(run.requests)
        rw, _, _ = replays[run.label]
        exp = sum(run.expected.values())
        print(
            f"{run.label:34} {run.wall_s:>7.3f} {run.server_s:>8.3f} {rw:>8.3f} "
            f"{run.report.get('seconds', 0):>7.3f} {len(run.requests):>5} {k['pages']:>5} {k['states']:>6} "
            f"{k['patch']:>5} {k['item_get']:>8} {k['other']:>5} {exp:>8}"
        )
    print(
        "  wall s: the reconcile() call (in-process) or the whole `orch` process; server s: time in the\n"
        "  fake's handler; replay s: the same requests again over one stdlib keep-alive connection;\n"
        "  orch s: the report's own `seconds` (inside reconcile()); expected: pages + states + PATCHes"
    )
    for r in runs:
        if r.cpu_s is not None:
            rest = r.wall_s - r.report["seconds"]
            print(f"  {r.tag}: child CPU {r.cpu_s:.3f} s (user+sys); outside reconcile() {rest:.3f} s")


def counters_table(runs: list[Run]) -> None:
    names: list[tuple[str, Callable[[dict[str, Any]], int]]] = []
    for key in ("advanced", "red", "replayed", "deduped", "deferred_lease", "errors"):
        names.append((key, lambda c, key=key: c[key]))
    for guard in reconcile_mod.GUARDS:
        names.append((f"skipped: {guard}", lambda c, guard=guard: c["skipped"][guard]))
    cols = [f"run {i + 1}" for i in range(len(runs))]
    head = f"{'counter':28}" + "".join(f"{c:>9}" for c in cols)
    print(head)
    print("-" * len(head))
    for name, get in names:
        print(f"{name:28}" + "".join(f"{get(r.report['counters']):>9}" for r in runs))


def parts_table(runs: list[Run]) -> None:
    head = f"{'part (inclusive; indent = inside the row above)':50}" + "".join(
        f"{'run ' + str(i + 1) + ' ms':>12}{'calls':>7}{'us/call':>9}" for i in range(len(runs))
    )
    print(head)
    print("-" * len(head))
    print(f"{'reconcile() wall':50}" + "".join(f"{r.wall_s * 1000:>12.1f}{1:>7}{'':>9}" for r in runs))
    for name, depth, _, _ in PARTS:
        cells = ""
        for r in runs:
            s, n = r.parts.get(name, (0.0, 0))
            per = f"{s / n * 1e6:>9.0f}" if n else f"{'-':>9}"
            cells += f"{s * 1000:>12.1f}{n:>7}{per}"
        print(f"{'  ' * depth + name:50}" + cells)


def budget(n_projects: int, per_page: int, first: Run, sim: list[Tick], run_budget: int) -> bool:
    """Plane's 60 requests a minute: the arithmetic and the throttled ticks; True if a steady tick fits."""
    limit = PLANE_PER_MINUTE
    pages = math.ceil(ITEMS / per_page)
    steady = n_projects * pages
    print(f"Plane allows {limit} requests a minute per API key; PlaneClient's per_page is at most {MAX_PP}.")
    print(f"  one listing of {ITEMS} items at per_page {per_page}: ceil({ITEMS}/{per_page}) = {pages} pages")
    print(
        f"  first run: {n_projects} x {pages} pages + {n_projects} states fetches (+ PATCHes) = "
        f"{steady + n_projects}+ requests; this run made {len(first.requests)}"
    )
    print(f"  steady tick (states cached for 300 s): {n_projects} x {pages} = {steady} requests")
    fits = steady <= limit
    if fits:
        print(f"  {steady} <= {limit}: a steady tick fits, {limit - steady} requests to spare")
    else:
        print(
            f"  {steady} > {limit}: {n_projects} projects x {ITEMS} items do NOT fit in one minute's budget."
        )
        per_project = limit // n_projects
        if per_project:
            need = math.ceil(ITEMS / per_project)
            print(
                f"  to fit, each project may take {limit}//{n_projects} = {per_project} pages: per_page >= "
                f"ceil({ITEMS}/{per_project}) = {need}, above the maximum of {MAX_PP}; at per_page {MAX_PP}, "
                f"{n_projects} projects fit only up to {per_project * MAX_PP} items each"
            )
        else:
            print(f"  {n_projects} projects need {n_projects} requests at the least: fewer projects per tick")
        print(
            f"  at per_page {per_page}: {limit // pages} projects per minute with states cached, "
            f"{limit // (pages + 1)} in a minute that also refreshes their states; one sweep of all "
            f"{n_projects} takes ceil({steady}/{limit}) = {math.ceil(steady / limit)} minutes of the whole "
            "budget, with nothing left for PATCHes"
        )
    print()
    what = f"[plane] requests_per_run = {run_budget}" if run_budget else "no per-run request budget in orch"
    print(f"{TICKS} ticks with {what}, the fake answering 429 (Retry-After: 60) past {limit} a tick:")
    for i, t in enumerate(sim, 1):
        print(
            f"  tick {i}: {t.wall_s:.2f} s, {t.answered} answered, {t.refused} refused; "
            f"listed {_keys(t.listed)}; deferred {_keys(t.deferred)}; failed {_keys(t.failed)}; "
            f"tasks skipped as tracker_unreadable {t.unreadable}; replayed {t.replayed}, PATCHes {t.patches}"
        )
    return fits


class Tick(NamedTuple):
    wall_s: float
    answered: int
    refused: int  # 429s
    listed: list[str]  # projects whose listing went through
    deferred: list[str]  # projects left for the next run (the run's request budget was spent)
    failed: list[str]  # projects whose listing failed (429 included)
    unreadable: int  # tasks skipped as tracker_unreadable
    replayed: int  # tracker-side replays (the approvals made before the ticks)
    patches: int


def approve_one_per_project(
    fake: BenchPlane, projects: dict[str, str], rows: list[Any]
) -> list[tuple[str, str]]:
    """In each project, a person approves one item waiting in Analysis and the webhook is lost:
    the ticks replay it, and orch's write-back (a PATCH to In Progress) competes for the budget."""
    moved: dict[str, str] = {}  # project identifier -> item id
    with fake.lock:
        for ident, _, iid, kind in rows:
            if kind.state == "analysis" and ident not in moved:
                project = fake.projects[projects[ident]]
                project["items"][iid]["state"] = _state_id(project, "Approved")
                moved[ident] = iid
    return list(moved.items())


def _state_id(project: dict[str, Any], name: str) -> str:
    return next(sid for sid, st in project["states"].items() if st["name"] == name)


def still_approved(fake: BenchPlane, projects: dict[str, str], moved: list[tuple[str, str]]) -> int:
    """The approved items that Plane still shows as Approved (orch's write-back never arrived)."""
    with fake.lock:
        return sum(
            fake.projects[projects[ident]]["items"][iid]["state"]
            == _state_id(fake.projects[projects[ident]], "Approved")
            for ident, iid in moved
        )


def ticks(cfg_path: Path, fake: BenchPlane, parts: Parts, keys: list[str]) -> list[Tick]:
    """TICKS runs, each with a fresh window of PLANE_PER_MINUTE requests at the fake (the best
    case: nothing else spends the key's budget in that minute)."""
    out = []
    fake.limit = PLANE_PER_MINUTE
    log.configure(level="error")  # one reconcile_tracker_failed warning per refused project: counted below
    try:
        for _ in range(TICKS):
            fake.window = 0
            run = run_in_process("tick", cfg_path, fake, parts, {})
            refused = max(0, fake.window - PLANE_PER_MINUTE)
            errors = [e for e in run.report["errors"] if e.startswith("project ")]
            failed = [e.removeprefix("project ").split(":")[0] for e in errors]
            deferred = list(run.report.get("deferred_projects", []))
            listed = [k for k in keys if k not in failed and k not in deferred]
            unreadable = run.report["counters"]["skipped"]["tracker_unreadable"]
            answered = len(run.requests) - refused
            replayed, patches = run.report["counters"]["replayed"], classify(run.requests)["patch"]
            out.append(
                Tick(run.wall_s, answered, refused, listed, deferred, failed, unreadable, replayed, patches)
            )
    finally:
        fake.limit = None
        log.configure()
    return out


def _keys(keys: list[str]) -> str:
    return f"{len(keys)}" + (f" ({', '.join(keys)})" if keys else "")


def db_stages(db: Path) -> str:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = conn.execute("SELECT stage, count(*) FROM tasks GROUP BY stage ORDER BY 2 DESC").fetchall()
        jobs = conn.execute("SELECT state, count(*) FROM jobs GROUP BY state ORDER BY 2 DESC").fetchall()
    finally:
        conn.close()
    total = sum(n for _, n in rows)
    return (
        f"{total:,} tasks ("
        + ", ".join(f"{s} {n}" for s, n in rows)
        + "); jobs "
        + ", ".join(f"{s} {n}" for s, n in jobs)
    )


# -- main --------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="4 projects instead of 20")
    ap.add_argument("--projects", type=int, help="number of Plane projects (default 20, --quick 4)")
    ap.add_argument(
        "--cli-runs", type=int, default=2, help="runs of `orch reconcile` in a new process (default 2)"
    )
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = ap.parse_args(argv)
    n_projects = args.projects or (4 if args.quick else 20)

    script = Path(sys.executable).parent / "orch"
    if not script.is_file():
        sys.exit(f"no console script at {script}: install orch into this venv (pip install -e .)")
    t_start = time.monotonic()
    for var in [v for v in os.environ if v.startswith("ORCH_")]:
        del os.environ[var]  # a stray $ORCH_HOME or override would change what is measured
    tmp = Path(tempfile.mkdtemp(prefix="orch-bench-reconcile-"))
    fake = BenchPlane().start()
    parts = Parts()
    os.environ["PLANE_API_KEY"] = fake.api_key
    try:
        rng = random.Random(20261124)
        t0 = time.perf_counter()
        projects, rows = seed_plane(fake, n_projects, rng)
        t_plane = time.perf_counter() - t0
        root = tmp / "site"
        cfg_path, budget_path = write_config(root, fake, projects)
        cfg = config_mod.load(cfg_path)
        t0 = time.perf_counter()
        n_tasks, n_jobs = seed_db(cfg.store.db_path, rows, time.time())
        t_db = time.perf_counter() - t0
        per_page = cfg.plane.per_page
        pages = n_projects * math.ceil(ITEMS / per_page)
        approvals = n_projects * sum(k.count for k in MIX if k.state == "approved")
        # The reconciler writes each linked task's stage back once: the approved ones (now in
        # development) and the tasks it creates from To Analyse items (shown as Analysis).
        approvals += n_projects * sum(k.count for k in MIX if k.state == "to_analyse")

        print(
            f"reconcile: python {platform.python_version()}, sqlite {sqlite3.sqlite_version}, "
            f"{os.cpu_count()} cpus, load average {os.getloadavg()[0]:.2f}, {platform.platform()}"
        )
        print(
            f"{n_projects} projects x {ITEMS} work items = {n_projects * ITEMS:,} items; "
            f"per_page {per_page}, states_ttl_s {cfg.plane.states_ttl_s:g}, grace_s 0"
            + (", requests_per_run 0 (no budget: one run lists every project)" if HAS_BUDGET else "")
        )
        print("mix per project: " + ", ".join(f"{k.label} {k.count} ({k.stage or '-'})" for k in MIX))
        print(
            f"seeded: fake Plane in {t_plane:.2f} s; orch DB in {t_db:.2f} s: {n_tasks:,} tasks, {n_jobs:,} "
            "succeeded jobs (one transaction)"
        )

        for name, _, owner, attr in PARTS:
            parts.wrap(owner, attr, name)
        runs = [
            run_in_process(
                "1 in-process, cold (no states)",
                cfg_path,
                fake,
                parts,
                {"pages": pages, "states": n_projects, "patch": approvals},
            ),
            run_in_process("2 in-process, warm (fresh runtime)", cfg_path, fake, parts, {"pages": pages}),
        ]

        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        env["PYTHONPYCACHEPREFIX"] = str(tmp / "pycache")
        # Bytecode for orch and what it imports, in the private prefix: the runs measure no compiling.
        orch_dir = Path(config_mod.__file__).parent.parent  # orch/config/__init__.py -> orch/
        subprocess.run([sys.executable, "-m", "compileall", "-q", str(orch_dir)], env=env, check=True)
        subprocess.run([sys.executable, "-c", WARM_IMPORTS], env=env, check=True)
        cmd = [str(script), "-c", str(cfg_path), "reconcile", "--json"]
        for i in range(args.cli_runs):
            label = f"{3 + i} new process (orch reconcile)"
            runs.append(run_cli(label, cmd, env, root, fake, {"pages": pages}))
        replays = {r.label: replay(fake, r.requests) for r in runs}
        in_process = [r for r in runs if r.cpu_s is None]
        moved = approve_one_per_project(fake, projects, rows)
        sim = ticks(budget_path, fake, parts, list(projects))
        drift = still_approved(fake, projects, moved)
        run_budget = config_mod.load(budget_path).plane.requests_per_run if HAS_BUDGET else 0
        parts.undo()

        print(f"after the runs and ticks: {db_stages(cfg.store.db_path)}")
        print()
        requests_table(runs, replays)
        bad = sum(b for _, _, b in replays.values())
        if bad:
            print(f"!! {bad} replayed requests were not answered 2xx")
        print()
        counters_table(runs)
        print()
        parts_table(in_process)
        git = in_process[0].parts.get("forge_local.git (subprocess, any caller)", (0.0, 0))
        gate = in_process[0].parts.get("_gate_side", (0.0, 0))
        if git[1]:
            share, whole = git[0] / gate[0], git[0] / in_process[0].wall_s
            print(
                f"  run 1: {git[1]} git subprocesses, {git[0] * 1000:.0f} ms = {share:.0%} of the gate side, "
                f"{whole:.0%} of the run, {git[0] / git[1] * 1000:.1f} ms each"
            )
        print()
        fits = budget(n_projects, per_page, runs[0], sim, run_budget)
        print(
            f"  before the ticks, {len(moved)} items (one per project) went from Analysis to Approved, "
            f"webhooks lost; after the ticks {drift} of them still show Approved in Plane"
        )
    finally:
        parts.undo()
        fake.stop()
        scratch.leave(tmp, args.keep)

    print()
    print(f"total bench time {time.monotonic() - t_start:.1f} s")
    for r in in_process:
        limit = GOAL_BASE_S + r.server_s
        met = "met" if r.wall_s <= limit else "NOT met"
        what = f"wall <= {GOAL_BASE_S:g} s + server {r.server_s:.3f} s"
        print(f"goal: {what} [{r.tag}] -> {r.wall_s:.3f} s ({met})")
    for r in runs:
        k = classify(r.requests)
        exp = sum(r.expected.values())
        ok = len(r.requests) == exp and all(k[n] == r.expected.get(n, 0) for n in KINDS)
        shape = " + ".join(f"{r.expected[n]} {n}" for n in ("pages", "states", "patch") if r.expected.get(n))
        print(
            f"goal: requests == {shape} = {exp} [{r.tag}] -> {len(r.requests)} "
            f"(item GETs {k['item_get']}) ({'met' if ok else 'NOT met'})"
        )
    steady = n_projects * math.ceil(ITEMS / per_page)
    print(
        f"goal: one run listing all {n_projects} projects (states cached) <= {PLANE_PER_MINUTE} requests "
        f"(Plane's default a minute) -> {steady} ({'met' if fits else 'NOT met'})"
    )
    most = max(t.answered + t.refused for t in sim)
    seen: set[str] = set()
    covered = None
    for i, t in enumerate(sim, 1):
        seen.update(t.listed)
        if covered is None and len(seen) == n_projects:
            covered = i
    ok = most <= PLANE_PER_MINUTE and covered is not None
    cover = (
        f"all {n_projects} projects listed by tick {covered}"
        if covered
        else f"{len(seen)} projects ever listed"
    )
    print(
        f"goal: every tick <= {PLANE_PER_MINUTE} requests and every project listed [{TICKS} ticks, "
        f"requests_per_run {run_budget or 'none'}] -> max {most}, {cover} ({'met' if ok else 'NOT met'})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
