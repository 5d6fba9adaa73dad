"""The queue: claims, concurrency, dependencies, retries, cancel, the reaper and the tick."""

from __future__ import annotations

import itertools
import os
import signal
import sqlite3
import subprocess
import time

import pytest
from conftest import Setup, drive_to

from orch.engine import deps, jobs, outbox, reaper, tasks, tick
from orch.engine.runtime import Runtime
from orch.errors import UsageError
from orch.identity import is_alive, process_start_time


def _running(rt: Runtime) -> int:
    return rt.store.running_count()


def test_claim_respects_max_concurrency_and_waiting_jobs_hold_no_slot(setup: Setup) -> None:
    setup.update_config({"work": {"max_concurrency": 2}})
    rt = setup.runtime()
    a = tasks.add(rt, "first")
    b = tasks.add(rt, "waits on first")
    c = tasks.add(rt, "third")
    deps.declare(rt, b.key, a.key)
    assert rt.task(b.key).waiting_on == 1
    first = jobs.claim(rt)
    second = jobs.claim(rt)
    assert first is not None and second is not None
    # b's job is older than c's but waits: c got the slot, and now both slots are taken.
    assert {rt.store.get_task_by_id(j.task_id).key for j in (first, second)} == {a.key, c.key}  # type: ignore[union-attr]
    assert jobs.claim(rt) is None
    rt.close()


def test_dependency_is_released_when_the_other_task_is_merged(setup: Setup) -> None:
    rt = setup.runtime()
    a = tasks.add(rt, "base")
    b = tasks.add(rt, "on top")
    deps.declare(rt, b.key, a.key)
    outbox.flush(rt)
    assert [m for m in rt.notifier.sent if "waits for" in m] == [f"{b.key} waits for {a.key} (analysis)"]  # type: ignore[attr-defined]
    setup.open_merge_window()
    drive_to(rt, a.key, "done")
    outbox.flush(rt)
    assert rt.task(b.key).waiting_on == 0
    assert [m for m in rt.notifier.sent if "no longer waits" in m] == [  # type: ignore[attr-defined]
        f"{b.key} no longer waits: {a.key} is finished"
    ]
    assert jobs.claim(rt) is not None  # b's analyst job is ready now
    rt.close()


def test_cancelling_a_finished_task_does_not_release_its_dependents_twice(setup: Setup) -> None:
    """A task cancelled at monitoring had released its dependents when it reached deploy."""
    setup.update_config({"gates": {"monitor_healthy": {"command": "exit 1"}}})  # a stays at monitoring
    rt = setup.runtime()
    a = tasks.add(rt, "merged, then cancelled at monitoring")
    c = tasks.add(rt, "still unfinished")
    b = tasks.add(rt, "waits on both")
    deps.declare(rt, b.key, a.key)
    deps.declare(rt, b.key, c.key)
    assert rt.task(b.key).waiting_on == 2
    setup.open_merge_window()
    drive_to(rt, a.key, "monitoring")
    assert rt.task(b.key).waiting_on == 1
    tasks.cancel(rt, a.key, "deploy abandoned")
    assert rt.task(b.key).waiting_on == 1, "c is not finished: b must still wait"
    rt.close()


def test_cycle_is_refused_with_the_cycle_printed(setup: Setup) -> None:
    rt = setup.runtime()
    a, b, c = (tasks.add(rt, t).key for t in "abc")
    deps.declare(rt, b, a)
    deps.declare(rt, c, b)
    with pytest.raises(UsageError, match=f"closes a cycle: {a} -> {c} -> {b} -> {a}"):
        deps.declare(rt, a, c)
    assert rt.task(a).waiting_on == 0
    rt.close()


def test_injected_cycle_is_blocked_by_the_tick_with_one_alert(setup: Setup) -> None:
    rt = setup.runtime()
    a, b = tasks.add(rt, "a"), tasks.add(rt, "b")
    db = sqlite3.connect(setup.root / ".orch" / "orch.db")
    db.executemany(
        "INSERT INTO deps (task_id, on_task_id, created_at) VALUES (?, ?, 0)", [(a.id, b.id), (b.id, a.id)]
    )
    db.commit()
    db.close()
    for _ in range(3):
        tick.tick(rt, spawn=False)
    assert rt.task(a.key).blocked and rt.task(b.key).blocked
    assert "dependency cycle" in (rt.task(a.key).block_reason or "")
    alerts = [m for m in rt.notifier.sent if m.startswith("ALERT dependency cycle")]  # type: ignore[attr-defined]
    assert len(alerts) == 1
    # The tick also repaired the counts the direct insert left wrong.
    assert rt.task(a.key).waiting_on == 1
    rt.close()


def test_failed_job_is_retried_with_backoff_then_gives_up(setup: Setup) -> None:
    setup.update_config(
        {
            "agents": {"analyst": {"command": "exit 3", "max_attempts": 3}},
            "work": {"backoff_base_s": 10, "backoff_max_s": 15},
        }
    )
    rt = setup.runtime()
    now = [1000.0]
    rt.clock = lambda: now[0]
    t = tasks.add(rt, "flaky")
    (r1,) = jobs.work(rt)
    assert r1.state == "failed"
    assert jobs.work(rt) == []  # attempt 2 waits 10 s
    now[0] += 10
    (r2,) = jobs.work(rt)
    now[0] += 14.9
    assert jobs.work(rt) == []  # attempt 3 waits min(20, 15) s
    now[0] += 0.1
    (r3,) = jobs.work(rt)
    assert [r.state for r in (r1, r2, r3)] == ["failed"] * 3
    assert [j.attempt for j in rt.store.jobs(task_id=t.id)] == [1, 2, 3]
    now[0] += 1000
    assert jobs.work(rt) == []
    assert any("gave up after 3 attempts" in m for m in rt.notifier.sent)  # type: ignore[attr-defined]
    rt.close()


def test_hanging_agent_with_children_has_its_whole_group_killed(setup: Setup) -> None:
    pidfile = setup.root / "child.pid"
    setup.update_config(
        {
            "agents": {
                "analyst": {
                    "command": f"sh -c 'echo $$ > {pidfile}; sleep 60' & sleep 60",
                    "timeout_s": 1,
                    "max_attempts": 1,
                }
            }
        }
    )
    rt = setup.runtime()
    rt.runner.grace_s = 1  # type: ignore[attr-defined]
    tasks.add(rt, "hang")
    (r,) = jobs.work(rt)
    assert r.state == "timed_out"
    child = int(pidfile.read_text())
    assert process_start_time(child) is None  # the grandchild died with its group
    rt.close()


def _wait(pred, timeout: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return
        time.sleep(0.05)
    raise AssertionError("timed out waiting")


@pytest.mark.slow
def test_sigkilled_runner_is_reaped_and_its_agent_group_killed(setup: Setup) -> None:
    pidfile = setup.root / "agent.pid"
    setup.update_config({"agents": {"analyst": {"command": f"echo $$ > {pidfile}; sleep 60"}}})
    rt = setup.runtime()
    t = tasks.add(rt, "victim")
    runner = setup.orch_popen("job", "run", "--next")
    _wait(lambda: pidfile.exists() and pidfile.read_text().strip() != "")
    agent = int(pidfile.read_text())
    job = rt.store.jobs(task_id=t.id)[0]
    assert job.state == "running" and job.owner is not None and job.owner.pid == runner.pid
    runner.send_signal(signal.SIGKILL)
    runner.wait()
    assert process_start_time(agent) is not None  # the agent outlived its runner (own group)
    report = reaper.reap(rt)
    assert report.reaped == [job.id]
    assert process_start_time(agent) is None
    jobs_now = rt.store.jobs(task_id=t.id)
    assert [(j.attempt, j.state) for j in jobs_now] == [(1, "reaped"), (2, "queued")]
    outbox.flush(rt)
    assert any("reaped analyst job" in m for m in rt.notifier.sent)  # type: ignore[attr-defined]
    rt.close()


def test_a_new_boot_recovers_every_old_job_and_lease(setup: Setup) -> None:
    rt = setup.runtime()
    t = tasks.add(rt, "before the reboot")
    job = jobs.claim(rt)
    assert job is not None
    rt.store.acquire_lease(f"task:{t.key}", owner=rt.owner, actor="old", purpose="x", now=rt.now())
    rt.store.acquire_lease("merge:app", owner=rt.owner, actor="old", purpose="x", now=rt.now())
    rt.close()
    after = setup.runtime(actor="tick")
    after.owner = after.owner._replace(boot_id="the-next-boot")
    # Seen from the new boot, this process (the old owner) is of the previous boot: dead.
    import orch.identity as identity

    identity._boot_id.cache_clear()
    os.environ["ORCH_BOOT_ID"] = "the-next-boot"
    try:
        assert not is_alive(job.owner)  # type: ignore[arg-type]
        report = reaper.reap(after)
    finally:
        del os.environ["ORCH_BOOT_ID"]
        identity._boot_id.cache_clear()
    assert report.reaped == [job.id]
    # The task lease went with its reaped job; the merge lease was reclaimed on its own.
    assert report.leases == ["merge:app"]
    events = [r.event for r in after.store.history(t.id)]
    assert "lease_released_by_reaper" in events
    assert after.store.list_leases() == []
    after.close()


def test_cancel_stops_the_running_job(setup: Setup) -> None:
    pidfile = setup.root / "agent.pid"
    setup.update_config({"agents": {"analyst": {"command": f"echo $$ > {pidfile}; sleep 60"}}})
    rt = setup.runtime()
    t = tasks.add(rt, "stop me")
    runner = setup.orch_popen("job", "run", "--next")
    _wait(lambda: pidfile.exists() and pidfile.read_text().strip() != "")
    agent = int(pidfile.read_text())
    tasks.cancel(rt, t.key, "changed our mind")
    assert process_start_time(agent) is None
    assert runner.wait(timeout=20) == 0
    (job,) = rt.store.jobs(task_id=t.id)
    assert job.state == "cancelled" and "cancelled" in (job.reason or "")
    assert rt.store.list_leases() == []
    rt.close()


@pytest.mark.slow
def test_ten_tasks_at_merge_are_merged_one_at_a_time_and_a_conflict_goes_back(setup: Setup) -> None:
    rt = setup.runtime()
    keys = [tasks.add(rt, f"merge {i}").key for i in range(10)]
    for key in keys:
        drive_to(rt, key, "merge")
    # The last task also edits a file main will have changed: its rebase conflicts.
    clash = keys[-1]
    wt = rt.forge.ensure_worktree(rt.task(clash))
    (wt / "README.md").write_text("clash from the task\n")
    subprocess.run(["git", "commit", "-qam", "clash"], cwd=wt, check=True)
    (setup.repo / "README.md").write_text("clash from main\n")
    subprocess.run(["git", "commit", "-qam", "main moves"], cwd=setup.repo, check=True)
    rt.close()
    setup.open_merge_window()
    procs = [setup.orch_popen("advance", key, "--expect", "merge") for key in keys]
    for p in procs:
        p.wait(timeout=120)
    for _ in range(30):  # what the timer does: try the busy ones again
        out = setup.orch("tick", "--json")
        assert out.returncode == 0, out.stderr
        rt = setup.runtime()
        stages = {k: rt.task(k).stage for k in keys}
        rt.close()
        if all(s == "deploy" or s == "monitoring" or s == "done" for k, s in stages.items() if k != clash):
            break
    rt = setup.runtime()
    assert rt.task(clash).stage == "development" and rt.task(clash).retries == 1
    note = rt.store.jobs(task_id=rt.task(clash).id, states=("queued",))[0].note or ""
    assert "conflict" in note
    log = setup.git("log", "--format=%s", "--first-parent", "main").splitlines()
    merged = [line.split(":")[0] for line in log if line.startswith("DEMO-")]
    assert set(merged) == set(keys[:-1])  # DEMO-2 twice: the scripted reviewer rejects it once
    assert setup.git("rev-list", "--merges", "--count", "main").strip() == "0"  # linear
    # One at a time: the merge-lease intervals never overlap (in commit order: audit ids).
    spans = []
    for key in keys[:-1]:
        hist = rt.store.history(rt.task(key).id)
        # From taking the merge lease to the merge's CAS (both inside the lease).
        got = [r.id for r in hist if r.event == "lease_acquired" and r.detail["lease"] == "merge:app"]
        cas = [r.id for r in hist if r.event == "stage_changed" and r.from_stage == "merge"]
        spans.append((got[-1], cas[-1]))
    spans.sort()
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(spans))
    rt.close()


@pytest.mark.slow
def test_reviewer_that_always_rejects_escalates_then_nothing_moves(setup: Setup) -> None:
    setup.update_config({"pipeline": {"max_retries": 2}})
    (setup.root / "agents" / "reviewer.sh").write_text(
        "#!/bin/sh\nprintf 'reject\\nno\\n' > \"$ORCH_VERDICT_FILE\"\n"
    )
    rt = setup.runtime()
    t = tasks.add(rt, "doomed")
    jobs.work(rt)
    tasks.verdict(rt, t.key, "approve")
    for _ in range(15):  # until it escalates: each round is three orch processes
        setup.orch("advance", t.key)
        setup.orch("work", "--inline")
        setup.orch("tick", "--no-spawn")
        task = rt.task(t.key)
        if task.escalated:
            break
    assert task.escalated and task.blocked
    version = task.version
    for _ in range(5):
        assert setup.orch("advance", t.key).returncode == 3
        setup.orch("tick", "--no-spawn")
        setup.orch("work", "--inline")
    assert rt.task(t.key).version == version
    rt.close()
