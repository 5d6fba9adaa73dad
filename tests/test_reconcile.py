"""The reconciler with the embedded default: guards, grace, dry run, no bounce, no spam."""

from __future__ import annotations

import json
import os

from conftest import Setup, drive_to

from orch import identity
from orch.engine import deps, jobs, outbox, tasks
from orch.engine.reconcile import reconcile
from orch.engine.runtime import Runtime
from orch.identity import Owner


def _lost_ci_event(setup: Setup) -> tuple[Runtime, str]:
    """A task whose developer pushed and whose CI went green, but whose event was lost."""
    setup.update_config({"repos": {"app": {"ci": "false"}}})  # local CI red: the task stays
    rt = setup.runtime()
    t = tasks.add(rt, "lost event")
    drive_to(rt, t.key, "development")
    jobs.work(rt, max_jobs=1)
    task = rt.task(t.key)
    head = rt.forge.branch_head(task)
    assert task.stage == "development" and head
    # CI went green elsewhere; the webhook that would have said so never arrived.
    rt.store.set_commit_status(
        repo="app", sha=head, context="orch/ci", state="success", description=None, now=rt.now()
    )
    return rt, t.key


def test_a_lost_event_is_replayed_after_the_grace_period(setup: Setup) -> None:
    rt, key = _lost_ci_event(setup)
    now = [rt.now()]
    rt.clock = lambda: now[0]
    first = reconcile(rt)
    assert first["counters"]["advanced"] == 0 and rt.task(key).stage == "development"  # inside the grace
    now[0] += 121
    second = reconcile(rt)
    assert second["counters"]["advanced"] == 1
    assert rt.task(key).stage == "review"
    rt.close()


def test_dry_run_says_why_and_changes_nothing(setup: Setup) -> None:
    rt, key = _lost_ci_event(setup)
    rt.clock = lambda: 4e9
    before = (rt.task(key), len(rt.store.history(rt.task(key).id)), rt.store.outbox_rows(pending_only=False))
    report = reconcile(rt, dry_run=True)
    assert report["counters"]["would_advance"] == 1
    assert {
        "task": key,
        "stage": "development",
        "would": "-> review",
        "gates": ["agent_ok", "branch_pushed", "ci_green"],
    } in report["tasks"]
    after = (rt.task(key), len(rt.store.history(rt.task(key).id)), rt.store.outbox_rows(pending_only=False))
    assert before == after
    assert rt.store.fact("reconcile_total") is None  # a dry run is not a run
    rt.close()


def test_guards_are_applied_in_order_and_counted(setup: Setup) -> None:
    rt = setup.runtime()
    human = tasks.add(rt, "at the human gate")
    blocked = tasks.add(rt, "blocked by a person")
    held = tasks.add(rt, "lease held")
    waiting = tasks.add(rt, "waits on held")
    jobs.work(rt)
    for k in (blocked.key, held.key):
        tasks.verdict(rt, k, "approve")
        drive_to(rt, k, "development")
    jobs.work(rt)
    deps.declare(rt, waiting.key, held.key)
    tasks.block(rt, blocked.key, "a person looks")
    me = os.getpid()
    owner = Owner(identity.host(), identity.me().boot_id, me, identity.process_start_time(me) or "")
    rt.store.acquire_lease(f"task:{held.key}", owner=owner, actor="ops", purpose="x", now=rt.now())
    rt.clock = lambda: 4e9
    c = reconcile(rt)["counters"]
    assert c["skipped"]["human"] == 2  # human (and waiting, also at analysis: the human gate comes first)
    assert c["skipped"]["blocked"] == 1
    assert c["deferred_lease"] == 1
    assert c["advanced"] == 0
    del human
    rt.close()


def test_an_escalated_task_never_bounces(setup: Setup) -> None:
    setup.update_config({"pipeline": {"max_retries": 1}})
    (setup.root / "agents" / "reviewer.sh").write_text(
        "#!/bin/sh\nprintf 'reject\\nno\\n' > \"$ORCH_VERDICT_FILE\"\n"
    )
    rt = setup.runtime()
    t = tasks.add(rt, "always rejected")
    drive_to(rt, t.key, "review")
    jobs.work(rt)  # the reviewer rejects: back to development, escalated at max_retries = 1
    task = rt.task(t.key)
    assert task.escalated and task.stage == "development"
    outbox.flush(rt)
    sent_before = len(rt.notifier.sent)  # type: ignore[attr-defined]
    version = task.version
    now = [rt.now()]
    rt.clock = lambda: now[0]
    for _ in range(50):
        now[0] += 120
        report = reconcile(rt)
        assert report["counters"]["advanced"] == 0
        outbox.flush(rt)
    assert rt.task(t.key).version == version
    assert len(rt.notifier.sent) == sent_before  # type: ignore[attr-defined]
    rt.close()


def test_runs_in_new_processes_repeat_nothing(setup: Setup) -> None:
    rt, _ = _lost_ci_event(setup)
    rt.close()
    env = {"ORCH_RECONCILE_GRACE_S": "0"}
    outputs = [json.loads(setup.orch("reconcile", "--json", env=env).stdout) for _ in range(5)]
    assert [o["counters"]["advanced"] for o in outputs] == [1, 0, 0, 0, 0]
    rt = setup.runtime()
    moved = [m for m in rt.store.outbox_rows(pending_only=False) if "development -> review" in m.text]
    assert len(moved) == 1  # told once, across five processes
    total = rt.store.fact("reconcile_total")
    assert total is not None and total[0]["runs"] == 5 and total[0]["advanced"] == 1
    rt.close()


def test_kill_switch_off_moves_nothing(setup: Setup) -> None:
    rt, key = _lost_ci_event(setup)
    rt.close()
    out = setup.orch("reconcile", env={"ORCH_RECONCILE_ENABLED": "false", "ORCH_RECONCILE_GRACE_S": "0"})
    assert out.returncode == 0 and "off" in out.stdout
    rt = setup.runtime()
    assert rt.task(key).stage == "development"
    rt.close()
