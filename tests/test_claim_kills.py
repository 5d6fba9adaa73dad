"""Runners SIGKILLed at seeded random moments, on both stores: no job lost, none claimed twice.

Six `orch job run --next` processes start at once against six queued jobs with room for
three to run, and each one's whole process group (the runner, its agent) is SIGKILLed at
a random moment: while Python imports, in the claim (on PostgreSQL one call of the claim
function), while the agent runs, or after it ended. Then the timer's work (`orch tick`,
which reaps the jobs of dead runners and queues them again, and `orch work --inline`)
runs until nothing is queued or running. The seed is printed; ORCH_TEST_SEED replays it.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import time

import pytest
from conftest import Setup

from orch.engine import tasks

RUNNERS = 6


@pytest.fixture
def setup(store_setup: Setup) -> Setup:
    return store_setup


def test_runners_killed_at_random_moments_lose_no_job_and_claim_none_twice(setup: Setup) -> None:
    seed = int(os.environ.get("ORCH_TEST_SEED") or random.randrange(2**32))
    print(f"seed {seed}")
    rng = random.Random(seed)
    # No backoff: a reaped job's next attempt is due at once, not a minute later.
    setup.update_config(
        {"work": {"max_concurrency": 3, "backoff_base_s": 0, "backoff_max_s": 0}, "reaper": {"grace_s": 0}}
    )
    rt = setup.runtime()
    keys = [tasks.add(rt, f"kill {i}").key for i in range(RUNNERS)]
    rt.close()

    started = time.monotonic()
    runners = [setup.orch_popen("job", "run", "--next", group=True) for _ in range(RUNNERS)]
    for proc, at in zip(runners, sorted(rng.uniform(0.1, 1.2) for _ in runners), strict=True):
        time.sleep(max(0.0, started + at - time.monotonic()))
        with contextlib.suppress(ProcessLookupError):  # it had ended already
            os.killpg(proc.pid, signal.SIGKILL)
    for proc in runners:
        proc.wait(30)
    killed = sum(p.returncode == -signal.SIGKILL for p in runners)

    for _ in range(10):  # the timer: reap the dead runners' jobs, run what is queued
        assert setup.orch("tick", "--no-spawn").returncode == 0
        work = setup.orch("work", "--inline")
        assert work.returncode == 0, work.stderr
        rt = setup.runtime()
        left = rt.store.jobs(states=("queued", "running"))
        rt.close()
        if not left:
            break
    rt = setup.runtime()
    try:
        assert rt.store.jobs(states=("queued", "running")) == [], seed
        for key in keys:
            task = rt.task(key)
            done = [j for j in rt.store.jobs(task_id=task.id) if j.state == "succeeded"]
            assert len(done) == 1, (seed, key, rt.store.jobs(task_id=task.id))
            claims = [r.detail["job"] for r in rt.store.history(task.id) if r.event == "job_claimed"]
            assert len(claims) == len(set(claims)), (seed, key, claims)  # no job claimed twice
    finally:
        rt.close()
    print(f"{killed} of {RUNNERS} runners killed")
