"""Many tasks at once, driven only by repeated `orch tick` processes (some concurrent).

A random dependency DAG, max_concurrency = 4, agents with random durations and failures.
Every task must end done, in an order that respects the DAG, with never more than four
jobs running, no job claimed twice, and no waiting job holding a slot.
"""

from __future__ import annotations

import os
import random
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import tomli_w

from orch.adapters.git import init_repo

# 60 tasks keep the suite inside its time budget on 2 cores (each job and tick is a real
# process); ORCH_TEST_MANY_TASKS=200 (or more) runs the longer version.
N_TASKS = int(os.environ.get("ORCH_TEST_MANY_TASKS", "60"))
MAX_CONCURRENCY = 4

DEVELOPER = """#!/bin/sh
# Duration and failure derive from the key and attempt, so a run is reproducible.
h=$(printf '%s' "$ORCH_TASK_KEY-$ORCH_ATTEMPT" | cksum | cut -d' ' -f1)
sleep "0.$((h % 20))"
if [ $((h % 6)) = 0 ]; then echo "flaky failure"; exit 1; fi
mkdir -p features
echo "$ORCH_TASK_KEY" > "features/$ORCH_TASK_KEY.txt"
git add -A && git commit -qm "$ORCH_TASK_KEY: work"
"""
REVIEWER = """#!/bin/sh
sleep 0.0$(( $(printf '%s' "$ORCH_TASK_KEY" | cksum | cut -d' ' -f1) % 9 ))
echo approve > "$ORCH_VERDICT_FILE"
"""


def _write(root: Path) -> Path:
    init_repo(root / "repo")
    agents = root / "agents"
    agents.mkdir()
    for name, body in (("developer", DEVELOPER), ("reviewer", REVIEWER)):
        (agents / f"{name}.sh").write_text(body)
        (agents / f"{name}.sh").chmod(0o755)
    cfg = {
        "store": {"path": ".orch/orch.db"},
        "work": {"max_concurrency": MAX_CONCURRENCY, "backoff_base_s": 0, "backoff_max_s": 0},
        "deps": {"finished_stages": ["done"]},
        "tracker": {"key_prefix": "M"},
        "repos": {"app": {"path": "repo"}},
        "agents": {
            "developer": {"command": str(agents / "developer.sh"), "max_attempts": 8, "timeout_s": 60},
            "reviewer": {"command": str(agents / "reviewer.sh"), "timeout_s": 60},
            "analyst": {"command": "true"},
        },
        "pipeline": {
            "initial": "development",
            "stages": {
                "development": {"agent": "developer"},
                "review": {"agent": "reviewer"},
                "merge": {},
                "done": {"terminal": True},
                "cancelled": {"terminal": True},
            },
            "transitions": [
                {"from": "development", "to": "review", "gates": ["agent_ok", "branch_pushed", "ci_green"]},
                {"from": "review", "to": "development", "gates": ["review_rejected"], "retry": True},
                {"from": "review", "to": "merge", "gates": ["review_approved"]},
                {
                    "from": "merge",
                    "to": "done",
                    "effects": ["premerge_rebase", "merge"],
                    "on_fail": "development",
                },
            ],
        },
    }
    path = root / "orch.toml"
    path.write_text(tomli_w.dumps(cfg))
    return path


def _orch(cfg: Path, *args: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORCH_")}
    return subprocess.Popen(
        [sys.executable, "-m", "orch", "-c", str(cfg), *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=cfg.parent,
    )


@pytest.mark.slow
def test_many_tasks_with_a_dependency_dag_driven_by_ticks(tmp_path: Path) -> None:
    cfg = _write(tmp_path)
    rng = random.Random(20261124)
    keys = [f"M-{i}" for i in range(1, N_TASKS + 1)]
    edges: list[tuple[str, str]] = []
    # Bulk-add through the library: 200 processes would only measure Python start-up.
    from orch import config as config_mod
    from orch.app.wiring import open_runtime
    from orch.engine import deps, tasks

    rt = open_runtime(config_mod.load(cfg, environ={}), actor="test")
    rt.notifier.send = lambda text: None  # type: ignore[method-assign]
    for i, key in enumerate(keys):
        tasks.add(rt, f"task {i}", key=key)
    for i in range(1, N_TASKS):
        for j in rng.sample(range(i), k=min(i, rng.choice([0, 0, 1, 1, 2]))):
            deps.declare(rt, keys[i], keys[j])
            edges.append((keys[i], keys[j]))
    rt.close()

    db_path = tmp_path / ".orch" / "orch.db"
    samples: list[int] = []
    stop = threading.Event()

    def sample() -> None:
        db = sqlite3.connect(db_path, timeout=5)
        while not stop.is_set():
            samples.append(db.execute("SELECT count(*) FROM jobs WHERE state = 'running'").fetchone()[0])
            time.sleep(0.02)
        db.close()

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    deadline = time.monotonic() + 600
    rounds = 0
    try:
        while time.monotonic() < deadline:
            rounds += 1
            ticks = [_orch(cfg, "tick") for _ in range(2 if rounds % 3 == 0 else 1)]
            for t in ticks:
                _, err = t.communicate(timeout=120)
                assert t.returncode == 0, err
            db = sqlite3.connect(db_path, timeout=5)
            left = db.execute("SELECT count(*) FROM tasks WHERE stage != 'done'").fetchone()[0]
            db.close()
            if left == 0:
                break
            time.sleep(0.25)
    finally:
        stop.set()
        sampler.join()

    db = sqlite3.connect(db_path)
    db.row_factory = sqlite3.Row
    stages = dict(db.execute("SELECT key, stage FROM tasks").fetchall())
    assert set(stages.values()) == {"done"}, {k: s for k, s in stages.items() if s != "done"}
    print(f"\n{N_TASKS} tasks, {len(edges)} deps, {rounds} tick rounds, max sampled running {max(samples)}")

    assert max(samples) <= MAX_CONCURRENCY
    # Exact check, in commit order (audit ids): never more than four jobs running at once.
    ends = ("job_succeeded", "job_failed", "job_timed_out", "job_stalled", "job_cancelled", "job_reaped")
    running = peak = 0
    for (event,) in db.execute("SELECT event FROM transitions WHERE event LIKE 'job_%' ORDER BY id"):
        running += 1 if event == "job_claimed" else -1 if event in ends else 0
        peak = max(peak, running)
    assert peak <= MAX_CONCURRENCY

    claims = db.execute(
        "SELECT json_extract(detail, '$.job') AS job, count(*) AS n FROM transitions "
        "WHERE event = 'job_claimed' GROUP BY job HAVING n > 1"
    ).fetchall()
    assert claims == [], "a job was claimed twice"

    task_id = dict(db.execute("SELECT key, id FROM tasks").fetchall())
    finished_at = dict(
        db.execute(
            "SELECT task_id, min(id) FROM transitions WHERE event = 'stage_changed' AND to_stage = 'done' "
            "GROUP BY task_id"
        ).fetchall()
    )
    first_claim = dict(
        db.execute(
            "SELECT task_id, min(id) FROM transitions WHERE event = 'job_claimed' GROUP BY task_id"
        ).fetchall()
    )
    for waiter, on in edges:
        # No job of the waiting task was claimed before the task it waits on was merged.
        # Audit ids follow commit order (writes are serialized); wall-clock `at` values
        # are taken before a writer waits for the lock, so they may interleave.
        assert first_claim[task_id[waiter]] >= finished_at[task_id[on]], (waiter, on)
    log = subprocess.run(
        ["git", "log", "--format=%s", "main"],
        cwd=tmp_path / "repo",
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert {line.split(":")[0] for line in log.splitlines() if line.startswith("M-")} == set(keys)
