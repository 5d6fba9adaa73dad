"""The webhook relay under load: signed Gitea `push` deliveries from 8 keep-alive clients.

A temp orch setup (a git repo from orch.adapters.git.init_repo, an orch.toml with
[repos.app] and [store] path) and `orch.app.relay.Relay` on 127.0.0.1, port 0, in this
process. N distinct push deliveries (default 10,000), each signed with X-Gitea-Signature
(hex HMAC-SHA256 of the body), go to POST /hooks/gitea from 8 client processes, each over
one stdlib `http.client` keep-alive connection, one request at a time. The pushes name a
repository that is not configured, so processing one is a cheap "ignored": what is
measured is the relay, not the engine.

Clients are processes, not threads: the relay runs in this process and is Python, so
client threads would take the same GIL as the server's threads, and every microsecond of
client-side request building and response parsing would show up as server latency. In
separate processes the clients cost CPU time only (2 cores here: they still compete for
the cores, which the load figure shows). Bodies are built and signed before the start.

Four runs, each over a fresh database:

  drain on           Relay(...): the drain thread processes deliveries while they arrive
                     (what `orch relay serve` does); the bench then polls the inbox until
                     nothing is pending and reports how long that took.
  ack only           Relay(..., drain=False): only the ack path (verify, commit durably,
                     202). The backlog is then drained in-process with
                     orch.engine.inbox.drain, for the drain's own rate.
  drain on, nodelay  the same two with `disable_nagle_algorithm = True` on this relay's
  ack only, nodelay  handler class (TCP_NODELAY: the response's header and body writes
                     do not wait for a delayed ACK). The second one's backlog is then
                     left to a Relay started over it (a restart after downtime), for 15 s.
                     `--stock` skips these two.

Reported per run: ack latency p50/p90/p99/max (ms, measured by the client from sending
the request to reading the whole response), deliveries/s, the count of 202s, the rows in
the inbox afterwards (must equal the 202s) and the drain time. Goal: p99 ack <= 20 ms.

    .venv/bin/python bench/relay.py            # 10,000 deliveries per run, ~3 min
    .venv/bin/python bench/relay.py --quick    # 1,000, ~25 s
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import http.client
import json
import multiprocessing as mp
import os
import platform
import queue
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import scratch

GOAL_P99_MS = 20.0
SECRET_ENV = "ORCH_GITEA_WEBHOOK_SECRET"
UNCONFIGURED = "bench/not-configured"


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    s = sorted(values)
    rank = max(1, round(q / 100 * len(s) + 0.5))
    return s[min(rank, len(s)) - 1]


# -- the clients (stdlib only: a spawned child imports this module, not orch) -------------------


def delivery(i: int, run: str, secret: bytes) -> tuple[bytes, dict[str, str]]:
    """Push number `i`: a distinct body (its own `after` sha and delivery id), signed."""
    after = hashlib.sha1(f"{run}-{i}".encode()).hexdigest()
    before = hashlib.sha1(f"{run}-{i}-before".encode()).hexdigest()
    body = json.dumps(
        {
            "ref": "refs/heads/feature/bench",
            "before": before,
            "after": after,
            "compare_url": f"http://gitea.invalid/{UNCONFIGURED}/compare/{before}...{after}",
            "commits": [
                {
                    "id": after,
                    "message": f"bench commit {i}\n",
                    "url": f"http://gitea.invalid/{UNCONFIGURED}/commit/{after}",
                    "author": {"name": "bench", "email": "bench@orch.invalid", "username": "bench"},
                    "timestamp": "2026-05-01T10:00:00Z",
                }
            ],
            "total_commits": 1,
            "repository": {
                "id": 1,
                "name": "not-configured",
                "full_name": UNCONFIGURED,
                "default_branch": "main",
                "html_url": f"http://gitea.invalid/{UNCONFIGURED}",
            },
            "pusher": {"id": 1, "login": "bench"},
            "sender": {"id": 1, "login": "bench"},
        }
    ).encode()
    headers = {
        "Content-Type": "application/json",
        "X-Gitea-Event": "push",
        "X-Gitea-Event-Type": "push",
        "X-Gitea-Delivery": f"{run}-{i:06d}",
        "X-Gitea-Signature": hmac.new(secret, body, hashlib.sha256).hexdigest(),
    }
    return body, headers


def client(
    idx: int,
    clients: int,
    total: int,
    port: int,
    secret: bytes,
    run: str,
    barrier: Any,
    out: Any,
    every_s: float = 0.0,
) -> None:
    """Send this client's share of the deliveries, one at a time: back to back, or (every_s)
    each at its own scheduled time, so that a slow answer does not slow the stream."""
    work = [delivery(i, run, secret) for i in range(idx, total, clients)]
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.connect()
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    duplicates = reconnects = 0
    barrier.wait()
    start = time.monotonic()
    for k, (body, headers) in enumerate(work):
        if every_s:
            time.sleep(max(0.0, start + k * every_s - time.monotonic()))
        t = time.perf_counter()
        conn.request("POST", "/hooks/gitea", body=body, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        latencies.append(time.perf_counter() - t)
        statuses[resp.status] = statuses.get(resp.status, 0) + 1
        if resp.status == 202 and json.loads(data).get("duplicate"):
            duplicates += 1
        if resp.will_close:
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            reconnects += 1
    end = time.monotonic()
    conn.close()
    out.put(
        {
            "latencies": latencies,
            "statuses": statuses,
            "duplicates": duplicates,
            "reconnects": reconnects,
            "start": start,
            "end": end,
        }
    )


# -- one run -------------------------------------------------------------------------------------


def setup(root: Path, url: str = "") -> Path:
    """A git repo and an orch.toml naming it; the store is .orch/orch.db, or PostgreSQL at `url`."""
    from orch.adapters.git import init_repo

    repo = root / "repo"
    init_repo(repo)
    toml = root / "orch.toml"
    # A JSON string is a valid TOML basic string for any path.
    store = f"url = {json.dumps(url)}" if url else 'path = ".orch/orch.db"'
    toml.write_text(f"[repos.app]\npath = {json.dumps(str(repo))}\n\n[store]\n{store}\n")
    return toml


def inbox_states(db: Path) -> dict[str, int]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        return dict(conn.execute("SELECT state, count(*) FROM inbox GROUP BY state").fetchall())
    finally:
        conn.close()


def collect(procs: list[Any], out: Any) -> list[dict[str, Any]]:
    """Every client's result; a client that died is an error of the bench, not a slow result."""
    parts: list[dict[str, Any]] = []
    while len(parts) < len(procs):
        try:
            parts.append(out.get(timeout=1))
        except queue.Empty:
            dead = [p.exitcode for p in procs if p.exitcode not in (None, 0)]
            if dead:
                sys.exit(f"bench client(s) failed with exit code(s) {dead}")
    for p in procs:
        p.join(timeout=30)
    return parts


def wait_drained(db: Path, timeout: float) -> tuple[float, dict[str, int]]:
    """Poll the inbox until nothing is pending or failed (or `timeout`); returns when and the states."""
    deadline = time.monotonic() + timeout
    while True:
        states = inbox_states(db)
        now = time.monotonic()
        if (not states.get("pending") and not states.get("failed")) or now > deadline:
            return now, states
        time.sleep(0.02)


def run(
    label: str,
    *,
    drain: bool,
    nodelay: bool,
    after: str | None,
    total: int,
    clients: int,
    root: Path,
    drain_timeout: float,
    restart_timeout: float,
) -> dict[str, Any]:
    """One run over a fresh database. `after` (ack-only runs): what drains the backlog."""
    from orch import config
    from orch.app.relay import Relay
    from orch.app.wiring import open_runtime
    from orch.engine import inbox

    cfg = config.load(setup(root), environ={})
    secret = os.environ[SECRET_ENV].encode()
    load_before = os.getloadavg()[0]
    open_runtime(cfg).close()  # as `orch init` does: the relay never creates the database
    # Since the relay moved to asyncio (which sets TCP_NODELAY and writes each answer in one
    # go), `nodelay` no longer changes anything: the two label pairs measure the same server.
    relay = Relay(cfg, host="127.0.0.1", port=0, drain=drain)
    relay.start()
    port = relay.address[1]
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(clients + 1)
    out = ctx.Queue()
    procs = [
        ctx.Process(target=client, args=(k, clients, total, port, secret, label, barrier, out), daemon=True)
        for k in range(clients)
    ]
    result: dict[str, Any] = {"label": label, "load_before": load_before}
    try:
        for p in procs:
            p.start()
        barrier.wait(timeout=60)
        parts = collect(procs, out)
        t0 = min(r["start"] for r in parts)
        t_acked = max(r["end"] for r in parts)
        result["load_end"] = os.getloadavg()[0]
        if drain:
            t_drained, states = wait_drained(cfg.store.db_path, drain_timeout)
            result["drain"] = (
                f"all done {t_drained - t_acked:.2f} s after the last ack "
                f"({t_drained - t0:.2f} s after the first delivery)"
                if not states.get("pending") and not states.get("failed")
                else f"NOT drained {t_drained - t_acked:.0f} s after the last ack: {states}"
            )
    finally:
        relay.close()

    latencies = [x * 1000 for r in parts for x in r["latencies"]]
    statuses: dict[int, int] = {}
    for r in parts:
        for code, n in r["statuses"].items():
            statuses[code] = statuses.get(code, 0) + n
    conn = sqlite3.connect(f"file:{cfg.store.db_path}?mode=ro", uri=True)
    try:
        rows = int(conn.execute("SELECT count(*) FROM inbox").fetchone()[0])
    finally:
        conn.close()
    result.update(
        latencies_ms=latencies,
        statuses=statuses,
        duplicates=sum(r["duplicates"] for r in parts),
        reconnects=sum(r["reconnects"] for r in parts),
        wall_s=t_acked - t0,
        rows=rows,
        states=inbox_states(cfg.store.db_path),
    )
    backlog = result["states"].get("pending", 0)
    if after == "drain":
        # The backlog drained in-process, the way a tick drains it: the drain's own rate.
        rt = open_runtime(cfg, actor="bench-drain")
        try:
            t = time.monotonic()
            while inbox.drain(rt)["done"]:
                pass
            took = time.monotonic() - t
        finally:
            rt.close()
        result["drain"] = (
            f"off; then inbox.drain alone: {backlog:,} in {took:.2f} s ({backlog / took:,.0f}/s)"
        )
    elif after == "restart":
        # A relay (re)started over a backlog, e.g. after downtime: how soon is it processed?
        relay = Relay(cfg, host="127.0.0.1", port=0).start()
        t = time.monotonic()
        try:
            t_end, states = wait_drained(cfg.store.db_path, restart_timeout)
        finally:
            relay.close()
        done = states.get("done", 0)
        left = backlog - done
        result["drain"] = (
            f"off; then a relay restarted over the backlog: {done:,} of {backlog:,} done in "
            + (
                f"{t_end - t:.2f} s"
                if not left
                else f"{restart_timeout:.0f} s, {left:,} still pending (NOT drained)"
            )
        )
    result["states_after"] = inbox_states(cfg.store.db_path)
    return result


# -- report --------------------------------------------------------------------------------------


def report(results: list[dict[str, Any]]) -> None:
    head = (
        f"{'run':18} {'sent':>6} {'wall s':>7} {'deliv/s':>8} {'p50 ms':>7} {'p90 ms':>7} {'p99 ms':>7} "
        f"{'max ms':>7} {'202s':>6} {'inbox rows':>10} {'equal':>5}"
    )
    print(head)
    print("-" * len(head))
    for r in results:
        lat = r["latencies_ms"]
        accepted = r["statuses"].get(202, 0)
        print(
            f"{r['label']:18} {len(lat):>6} {r['wall_s']:>7.2f} {len(lat) / r['wall_s']:>8.0f} "
            f"{statistics.median(lat):>7.2f} {pct(lat, 90):>7.2f} {pct(lat, 99):>7.2f} {max(lat):>7.2f} "
            f"{accepted:>6} {r['rows']:>10} {'yes' if accepted == r['rows'] else 'no':>5}"
        )
    print()
    print("drain:")
    for r in results:
        print(f"  {r['label']:18} {r['drain']}")
    print()
    for r in results:
        other = {k: v for k, v in r["statuses"].items() if k != 202}
        print(
            f"{r['label']}: statuses {dict(sorted(r['statuses'].items()))}"
            + (f" (NOT all 202: {other})" if other else "")
            + f", duplicates {r['duplicates']}, reconnects {r['reconnects']}; inbox {r['states']}"
            + (f" -> {r['states_after']}" if r["states_after"] != r["states"] else "")
            + f"; load average {r['load_before']:.2f} before, {r['load_end']:.2f} at the last ack"
        )
    print()
    by = {r["label"]: r for r in results}

    def ratio(a: str, b: str) -> str:
        x, y = by[a]["latencies_ms"], by[b]["latencies_ms"]
        rate = (len(x) / by[a]["wall_s"]) / (len(y) / by[b]["wall_s"])
        return (
            f"p50 {statistics.median(x) / statistics.median(y):.2f}x, p99 {pct(x, 99) / pct(y, 99):.2f}x, "
            f"deliveries/s {rate:.2f}x"
        )

    for a, b in (
        ("drain on", "ack only"),
        ("drain on, nodelay", "ack only, nodelay"),
        ("drain on", "drain on, nodelay"),
    ):
        if a in by and b in by:
            print(f"{a} / {b}: {ratio(a, b)}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="1,000 deliveries per run instead of 10,000")
    ap.add_argument("-n", "--deliveries", type=int, help="deliveries per run (default 10,000, --quick 1,000)")
    ap.add_argument("--clients", type=int, default=8, help="concurrent client processes (default 8)")
    ap.add_argument("--stock", action="store_true", help="skip the two runs with TCP_NODELAY")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = ap.parse_args(argv)
    total = args.deliveries or (1_000 if args.quick else 10_000)

    from orch import log

    log.configure(level="warning", fmt="text")  # a stray ORCH_LOG_LEVEL=info would measure log writes
    os.environ[SECRET_ENV] = hashlib.sha256(os.urandom(16)).hexdigest()
    t_start = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="orch-bench-relay-"))
    print(
        f"relay: python {platform.python_version()}, sqlite {sqlite3.sqlite_version}, {os.cpu_count()} cpus, "
        f"load average {os.getloadavg()[0]:.2f}, {platform.platform()}"
    )
    print(
        f"{total:,} signed Gitea push deliveries per run from {args.clients} client processes "
        f"(one keep-alive http.client connection each) to Relay on 127.0.0.1"
    )
    print()
    # (label, drain thread, TCP_NODELAY, what drains an ack-only backlog)
    runs: list[tuple[str, bool, bool, str | None]] = [
        ("drain on", True, False, None),
        ("ack only", False, False, "drain"),
    ]
    if not args.stock:
        runs += [("drain on, nodelay", True, True, None), ("ack only, nodelay", False, True, "restart")]
    results = []
    try:
        for i, (label, drain, nodelay, after) in enumerate(runs):
            root = tmp / f"run{i}"
            root.mkdir()
            results.append(
                run(
                    label,
                    drain=drain,
                    nodelay=nodelay,
                    after=after,
                    total=total,
                    clients=args.clients,
                    root=root,
                    drain_timeout=300,
                    restart_timeout=15,
                )
            )
    finally:
        scratch.leave(tmp, args.keep)
    report(results)
    print()
    print(f"total bench time {time.monotonic() - t_start:.1f} s")
    for r in results:
        p99 = pct(r["latencies_ms"], 99)
        met = "met" if p99 <= GOAL_P99_MS else "NOT met"
        print(f"goal: p99 ack [{r['label']}] <= {GOAL_P99_MS:.0f} ms -> {p99:.2f} ms ({met})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
