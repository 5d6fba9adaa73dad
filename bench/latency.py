"""No dead minutes: how long a queued job waits to start when nobody runs `orch tick`.

Set-up, in a temporary directory: `orch demo`'s repository, scripted agents and orch.toml
(orch.app.demo.write_setup), with `[work] max_concurrency = 4`, `start_immediately = true`
(the default), no backoff, and the repository's CI command `test -f <tmp>/ci-green`. No
tick runs during the bench: every job start comes from the immediate starts alone.

  end -> start   50 tasks, in waves of 4 (max_concurrency: a slot is always free, so
                 what is measured is the start, not the queue). Each task is added (its
                 analyst starts at once) and approved, in this process, by the calls
                 `orch task add` and `orch approve` make (its developer starts at
                 once); the developer's end finds CI green (the marker file
                 exists), the task moves to review and the runner that ends starts the
                 reviewer. Sample: reviewer.started_at - developer.ended_at, per task.
  202 -> start   50 more tasks, with the marker file absent: the developer's end finds
                 CI red and nothing starts. Then, in waves of 4, a signed Gitea `status`
                 webhook (state success, context orch/ci, the branch head) goes to
                 `orch.app.relay.Relay` on 127.0.0.1 (port 0, in this process, drain on);
                 its drain advances the task to review and starts the reviewer. Sample:
                 reviewer.started_at - the client's clock when it read the 202.

Both use the database's own times (time.time() in each process; one host, one clock).
Reported: p50, p90, p99 and max of each, and the peak number of jobs running at once
over every job of the run (from started_at / ended_at), which must never pass
max_concurrency. Goal: p50 <= 1 s and p99 <= 3 s for both; the peak <= 4.

    .venv/bin/python bench/latency.py            # 50 tasks per part (~1 min on 2 cores)
    .venv/bin/python bench/latency.py --quick    # 12 tasks per part
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import http.client
import json
import os
import platform
import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

GOAL_P50_S = 1.0
GOAL_P99_S = 3.0
MAX_CONCURRENCY = 4
SECRET_ENV = "ORCH_GITEA_WEBHOOK_SECRET"


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    s = sorted(values)
    rank = max(1, round(q / 100 * len(s) + 0.5))
    return s[min(rank, len(s)) - 1]


def jobs(db: Path) -> list[dict[str, Any]]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    conn.row_factory = sqlite3.Row
    try:
        return [
            dict(r)
            for r in conn.execute(
                "SELECT j.*, t.key FROM jobs j JOIN tasks t ON t.id = j.task_id ORDER BY j.id"
            )
        ]
    finally:
        conn.close()


def wait_for(pred: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.02)
    raise SystemExit(f"timed out waiting for {what}")


def done_jobs(db: Path, keys: set[str], agent: str) -> dict[str, dict[str, Any]]:
    """Each task's succeeded job of `agent` (a failed attempt, e.g. a job whose start found
    the repository busy with another runner's git, is retried and not counted)."""
    rows = [j for j in jobs(db) if j["key"] in keys and j["agent"] == agent]
    return {j["key"]: j for j in rows if j["state"] == "succeeded"}


def setup(root: Path) -> tuple[Path, Path]:
    import tomllib

    import tomli_w

    from orch.app import demo

    cfg_path = demo.write_setup(root / "site")
    data = tomllib.loads(cfg_path.read_text())
    data["work"] = {
        "max_concurrency": MAX_CONCURRENCY,
        "start_immediately": True,
        "backoff_base_s": 0,
        "backoff_max_s": 0,
    }
    marker = root / "ci-green"
    data["repos"]["app"]["ci"] = f"test -f {marker}"
    cfg_path.write_text(tomli_w.dumps(data))
    from orch import config
    from orch.app.wiring import open_runtime

    open_runtime(config.load(cfg_path)).close()  # what `orch init` does: create the database
    return cfg_path, marker


def add_and_develop(cfg: Path, db: Path, keys: list[str]) -> None:
    """Add the tasks, let the analysts run (they start at once), approve: the developers start.

    In this process, through the calls `orch task add` and `orch approve` make (add or
    verdict, advance, then `jobs.start_now`): a subprocess per person's action would
    only add the bench's own start-up time between waves."""
    from orch import config
    from orch.app.wiring import open_runtime
    from orch.engine import advance, jobs, tasks

    rt = open_runtime(config.load(cfg), actor="person:bench")
    try:
        for k in keys:
            tasks.add(rt, f"latency {k}", key=k)
            jobs.start_now(rt)
        wait_for(lambda: len(done_jobs(db, set(keys), "analyst")) == len(keys), 120, "the analysts")
        for k in keys:
            tasks.verdict(rt, k, "approve")
            advance.advance(rt, k)
            jobs.start_now(rt)
    finally:
        rt.close()


def part_end_to_start(cfg: Path, db: Path, n: int) -> list[float]:
    samples: list[float] = []
    for wave in range(0, n, MAX_CONCURRENCY):
        keys = [f"E-{i}" for i in range(wave, min(n, wave + MAX_CONCURRENCY))]
        add_and_develop(cfg, db, keys)
        wait_for(lambda k=keys: len(done_jobs(db, set(k), "reviewer")) == len(k), 120, "the reviewers")
        dev, rev = done_jobs(db, set(keys), "developer"), done_jobs(db, set(keys), "reviewer")
        samples += [rev[k]["started_at"] - dev[k]["ended_at"] for k in keys]
    return samples


def status_delivery(sha: str, n: int, secret: bytes) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(
        {
            "id": n,
            "sha": sha,
            "state": "success",
            "context": "orch/ci",
            "description": "bench",
            "target_url": "",
            "repository": {"full_name": "bench/app", "name": "app"},
        },
        indent=2,
    ).encode()
    return body, {
        "Content-Type": "application/json",
        "X-Gitea-Event": "status",
        "X-Gitea-Event-Type": "status",
        "X-Gitea-Delivery": f"latency-{n}",
        "X-Gitea-Signature": hmac.new(secret, body, hashlib.sha256).hexdigest(),
    }


def part_webhook_to_start(cfg_path: Path, db: Path, n: int) -> tuple[list[float], list[float]]:
    from orch import config
    from orch.app.relay import Relay
    from orch.app.wiring import open_runtime

    cfg = config.load(cfg_path)
    secret = os.environ[SECRET_ENV].encode()
    relay = Relay(cfg, host="127.0.0.1", port=0).start()
    port = int(relay.address[1])
    samples: list[float] = []
    acks: list[float] = []
    try:
        for wave in range(0, n, MAX_CONCURRENCY):
            keys = [f"W-{i}" for i in range(wave, min(n, wave + MAX_CONCURRENCY))]
            add_and_develop(cfg_path, db, keys)
            wait_for(lambda k=keys: len(done_jobs(db, set(k), "developer")) == len(k), 120, "the developers")
            rt = open_runtime(cfg, actor="bench")
            try:
                heads = {k: rt.forge.branch_head(rt.task(k)) for k in keys}
            finally:
                rt.close()
            sent: dict[str, float] = {}
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            for i, k in enumerate(keys):
                body, headers = status_delivery(str(heads[k]), wave + i, secret)
                t0 = time.time()
                conn.request("POST", "/hooks/gitea", body=body, headers=headers)
                resp = conn.getresponse()
                resp.read()
                sent[k] = time.time()
                acks.append(sent[k] - t0)
                if resp.status != 202:
                    raise SystemExit(f"relay answered {resp.status} for {k}")
            conn.close()

            def first_reviewers(k: list[str] = keys) -> dict[str, dict[str, Any]]:
                out: dict[str, dict[str, Any]] = {}
                for j in jobs(db):  # by id: the first reviewer job of each task
                    if j["key"] in k and j["agent"] == "reviewer":
                        out.setdefault(j["key"], j)
                return out

            def started(k: list[str] = keys) -> bool:
                rows = first_reviewers(k)
                return len(rows) == len(k) and all(j["started_at"] for j in rows.values())

            wait_for(started, 120, "the reviewers after the webhooks")
            rev = first_reviewers(keys)
            samples += [rev[k]["started_at"] - sent[k] for k in keys]
    finally:
        relay.close()
    return samples, acks


def peak_running(rows: list[dict[str, Any]]) -> int:
    events = sorted(
        [(j["started_at"], 1) for j in rows if j["started_at"]]
        + [(j["ended_at"], -1) for j in rows if j["started_at"] and j["ended_at"]]
    )
    running = peak = 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    return peak


def line(name: str, values: list[float]) -> str:
    ms = [v * 1000 for v in values]
    return (
        f"  {name:<16} n={len(ms):<3} p50 {pct(ms, 50):7.0f} ms  p90 {pct(ms, 90):7.0f} ms"
        f"  p99 {pct(ms, 99):7.0f} ms  max {max(ms):7.0f} ms"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="12 tasks per part instead of 50")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = ap.parse_args(argv)
    n = 12 if args.quick else 50
    os.environ[SECRET_ENV] = hashlib.sha256(os.urandom(16)).hexdigest()
    root = Path(tempfile.mkdtemp(prefix="orch-latency-"))
    t0 = time.monotonic()
    try:
        cfg, marker = setup(root)
        db = cfg.parent / ".orch" / "orch.db"
        load = os.getloadavg()[0]
        print(
            f"immediate starts: python {platform.python_version()}, sqlite {sqlite3.sqlite_version}, "
            f"{os.cpu_count()} cpus, load average {load:.2f}, {platform.platform()}"
        )
        print(f"{n} tasks per part, waves of {MAX_CONCURRENCY} (max_concurrency), instant agents, no tick")
        marker.touch()
        a = part_end_to_start(cfg, db, n)
        marker.unlink()
        b, acks = part_webhook_to_start(cfg, db, n)
        rows = jobs(db)
        peak = peak_running(rows)
        print(line("end -> start", a))
        print(line("202 -> start", b))
        print(line("(202 ack)", acks))
        print(f"  jobs: {len(rows)}, peak running at once {peak} (max_concurrency {MAX_CONCURRENCY})")
        print(f"total bench time {time.monotonic() - t0:.1f} s")
        for name, values in (("end -> start", a), ("202 -> start", b)):
            p50, p99 = pct(values, 50), pct(values, 99)
            met = p50 <= GOAL_P50_S and p99 <= GOAL_P99_S
            print(
                f"goal: {name} p50 <= {GOAL_P50_S:.0f} s and p99 <= {GOAL_P99_S:.0f} s -> "
                f"{p50:.2f} s / {p99:.2f} s ({'met' if met else 'NOT met'})"
            )
        print(
            f"goal: never more than {MAX_CONCURRENCY} running -> {peak} ({'met' if peak <= 4 else 'NOT met'})"
        )
    finally:
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
