"""Operator views on a scripted scenario: a stuck task, a held lease, a waiting dependency, a red gate."""

from __future__ import annotations

import json
import os
import signal
import time
from typing import Any

import pytest
from conftest import Setup, drive_to
from holders import hold_lease

from orch import identity
from orch.engine import deps, jobs, status, tasks, tick
from orch.engine.runtime import Runtime
from orch.identity import Owner


@pytest.fixture
def scenario(setup: Setup) -> tuple[Setup, Runtime, dict[str, str]]:
    setup.update_config({"agents": {"developer": {"command": "echo broken >&2; exit 2", "max_attempts": 1}}})
    rt = setup.runtime()
    red = tasks.add(rt, "waits for a person")  # analysis: the human gate is red
    stuck = tasks.add(rt, "developer keeps failing")
    held = tasks.add(rt, "someone holds its lease")
    waiting = tasks.add(rt, "waits on the held one")
    deps.declare(rt, waiting.key, held.key)
    jobs.work(rt)  # the analysts of red, stuck and held (waiting's job waits)
    tasks.verdict(rt, stuck.key, "approve")
    drive_to(rt, stuck.key, "development")
    jobs.work(rt)  # the developer fails, and has no attempt left
    me = os.getpid()
    owner = Owner(identity.host(), identity.me().boot_id, me, identity.process_start_time(me) or "")
    rt.store.acquire_lease(
        f"task:{held.key}", owner=owner, actor="person:ops", purpose="a look", now=rt.now()
    )
    tick.tick(rt, spawn=False)
    return setup, rt, {"red": red.key, "stuck": stuck.key, "held": held.key, "waiting": waiting.key}


def _strip(view: dict[str, Any]) -> dict[str, Any]:
    """The view without what changes from run to run (times, pids, paths)."""
    volatile = {
        "age_s",
        "owner",
        "log",
        "deadline_in_s",
        "starts_in_s",
        "at",
        "ago_s",
        "duration_s",
        "by",
        "alive",
        "id",
        "pid",
        "seconds",
    }

    def clean(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items() if k not in volatile}
        if isinstance(v, list):
            return [clean(x) for x in v]
        return v

    return clean(view)  # type: ignore[no-any-return]


def test_queue_view(scenario: tuple[Setup, Runtime, dict[str, str]]) -> None:
    _, rt, k = scenario
    view = status.queue(rt)
    assert _strip(view) == {
        # The developer used up its attempts: the task is escalated, a person must look.
        "healthy": False,
        "problems": ["1 escalated task(s) wait for a person"],
        "running": [],
        "queued": [],
        "waiting": [
            {
                "task": k["waiting"],
                "agent": "analyst",
                "stage": "analysis",
                "attempt": 1,
                "state": "queued",
                "waits_on": [k["held"]],
            }
        ],
        "leases": [{"name": f"task:{k['held']}", "actor": "person:ops", "purpose": "a look"}],
        "hosts": [
            {
                "host": identity.host(),
                "here": True,
                "jobs": [],
                "leases": [{"name": f"task:{k['held']}", "actor": "person:ops", "purpose": "a look"}],
            }
        ],
        "dependency_line": [
            {
                "task": k["waiting"],
                "stage": "analysis",
                "waits_on": [{"task": k["held"], "stage": "analysis"}],
            }
        ],
        "blocked": [
            {
                "task": k["stuck"],
                "stage": "development",
                "escalated": True,
                "reason": "developer gave up after 1 attempt: exit 2",
            }
        ],
        "stages": {"analysis": 3, "development": 1},
        "jobs": {"succeeded": 3, "failed": 1, "queued": 1},
        "outbox_pending": 0,
        "inbox_pending": 0,
        "inbox_parked": 0,
        "last_tick": {"advanced": 0, "started": 0},
        "max_concurrency": 4,
        "reconcile": {
            "last": {"counters": view["reconcile"]["last"]["counters"], "errors": []},
            "total": view["reconcile"]["total"],
        },
    }
    assert view["leases"][0]["alive"] is True
    assert view["hosts"][0]["leases"][0]["alive"] is True
    # The tick's reconcile run was counted (its tasks are younger than the grace period).
    assert view["reconcile"]["total"]["runs"] == 1
    assert set(view["reconcile"]["last"]["counters"]["skipped"]) == {
        "human",
        "terminal",
        "escalated",
        "blocked",
        "tracker_unreadable",
        "lease",
        "deps",
    }


def test_explain_says_who_moves_each_task_next(scenario: tuple[Setup, Runtime, dict[str, str]]) -> None:
    _, rt, k = scenario
    nexts = {name: status.explain(rt, key)["next"] for name, key in k.items()}
    assert nexts == {
        "red": f"a person: `orch approve {k['red']}` (or reject)",
        "stuck": "a person: it is escalated (developer gave up after 1 attempt: exit 2); "
        f"`orch logs {k['stuck']}`, then `orch retry {k['stuck']}`",
        "held": f"person:ops (holds task:{k['held']}); then the next tick",
        "waiting": f"nobody yet: it waits for {k['held']} to be merged",
    }
    stuck = status.explain(rt, k["stuck"])
    (tr,) = stuck["transitions"]
    assert tr["to"] == "review" and tr["green"] is False
    gates = {g["gate"]: (g["passed"], g["reason"]) for g in tr["gates"]}
    assert gates["agent_ok"][0] is False and "failed" in gates["agent_ok"][1]
    assert gates["branch_pushed"] == (False, "branch has no commits beyond the default branch")
    assert stuck["job"]["state"] == "failed" and stuck["job"]["reason"] == "exit 2"


def test_cli_views_render_and_json_parses(scenario: tuple[Setup, Runtime, dict[str, str]]) -> None:
    setup, _, k = scenario
    out = setup.orch("queue")
    assert out.returncode == 0, out.stderr
    for text in ("needs a look", "waits on " + k["held"], f"task:{k['held']}", "dependency line"):
        assert text in out.stdout
    data = json.loads(setup.orch("queue", "--json").stdout)
    assert data["waiting"][0]["task"] == k["waiting"]
    out = setup.orch("explain", k["stuck"])
    assert out.returncode == 0 and "next:" in out.stdout and "agent_ok" in out.stdout
    assert json.loads(setup.orch("explain", k["red"], "--json").stdout)["task"]["key"] == k["red"]


def test_queue_names_problems(setup: Setup) -> None:
    rt = setup.runtime()
    view = status.queue(rt)
    assert view["healthy"] is False and any("no tick has run yet" in p for p in view["problems"])
    t = tasks.add(rt, "x")
    dead = identity.me()._replace(boot_id="an-old-boot")
    rt.store.acquire_lease(f"task:{t.key}", owner=dead, actor="ghost", purpose="x", now=rt.now())
    tick.tick(rt, spawn=False)  # reclaims the dead lease
    assert status.queue(rt)["leases"] == []


def test_decision_logs_as_json_lines(setup: Setup, tmp_path: Any) -> None:
    log_file = tmp_path / "orch.jsonl"
    setup.orch("task", "add", "logged", "--key", "L-1")
    env = {"ORCH_LOG_FORMAT": "json", "ORCH_LOG_LEVEL": "info", "ORCH_LOG_FILE": str(log_file)}
    assert setup.orch("work", "--inline", env=env).returncode == 0
    assert setup.orch("approve", "L-1", env=env).returncode == 0
    assert setup.orch("tick", "--json", env=env).returncode == 0
    lines = [json.loads(line) for line in log_file.read_text().splitlines()]
    events = [(r["event"], r.get("task")) for r in lines]
    assert ("job_ended", "L-1") in events
    assert ("advance", "L-1") in events
    assert any(e == "tick" for e, _ in events)
    for r in lines:
        assert {"ts", "level", "event"} <= set(r)
    bad = setup.orch("--log-level", "loud", "task", "list")
    assert bad.returncode == 2 and "log level" in bad.stderr


def test_queue_and_doctor_show_this_host_with_its_running_job_and_lease(setup: Setup) -> None:
    # Issue 13: each host with its running jobs and leases. On SQLite there is one host;
    # a runner and a lease holder are real processes, judged alive by their identity.
    pidfile = setup.root / "agent.pid"
    setup.update_config({"agents": {"analyst": {"command": f"echo $$ > {pidfile}; sleep 30"}}})
    rt = setup.runtime()
    t = tasks.add(rt, "runs")
    ghost = Owner("host-b", "boot-b", 4242, "777")  # a host SQLite cannot judge
    rt.store.acquire_lease("merge:elsewhere", owner=ghost, actor="b", purpose="far", now=rt.now())
    runner = setup.orch_popen("job", "run", "--next")
    holder = hold_lease(setup.config_path, f"task:{t.key}")
    try:
        deadline = time.monotonic() + 20
        while not (pidfile.exists() and pidfile.read_text().strip()) and time.monotonic() < deadline:
            time.sleep(0.02)
        (job,) = rt.store.jobs(task_id=t.id)
        assert job.state == "running"
        here = identity.host()
        queue_view = json.loads(setup.orch("queue", "--json").stdout)
        doctor = setup.orch("doctor", "--json")
        for hosts in (queue_view["hosts"], json.loads(doctor.stdout)["hosts"]):
            assert hosts == [
                {
                    "host": here,
                    "here": True,
                    "jobs": [
                        {
                            "id": job.id,
                            "task": t.key,
                            "agent": "analyst",
                            "pid": runner.pid,
                            "pgid": job.pgid,
                            "alive": True,
                        }
                    ],
                    "leases": [
                        {
                            "name": f"task:{t.key}",
                            "actor": "holder",
                            "purpose": "a test",
                            "pid": holder.pid,
                            "alive": True,
                        }
                    ],
                },
                {
                    "host": "host-b",
                    "here": False,
                    "jobs": [],
                    "leases": [
                        {
                            "name": "merge:elsewhere",
                            "actor": "b",
                            "purpose": "far",
                            "pid": 4242,
                            "alive": None,
                        }
                    ],
                },
            ]
        assert job.pgid is not None
        shown = setup.orch("queue").stdout + setup.orch("doctor").stdout
        assert f"host {here} (this host): 1 running job, 1 lease" in shown
        assert f"job {job.id} {t.key} analyst pid {runner.pid} alive" in shown
        assert f"lease task:{t.key} (holder, a test) pid {holder.pid} alive" in shown
        assert "host host-b: 0 running jobs, 1 lease" in shown and "pid 4242 unknown" in shown
    finally:
        holder.communicate(timeout=10)  # stdin closed: it lets go and exits
        if pidfile.exists() and pidfile.read_text().strip():
            os.killpg(int(pidfile.read_text()), signal.SIGKILL)
        runner.communicate(timeout=20)
        rt.close()
