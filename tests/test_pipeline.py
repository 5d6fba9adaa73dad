"""One task through the whole pipeline, with real git, real agents and a real SQLite file."""

from __future__ import annotations

from pathlib import Path

from conftest import Setup, drive_to, stage_changes

from orch.app import demo
from orch.engine import advance, jobs, tasks
from orch.engine.runtime import Runtime


def test_demo_runs_every_task_to_done_and_merges_into_main(tmp_path: Path) -> None:
    result = demo.run(tmp_path / "d")
    assert result.tasks == {"DEMO-1": "done", "DEMO-2": "done", "DEMO-3": "done"}
    # DEMO-2 was rejected once: two commits of it are on main, one per development visit.
    assert sum("DEMO-2:" in line for line in result.main_log) == 2
    assert sum("DEMO-1:" in line for line in result.main_log) == 1
    assert result.seconds < 30


def test_reviewer_reject_sends_back_to_development_with_a_retry(setup: Setup, rt: Runtime) -> None:
    tasks.add(rt, "one")
    t2 = tasks.add(rt, "two")  # DEMO-2: the scripted reviewer rejects it once
    drive_to(rt, t2.key, "merge")
    assert stage_changes(rt, t2.key) == [
        ("analysis", "development"),
        ("development", "review"),
        ("review", "development"),
        ("development", "review"),
        ("review", "merge"),
    ]
    assert rt.task(t2.key).retries == 1


def test_human_gate_needs_a_person_not_an_agent(setup: Setup, rt: Runtime) -> None:
    t = tasks.add(rt, "gate")
    jobs.work(rt)  # the analyst succeeds
    r = advance.advance(rt, t.key)
    assert r.outcome == "not_ready" and r.exit_code == 3
    tasks.verdict(rt, t.key, "approve", by_agent="analyst")
    assert advance.advance(rt, t.key).outcome == "not_ready"
    tasks.verdict(rt, t.key, "approve")
    assert advance.advance(rt, t.key).outcome == "advanced"
    assert rt.task(t.key).stage == "development"


def test_red_gate_writes_nothing(setup: Setup, rt: Runtime) -> None:
    t = tasks.add(rt, "quiet")
    before = (len(rt.store.history(t.id)), rt.store.pending_notifications(), rt.store.list_leases())
    r = advance.advance(rt, t.key)
    assert r.outcome == "not_ready"
    assert [g.name for g in r.gates if not g.passed] == ["human_approved", "agent_ok"]
    after = (len(rt.store.history(t.id)), rt.store.pending_notifications(), rt.store.list_leases())
    assert before == after


def test_verdict_is_bound_to_the_head_it_was_given_for(setup: Setup, rt: Runtime) -> None:
    t = tasks.add(rt, "bound")
    drive_to(rt, t.key, "review")
    tasks.verdict(rt, t.key, "approve")
    # The head moves after the verdict: the approval no longer counts.
    wt = rt.forge.ensure_worktree(rt.task(t.key))
    (wt / "late.txt").write_text("late change\n")
    import subprocess

    subprocess.run(["git", "add", "-A"], cwd=wt, check=True)
    subprocess.run(["git", "commit", "-qm", "late"], cwd=wt, check=True)
    r = advance.advance(rt, t.key)
    assert r.outcome == "not_ready"
    assert any("verdict was for" in g.reason for g in r.gates)


def test_escalation_at_max_retries_then_nothing_moves_it(setup: Setup) -> None:
    setup.update_config({"pipeline": {"max_retries": 2}})
    reviewer = setup.root / "agents" / "reviewer.sh"
    reviewer.write_text("#!/bin/sh\nprintf 'reject\\nnever good enough\\n' > \"$ORCH_VERDICT_FILE\"\n")
    rt = setup.runtime()
    t = tasks.add(rt, "doomed")
    for _ in range(12):
        jobs.work(rt)
        task = rt.task(t.key)
        if task.stage == "analysis" and not rt.store.latest_verdict(task.id, task.version):
            tasks.verdict(rt, t.key, "approve")
            advance.advance(rt, t.key)
        if task.escalated:
            break
    task = rt.task(t.key)
    assert task.escalated and task.blocked and task.retries == 2 and task.stage == "development"
    assert not rt.store.jobs(task_id=task.id, states=("queued",))
    assert sum("ESCALATED" in m for m in rt.notifier.sent) == 1  # type: ignore[attr-defined]
    version = task.version
    for _ in range(5):
        assert advance.advance(rt, t.key).outcome == "not_ready"
        jobs.work(rt)
    assert rt.task(t.key).version == version


def test_cancel_moves_to_cancelled_and_removes_the_worktree(setup: Setup, rt: Runtime) -> None:
    t = tasks.add(rt, "cancel me")
    drive_to(rt, t.key, "review")
    wt = rt.forge.ensure_worktree(rt.task(t.key))
    assert wt.exists()
    tasks.cancel(rt, t.key, "duplicate")
    assert rt.task(t.key).stage == "cancelled"
    assert not wt.exists()
    assert advance.advance(rt, t.key).outcome == "nothing"


def test_task_text_never_reaches_a_shell(setup: Setup, rt: Runtime) -> None:
    evil = "$(touch PWNED) `touch PWNED2`; touch PWNED3"
    t = tasks.add(rt, evil)
    drive_to(rt, t.key, "review")
    wt = rt.forge.ensure_worktree(rt.task(t.key))
    assert not list(setup.root.rglob("PWNED*"))
    assert evil in (wt / "features" / f"{t.key}.txt").read_text()


def test_unknown_prompt_variable_is_a_config_error_naming_it(setup: Setup) -> None:
    import pytest

    from orch.errors import ConfigError

    setup.update_config({"agents": {"analyst": {"prompt": "Do $task_title for $customer"}}})
    with pytest.raises(ConfigError, match=r"\[agents.analyst\] prompt: unknown variable \$customer"):
        setup.runtime()


def test_agent_timeout_kills_the_job(setup: Setup) -> None:
    setup.update_config({"agents": {"analyst": {"command": "sleep 30 & sleep 30", "timeout_s": 0.5}}})
    rt = setup.runtime()
    rt.runner.grace_s = 1.0  # type: ignore[attr-defined]
    tasks.add(rt, "slow")
    (report,) = jobs.work(rt)
    assert report.state == "timed_out"


def test_a_degraded_monitor_blocks_the_task_and_alerts(setup: Setup) -> None:
    from orch.engine import outbox

    health = setup.root / "health"
    setup.update_config(
        {"gates": {"monitor_healthy": {"type": "monitor", "command": f'exit "$(cat {health})"'}}}
    )
    setup.open_merge_window()
    health.write_text("1")  # still watching
    rt = setup.runtime()
    t = tasks.add(rt, "watched")
    drive_to(rt, t.key, "monitoring")
    r = advance.advance(rt, t.key)
    assert r.outcome == "not_ready" and "still watching" in r.message
    health.write_text("2")  # degraded
    r = advance.advance(rt, t.key)
    assert r.outcome == "failed" and r.exit_code == 1
    task = rt.task(t.key)
    assert task.blocked and task.stage == "monitoring" and "DEGRADED" in (task.block_reason or "")
    outbox.flush(rt)
    assert [m for m in rt.notifier.sent if m.startswith(f"ALERT {t.key} BLOCKED")]  # type: ignore[attr-defined]
    health.write_text("0")
    assert advance.advance(rt, t.key).outcome == "not_ready"  # blocked until a person unblocks
    tasks.unblock(rt, t.key, "rolled forward")
    assert advance.advance(rt, t.key).to_stage == "done"
    rt.close()


def test_workspace_hooks_run_in_order_and_a_failing_before_run_fails_the_job(setup: Setup) -> None:
    trail = setup.root / "hooks.log"
    hook = f'echo "$ORCH_HOOK $ORCH_TASK_KEY" >> {trail}'
    setup.update_config(
        {"workspace": {"after_create": hook, "before_run": hook, "after_run": hook, "before_remove": hook}}
    )
    rt = setup.runtime()
    t = tasks.add(rt, "hooked")
    jobs.work(rt)
    tasks.cancel(rt, t.key, "done looking")
    assert trail.read_text().split("\n")[:-1] == [
        f"after_create {t.key}",
        f"before_run {t.key}",
        f"after_run {t.key}",
        f"before_remove {t.key}",
    ]
    rt.close()
    setup.update_config({"workspace": {"before_run": "exit 7"}})
    rt = setup.runtime()
    tasks.add(rt, "refused")
    (report,) = jobs.work(rt, max_jobs=1)
    assert report.state == "failed" and "before_run" in report.reason
    rt.close()
