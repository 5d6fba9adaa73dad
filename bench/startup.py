"""Cold start of the `orch` command against a stdlib script doing the same kind of work.

Every command runs as a fresh subprocess of this venv's python (sys.executable), RUNS
times each, interleaved round by round so that drift hits every command alike:

  floor       `python -c pass`: the interpreter (and site) alone, for scale
  reference   a stdlib script: argparse of one positional + sqlite3 connect + read one row
  --help      `python -m orch --help` and the console script `.venv/bin/orch --help`
  advance     `orch -c orch.toml advance B-1` on a task whose gate is red (exit 3, no write),
              both as `python -m orch` and as the console script

The goals are judged on the console script (what cron and hooks run): median <= 3x the
reference's median, for `orch --help` and for the red `orch advance`.

Two environments are measured. "cached": bytecode caching on, in a private
PYTHONPYCACHEPREFIX (as after a normal `pip install`, and nothing is written beside the
sources). "inherited": the environment this script was started in, unchanged; if it sets
PYTHONDONTWRITEBYTECODE=1, orch's own modules (an editable install has no .pyc files)
are compiled from source on every run. Then `python -X importtime` shows where the red
advance spends its start-up. Everything lives in a temporary directory; no network.

    .venv/bin/python bench/startup.py            # 20 runs per command
    .venv/bin/python bench/startup.py --quick    # 5 runs per command
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import scratch

GOAL_RATIO = 3.0
WARMUP = 2

REFERENCE_SCRIPT = """\
import argparse
import sqlite3

parser = argparse.ArgumentParser(description="reference: what a minimal CLI must do")
parser.add_argument("key")
args = parser.parse_args()
conn = sqlite3.connect({db!r})
row = conn.execute("SELECT stage FROM tasks WHERE key = ?", (args.key,)).fetchone()
print(args.key, row[0])
"""


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    s = sorted(values)
    rank = max(1, round(q / 100 * len(s) + 0.5))
    return s[min(rank, len(s)) - 1]


def clean_env(base: dict[str, str]) -> dict[str, str]:
    """`base` without ORCH_* (a stray $ORCH_HOME or $ORCH_CONFIG would change what is measured)."""
    return {k: v for k, v in base.items() if not k.startswith("ORCH_")}


def run(cmd: list[str], *, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=60)


def setup(tmp: Path, orch_cmd: list[str], env: dict[str, str]) -> tuple[Path, Path]:
    """A git repo, an orch.toml, one task at `analysis` (human gate: red); and the reference DB."""
    repo = tmp / "repo"
    git_env = {**env, "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1"}
    ident = ["-c", "user.name=bench", "-c", "user.email=bench@localhost", "-c", "commit.gpgsign=false"]
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], env=git_env, check=True)
    (repo / "README").write_text("bench\n")
    subprocess.run(["git", "-C", str(repo), "add", "README"], env=git_env, check=True)
    subprocess.run(["git", "-C", str(repo), *ident, "commit", "-q", "-m", "init"], env=git_env, check=True)
    toml = tmp / "orch.toml"
    # A JSON string is a valid TOML basic string for any path.
    # No immediate start: a runner started by `task add` would write while the bench
    # checks that a red advance writes nothing.
    toml.write_text(
        f'[repos.app]\npath = {json.dumps(str(repo))}\n\n[store]\npath = ".orch/orch.db"\n\n'
        "[work]\nstart_immediately = false\n"
    )
    added = run([*orch_cmd, "-c", str(toml), "task", "add", "x", "--key", "B-1"], env=env, cwd=tmp)
    if added.returncode != 0:
        sys.exit(f"setup failed: orch task add exited {added.returncode}: {added.stderr.strip()}")

    ref_db = tmp / "ref.db"
    conn = sqlite3.connect(ref_db)
    conn.execute("CREATE TABLE tasks (key TEXT PRIMARY KEY, stage TEXT NOT NULL)")
    conn.execute("INSERT INTO tasks VALUES ('B-1', 'analysis')")
    conn.commit()
    conn.close()
    ref = tmp / "reference.py"
    ref.write_text(REFERENCE_SCRIPT.format(db=str(ref_db)))
    return toml, ref


def snapshot(db: Path) -> tuple[object, ...]:
    """What `advance` could change: the task row and the size of every other table."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        task = conn.execute(
            "SELECT stage, version, blocked, updated_at FROM tasks WHERE key = 'B-1'"
        ).fetchone()
        counts = tuple(
            conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
            for t in ("tasks", "transitions", "leases", "effects", "jobs", "verdicts", "outbox")
        )
    finally:
        conn.close()
    return (task, counts)


def timed(cmd: list[str], *, env: dict[str, str], cwd: Path) -> tuple[float, float, int]:
    """(wall seconds, child CPU seconds user+sys, exit code) of one run.

    os.wait4 blocks until the child exits: subprocess's wait(timeout=...) would poll with
    growing sleeps and round every time up to its next poll (15.5, 31.5, 63.5, 113.5 ms...).
    """
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    return wall, usage.ru_utime + usage.ru_stime, proc.returncode


def measure(
    commands: list[tuple[str, list[str], int]], *, env: dict[str, str], cwd: Path, runs: int
) -> dict[str, list[tuple[float, float, int]]]:
    """Interleaved timing: warm-up rounds, then `runs` rounds of every command once."""
    results: dict[str, list[tuple[float, float, int]]] = {name: [] for name, _, _ in commands}
    for rnd in range(WARMUP + runs):
        for name, cmd, _ in commands:
            sample = timed(cmd, env=env, cwd=cwd)
            if rnd >= WARMUP:
                results[name].append(sample)
    return results


def report(
    title: str,
    commands: list[tuple[str, list[str], int]],
    results: dict[str, list[tuple[float, float, int]]],
) -> dict[str, float]:
    """Print one table; returns each command's ratio to the reference (medians of wall time)."""
    ref_wall = statistics.median(w for w, _, _ in results["reference"])
    ref_cpu = statistics.median(c for _, c, _ in results["reference"])
    print()
    print(title)
    head = (
        f"{'command':40} {'median ms':>9} {'p90 ms':>7} {'min ms':>7} {'x ref':>6} "
        f"{'cpu ms':>7} {'cpu x ref':>9}  exit codes"
    )
    print(head)
    print("-" * len(head))
    ratios = {}
    for name, _, expect in commands:
        walls = [w for w, _, _ in results[name]]
        cpu = statistics.median(c for _, c, _ in results[name])
        med = statistics.median(walls)
        ratios[name] = med / ref_wall
        wrong = [rc for _, _, rc in results[name] if rc != expect]
        codes = f"all {expect}"
        if wrong:
            codes = f"UNEXPECTED {sorted(set(wrong))} x{len(wrong)} (want {expect})"
        print(
            f"{name:40} {med * 1000:>9.1f} {pct(walls, 90) * 1000:>7.1f} {min(walls) * 1000:>7.1f} "
            f"{ratios[name]:>6.2f} {cpu * 1000:>7.1f} {cpu / ref_cpu:>9.2f}  {codes}"
        )
    return ratios


def importtime(cmd: list[str], *, env: dict[str, str], cwd: Path, repeats: int, top: int = 10) -> None:
    """The `top` imports by cumulative time (median over `repeats` runs), with their self time."""
    cum: dict[str, list[int]] = {}
    own: dict[str, list[int]] = {}
    depth: dict[str, int] = {}
    totals = []
    for _ in range(repeats):
        out = run([cmd[0], "-X", "importtime", *cmd[1:]], env=env, cwd=cwd)
        total = 0
        for line in out.stderr.splitlines():
            if not line.startswith("import time:") or "self [us]" in line:
                continue
            self_us, cum_us, name = line[len("import time:") :].split("|")
            key = name.strip()
            cum.setdefault(key, []).append(int(cum_us))
            own.setdefault(key, []).append(int(self_us))
            depth[key] = (len(name) - len(name.lstrip()) - 1) // 2
            if depth[key] == 0:
                total += int(cum_us)
        totals.append(total)
    ranked = sorted(cum, key=lambda k: statistics.median(cum[k]), reverse=True)[:top]
    print()
    print(f"python -X importtime, red advance (cached bytecode), median of {repeats} run(s):")
    print(f"  all imports: {statistics.median(totals) / 1000:.1f} ms")
    head = f"  {'cumulative ms':>13} {'self ms':>8}  module (indent = import depth)"
    print(head)
    print("  " + "-" * (len(head) - 2))
    for k in ranked:
        print(
            f"  {statistics.median(cum[k]) / 1000:>13.1f} {statistics.median(own[k]) / 1000:>8.1f}  "
            f"{'  ' * depth[k]}{k}"
        )


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
    tmp = Path(tempfile.mkdtemp(prefix="orch-bench-start-"))
    inherited = clean_env(dict(os.environ))
    cached = {k: v for k, v in inherited.items() if k != "PYTHONDONTWRITEBYTECODE"}
    cached["PYTHONPYCACHEPREFIX"] = str(tmp / "pycache")
    dont_write = inherited.get("PYTHONDONTWRITEBYTECODE")
    envs = [
        ("cached", cached, "bytecode cached in a private PYTHONPYCACHEPREFIX (as after pip install)"),
        (
            "inherited",
            inherited,
            "inherited environment, PYTHONDONTWRITEBYTECODE="
            + (f"{dont_write} (orch's modules compiled from source every run)" if dont_write else "unset"),
        ),
    ]
    try:
        toml, ref = setup(tmp, [py, "-m", "orch"], cached)
        db = tmp / ".orch" / "orch.db"
        adv = ["-c", str(toml), "advance", "B-1"]
        commands = [
            ("floor: python -c pass", [py, "-c", "pass"], 0),
            ("reference", [py, str(ref), "B-1"], 0),
            ("python -m orch --help", [py, "-m", "orch", "--help"], 0),
            ("orch --help (console script)", [str(script), "--help"], 0),
            ("python -m orch advance B-1 (red)", [py, "-m", "orch", *adv], 3),
            ("orch advance B-1 (red, console script)", [str(script), *adv], 3),
        ]
        print(
            f"start-up: python {platform.python_version()} ({py}), {os.cpu_count()} cpus, "
            f"load average {os.getloadavg()[0]:.2f}, "
            f"{platform.platform()}; median of {runs} runs per command, {WARMUP} warm-up rounds"
        )
        red = run([str(script), *adv], env=cached, cwd=tmp)
        print(f"red advance says (exit {red.returncode}): {red.stderr.strip() or red.stdout.strip()}")
        if red.returncode != 3:
            print(f"WARNING: red advance exited {red.returncode}, expected 3")

        before = snapshot(db)
        tables = {}
        for label, env, title in envs:
            results = measure(commands, env=env, cwd=tmp, runs=runs)
            tables[label] = report(f"[{label}] {title}", commands, results)
        after = snapshot(db)
        print()
        if after == before:
            print(f"red advance changed nothing in the database ({2 * len(envs) * (WARMUP + runs)} runs)")
        else:
            print(f"WARNING: red advance changed the database: before {before}, after {after}")

        importtime([py, "-m", "orch", *adv], env=cached, cwd=tmp, repeats=1 if args.quick else 3)
    finally:
        scratch.leave(tmp, args.keep)

    print()
    print(f"total bench time {time.monotonic() - t_start:.1f} s")
    for label, _, _ in envs:
        for name, what in (
            ("orch --help (console script)", "orch --help"),
            ("orch advance B-1 (red, console script)", "red orch advance"),
        ):
            r = tables[label][name]
            met = "met" if r <= GOAL_RATIO else "NOT met"
            print(f"goal: {what} [{label}] ratio <= {GOAL_RATIO:.1f} -> {r:.2f} ({met})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
