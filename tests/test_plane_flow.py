"""Plane end to end, against a fake Plane on 127.0.0.1: webhooks and the reconciler create
and steer tasks through the same handlers, exactly once, without spam."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Setup, drive_to
from fakes.plane_workflow import SeededProject, add_orch_project
from fakes.servers import FakePlane

from orch.engine import jobs, outbox, tasks
from orch.engine.reconcile import reconcile


class Plane:
    def __init__(self, setup: Setup, fake: FakePlane, project: SeededProject):
        self.setup, self.fake, self.project = setup, fake, project
        self.env = {"PLANE_API_KEY": fake.api_key}

    def item(self, name: str, state: str) -> str:
        return self.fake.add_work_item(self.project.id, name, state_id=self.project.states[state])

    def move(self, item: str, state: str) -> None:
        with self.fake.lock:
            self.fake.projects[self.project.id]["items"][item]["state"] = self.project.states[state]

    def state_of(self, item: str) -> str:
        sid = self.fake.item(self.project.id, item)["state"]
        return self.project.names[sid]

    def webhook(self, item: str, state: str) -> Path:
        """A v1 `issue updated` body for `item` now in `state`, written to a file."""
        data = self.fake.item(self.project.id, item)
        sid = self.project.states[state]
        name, group = self.project.names[sid], _group(state)
        body = {
            "event": "issue",
            "action": "updated",
            "webhook_id": "wh-1",
            "workspace_id": data["workspace"],
            "data": {**data, "state": {"id": sid, "name": name, "color": "#888", "group": group}},
            "activity": {"field": "state_id", "new_value": sid, "old_value": None},
        }
        path = self.setup.root / f"hook-{item[:8]}-{state}.json"
        path.write_text(json.dumps(body))
        headers = self.setup.root / "plane.headers.json"
        headers.write_text(json.dumps({"X-Plane-Event": "issue"}))
        return path

    def event(self, item: str, state: str) -> dict[str, Any]:
        return self.send(self.webhook(item, state))

    def send(self, body: Path) -> dict[str, Any]:
        """`orch event plane` with this body, as a separate process."""
        out = self.setup.orch(
            "event",
            "plane",
            "--body",
            str(body),
            "--headers",
            str(self.setup.root / "plane.headers.json"),
            "--json",
            env=self.env,
        )
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)  # type: ignore[no-any-return]

    def runtime(self) -> Any:
        os.environ.update(self.env)
        return self.setup.runtime()


def _group(state: str) -> str:
    from fakes.plane_workflow import ORCH_WORKFLOW

    return ORCH_WORKFLOW[state][1]


@pytest.fixture
def plane(setup: Setup, monkeypatch: pytest.MonkeyPatch) -> Iterator[Plane]:
    fake = FakePlane().start()
    project = add_orch_project(fake, "ENG")
    setup.update_config(
        {
            "tracker": {"kind": "plane"},
            "plane": {
                "base_url": fake.url,
                "workspace": fake.workspace,
                "projects": {"ENG": {"id": project.id, "repo": "app"}},
            },
            "reconcile": {"grace_s": 0},
        }
    )
    monkeypatch.setenv("PLANE_API_KEY", fake.api_key)
    yield Plane(setup, fake, project)
    fake.stop()


def test_webhooks_create_once_approve_and_orch_writes_the_state_back(plane: Plane) -> None:
    item = plane.item("Add login", "to_analyse")
    hook = plane.webhook(item, "to_analyse")
    first = plane.send(hook)
    assert "ENG-1: created at analysis" in first["item"]["result"]
    assert plane.state_of(item) == "Analysis"  # written back at creation
    again = plane.send(hook)  # the same delivery: stored once
    assert again["duplicate"] is True
    rt = plane.runtime()
    (task,) = rt.store.list_tasks()
    assert (task.key, task.stage, task.tracker_ref) == ("ENG-1", "analysis", item)
    jobs.work(rt)  # the analyst
    plane.move(item, "approved")
    res = plane.event(item, "approved")["item"]["result"]
    assert "approved" in res and "analysis -> development" in res
    assert plane.state_of(item) == "In Progress"  # the dispatcher wrote the stage back
    # orch's own PATCH comes back as a webhook: it changes nothing.
    assert "already under way" in plane.event(item, "in_progress")["item"]["result"]
    assert len(rt.store.list_tasks()) == 1
    rt.close()


def test_blocked_and_cancelled_in_the_tracker(plane: Plane) -> None:
    item = plane.item("Pause me", "to_analyse")
    plane.event(item, "to_analyse")
    assert "paused" in plane.event(item, "blocked")["item"]["result"]
    rt = plane.runtime()
    assert rt.task("ENG-1").blocked
    assert "resumed" in plane.event(item, "in_progress")["item"]["result"]
    assert not rt.task("ENG-1").blocked
    assert "cancelled" in plane.event(item, "cancelled")["item"]["result"]
    assert rt.task("ENG-1").stage == "cancelled"
    rt.close()


@pytest.mark.slow
def test_a_webhook_and_the_reconciler_racing_from_processes_make_one_task(plane: Plane) -> None:
    item = plane.item("Raced", "to_analyse")
    body = plane.webhook(item, "to_analyse")
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("ORCH_")}, **plane.env}
    base = [sys.executable, "-m", "orch", "-c", str(plane.setup.config_path)]
    cmds = []
    for i in range(8):
        if i % 2:
            cmds.append([*base, "reconcile"])
        else:
            # distinct deliveries of the same change (Plane retries with new delivery ids)
            hdr = plane.setup.root / f"h{i}.json"
            hdr.write_text(json.dumps({"X-Plane-Event": "issue", "X-Plane-Delivery": f"d-{i}"}))
            copy = plane.setup.root / f"b{i}.json"
            copy.write_text(body.read_text().replace('"wh-1"', f'"wh-{i}"'))
            cmds.append([*base, "event", "plane", "--body", str(copy), "--headers", str(hdr)])
    procs = [
        subprocess.Popen(
            c, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=plane.setup.root
        )
        for c in cmds
    ]
    for p in procs:
        _, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
    rt = plane.runtime()
    tasks_now = rt.store.list_tasks()
    assert [(t.key, t.tracker_ref) for t in tasks_now] == [("ENG-1", item)]
    assert len(rt.store.jobs(task_id=tasks_now[0].id)) == 1  # one analyst job
    created = [r for r in rt.store.history(tasks_now[0].id) if r.event == "created"]
    assert len(created) == 1
    rt.close()


def test_a_done_item_aliasing_approved_is_never_replayed_and_a_night_is_quiet(
    setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakePlane().start()
    try:
        # A misconfigured project: its Done state is named "Approved" (group completed).
        project = add_orch_project(fake, "ENG", omit=["approved"], rename={"done": "Approved"})
        setup.update_config(
            {
                "tracker": {"kind": "plane"},
                "plane": {
                    "base_url": fake.url,
                    "workspace": fake.workspace,
                    "projects": {"ENG": {"id": project.id, "repo": "app"}},
                },
                "reconcile": {"grace_s": 0},
            }
        )
        monkeypatch.setenv("PLANE_API_KEY", fake.api_key)
        rt = setup.runtime()
        finished = fake.add_work_item(project.id, "Shipped long ago", state_id=project.states["done"])
        live = fake.add_work_item(project.id, "Under way", state_id=project.states["to_analyse"])
        reconcile(rt)  # creates the live one's task; the Done one is terminal by group
        keys = {t.tracker_ref: t.key for t in rt.store.list_tasks()}
        assert finished not in keys and live in keys
        tasks.cancel(rt, keys[live], "synced and finished")
        outbox.flush(rt)
        sent = len(rt.notifier.sent)  # type: ignore[attr-defined]
        now = [rt.now()]
        rt.clock = lambda: now[0]
        for _ in range(240):  # every 2 minutes, 8 hours
            now[0] += 120
            report = reconcile(rt)
            assert report["counters"]["replayed"] == 0 and report["counters"]["advanced"] == 0
            outbox.flush(rt)
        assert len(rt.notifier.sent) == sent  # type: ignore[attr-defined]
        assert len(rt.store.list_tasks()) == 1
        rt.close()
    finally:
        fake.stop()


def test_tracker_down_the_run_completes_skips_conservatively_and_counts(plane: Plane) -> None:
    item = plane.item("Steady", "to_analyse")
    plane.event(item, "to_analyse")
    rt = plane.runtime()
    jobs.work(rt)
    tasks.verdict(rt, "ENG-1", "approve")
    from orch.engine.advance import advance
    from orch.store import Audit

    assert advance(rt, "ENG-1").to_stage == "development"
    (dev,) = rt.store.jobs(task_id=rt.task("ENG-1").id, states=("queued",))
    rt.store.finish_job(
        dev.id,
        state="failed",
        exit_code=1,
        reason="test",
        now=rt.now(),
        head_sha=None,
        audit=Audit(dev.task_id, "test", "job_failed", {}),
    )
    plane.fake.fail_next(1000, 503)
    report = reconcile(rt)  # completes, although every Plane request fails
    assert report["counters"]["errors"] == 1 and "project ENG" in report["errors"][0]
    assert report["counters"]["skipped"]["tracker_unreadable"] == 1  # conservative: not advanced
    assert report["counters"]["advanced"] == 0
    rt.close()


def test_blocked_by_relations_are_ingested_as_dependencies(plane: Plane) -> None:
    a = plane.item("Base", "to_analyse")
    b = plane.item("On top", "to_analyse")
    ghost = plane.item("No task for me", "backlog")
    plane.event(a, "to_analyse")
    plane.event(b, "to_analyse")
    plane.fake.set_relations(plane.project.id, b, blocked_by=[a, ghost])
    plane.fake.set_relations(plane.project.id, a, blocked_by=[b])  # would close a cycle
    out = plane.setup.orch("deps", "ingest", "--from", "plane", "--json", env=plane.env)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    rt = plane.runtime()
    ka, kb = rt.store.task_for_ref(a).key, rt.store.task_for_ref(b).key  # type: ignore[union-attr]
    declared = set(report["declared"])
    assert declared in ({f"{kb} -> {ka}"}, {f"{ka} -> {kb}"})  # the first wins, the second closes a cycle
    assert len(report["refused"]) == 1 and "cycle" in report["refused"][0]
    assert report["unknown"] == [{"task": kb, "blocked_by_item": ghost}]
    again = json.loads(plane.setup.orch("deps", "ingest", "--json", env=plane.env).stdout)
    assert again["declared"] == [] and again["known"] == 1
    rt.close()


def test_a_request_budget_is_shared_out_over_runs(setup: Setup, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakePlane().start()
    try:
        projects = {key: add_orch_project(fake, key) for key in ("AAA", "BBB", "CCC")}
        setup.update_config(
            {
                "tracker": {"kind": "plane"},
                "plane": {
                    "base_url": fake.url,
                    "workspace": fake.workspace,
                    "requests_per_run": 2,
                    "projects": {k: {"id": p.id, "repo": "app"} for k, p in projects.items()},
                },
                "reconcile": {"grace_s": 0},
            }
        )
        monkeypatch.setenv("PLANE_API_KEY", fake.api_key)
        for p in projects.values():
            fake.add_work_item(p.id, "new", state_id=p.states["to_analyse"])
        created: list[list[str]] = []
        for _ in range(3):  # three runs, each a new process's budget: 2 requests = one project
            before = fake.count
            rt = setup.runtime()
            reconcile(rt)
            created.append(sorted(t.key.split("-")[0] for t in rt.store.list_tasks()))
            rt.close()
            assert fake.count - before <= 2
        assert created == [["AAA"], ["AAA", "BBB"], ["AAA", "BBB", "CCC"]]
    finally:
        fake.stop()


def test_a_lost_write_back_is_redone_by_the_reconciler(plane: Plane) -> None:
    item = plane.item("Write me back", "to_analyse")
    plane.event(item, "to_analyse")
    rt = plane.runtime()
    jobs.work(rt)
    tasks.verdict(rt, "ENG-1", "approve")
    plane.fake.fail_next(10, 503)  # the PATCH that would show In Progress fails (retries too)...
    from orch.engine.advance import advance

    assert advance(rt, "ENG-1").to_stage == "development"
    with plane.fake.lock:
        plane.fake._faults.clear()
    assert plane.state_of(item) == "Analysis"  # written at creation; In Progress was lost
    assert any(r.event == "follow_up_failed" for r in rt.store.history(rt.task("ENG-1").id))
    rt.close()
    rt = plane.runtime()
    reconcile(rt)  # ...and the next run puts it right
    assert plane.state_of(item) == "In Progress"
    before = plane.fake.count
    reconcile(rt)  # in step now: pages only, no PATCH
    assert all(r.method == "GET" for r in plane.fake.requests[before:])
    rt.close()


# -- People's decisions win (issue 11) ---------------------------------------------------------


def _approved(plane: Plane, name: str) -> tuple[str, Any]:
    """An item made a task by its webhook, analysed and approved in Plane: at development."""
    item = plane.item(name, "to_analyse")
    plane.event(item, "to_analyse")
    rt = plane.runtime()
    jobs.work(rt)  # the analyst
    plane.move(item, "approved")
    assert "analysis -> development" in plane.event(item, "approved")["item"]["result"]
    assert plane.state_of(item) == "In Progress"
    return item, rt


def test_a_block_in_orch_outlasts_50_reconciles(plane: Plane) -> None:
    item, rt = _approved(plane, "Hold me")
    out = plane.setup.orch("block", "ENG-1", "--reason", "waiting for legal", env=plane.env)
    assert out.returncode == 0, out.stderr
    task = rt.task("ENG-1")
    assert task.blocked
    messages = len(rt.store.outbox_rows(pending_only=False))
    start = plane.fake.count
    env = {**plane.env, "ORCH_RECONCILE_GRACE_S": "0"}
    for _ in range(2):  # the tracker still shows In Progress, which orch wrote itself
        report = json.loads(plane.setup.orch("reconcile", "--json", env=env).stdout)
        assert report["counters"]["replayed"] == 0 and report["counters"]["advanced"] == 0
    now = [rt.now()]
    rt.clock = lambda: now[0]
    for _ in range(48):
        now[0] += 120
        report = reconcile(rt)
        assert report["counters"]["replayed"] == 0 and report["counters"]["advanced"] == 0
        outbox.flush(rt)
    after = rt.task("ENG-1")
    assert after.blocked and (after.stage, after.version) == (task.stage, task.version)
    assert len(rt.store.outbox_rows(pending_only=False)) == messages  # no "unblocked", no move
    assert [r.method for r in plane.fake.requests[start:]].count("PATCH") == 0
    assert plane.state_of(item) == "In Progress"
    assert plane.setup.orch("unblock", "ENG-1", env=plane.env).returncode == 0  # only this lifts it
    assert not rt.task("ENG-1").blocked
    rt.close()


def test_a_pause_made_in_the_tracker_is_lifted_there(plane: Plane) -> None:
    item, rt = _approved(plane, "Pause in Plane")
    plane.move(item, "blocked")
    assert "paused" in plane.event(item, "blocked")["item"]["result"]
    plane.move(item, "in_progress")  # a person moves it back; the webhook is lost
    reconcile(rt)
    assert not rt.task("ENG-1").blocked
    rt.close()


def test_a_lost_cancelled_webhook_is_seen_by_the_next_tick(plane: Plane) -> None:
    item, rt = _approved(plane, "Cancel me")
    plane.move(item, "cancelled")  # the webhook is lost
    out = plane.setup.orch("tick", "--no-spawn", env=plane.env)
    assert out.returncode == 0, out.stderr
    assert rt.task("ENG-1").stage == "cancelled"
    assert plane.state_of(item) == "Cancelled"
    rt.close()


@pytest.mark.slow
def test_a_lost_cancelled_webhook_ships_nothing(plane: Plane) -> None:
    """The CI step's `orch advance` comes before any tick: the merge reads Plane first."""
    item, rt = _approved(plane, "Cancelled before the merge")
    drive_to(rt, "ENG-1", "merge")  # the merge window is closed: it waits there
    plane.move(item, "cancelled")  # the webhook is lost
    main = plane.setup.git("rev-parse", "main")
    plane.setup.open_merge_window()
    gets = plane.fake.count
    out = plane.setup.orch("advance", "ENG-1", "--json", env=plane.env)
    assert out.returncode == 0, out.stderr
    assert "cancelled in the tracker" in json.loads(out.stdout)["message"]
    assert [f"{r.method} {r.segments()[-1]}" for r in plane.fake.requests[gets:]] == [f"GET {item}"]
    for _ in range(3):
        assert plane.setup.orch("tick", "--no-spawn", env=plane.env).returncode == 0
    task = rt.task("ENG-1")
    assert task.stage == "cancelled"
    assert plane.setup.git("rev-parse", "main") == main  # nothing merged
    assert not [e for e in rt.store.effects_of(task.id) if e.effect in ("merge", "deploy")]
    assert plane.state_of(item) == "Cancelled"  # never overwritten
    texts = [m.text for m in rt.store.outbox_rows(pending_only=False)]
    assert [t for t in texts if "merge ->" in t or "-> done" in t] == []
    rt.close()


def test_a_pause_in_the_tracker_stops_the_merge_and_moving_the_item_back_resumes(plane: Plane) -> None:
    item, rt = _approved(plane, "Paused before the merge")
    drive_to(rt, "ENG-1", "merge")
    plane.move(item, "needs_input")  # the webhook is lost
    plane.setup.open_merge_window()
    out = plane.setup.orch("advance", "ENG-1", "--json", env=plane.env)
    assert out.returncode == 3 and "needs input in the tracker" in json.loads(out.stdout)["message"]
    assert rt.task("ENG-1").blocked and rt.task("ENG-1").stage == "merge"
    plane.move(item, "in_progress")  # the person answered and moved it back (webhook lost again)
    out = plane.setup.orch("tick", "--no-spawn", env={**plane.env, "ORCH_RECONCILE_GRACE_S": "0"})
    assert out.returncode == 0, out.stderr
    assert rt.task("ENG-1").stage in ("deploy", "monitoring", "done")
    rt.close()


@pytest.mark.slow
def test_an_item_that_left_the_listing_is_confirmed_before_its_task_is_cancelled(plane: Plane) -> None:
    """Plane sends no webhook for a delete or an archive, and its listing drops both: the
    reconciler asks for the item (one GET) and cancels only on a 404 or `archived_at`."""
    fake, pid = plane.fake, plane.project.id
    items = {n: plane.item(n, "to_analyse") for n in ("deleted", "archived", "flaky", "old-server")}
    rt = plane.runtime()
    reconcile(rt)  # the four tasks are made from the listing
    key = {n: rt.store.task_for_ref(i).key for n, i in items.items()}  # type: ignore[union-attr]
    fake.delete(pid, items["deleted"])
    fake.archive(pid, items["archived"])
    fake.archive(pid, items["flaky"])
    fake.archive(pid, items["old-server"])
    path = f"/api/v1/workspaces/{fake.workspace}/projects/{pid}/work-items/%s/"
    fake.override("GET", path % items["flaky"], 503, {"error": "upstream connect error"})
    # A server whose detail view still shows an archived item: `archived_at` says it.
    fake.override("GET", path % items["old-server"], 200, {**fake.item(pid, items["old-server"])})
    start = fake.count
    out = plane.setup.orch("reconcile", "--json", env=plane.env)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["counters"]["gone"] == 3
    assert any(key["flaky"] in e and "could not be read" in e for e in report["errors"])
    stages = {n: rt.task(k).stage for n, k in key.items()}
    assert stages == {
        "deleted": "cancelled",
        "archived": "cancelled",
        "flaky": "analysis",
        "old-server": "cancelled",
    }
    gets = [r.segments()[-1] for r in fake.requests[start:] if r.method == "GET" and "work-items" in r.path]
    counted = Counter(g for g in gets if g != "work-items")
    assert {n: counted[i] for n, i in items.items() if n != "flaky"} == dict.fromkeys(
        ("deleted", "archived", "old-server"), 1
    )  # one GET each; the 5xx was retried within the request's own policy
    assert counted[items["flaky"]] >= 1
    assert rt.task(key["flaky"]).stage == "analysis"
    with fake.lock:
        del fake._overrides[("GET", path % items["flaky"])]
    assert json.loads(plane.setup.orch("reconcile", "--json", env=plane.env).stdout)["counters"]["gone"] == 1
    assert rt.task(key["flaky"]).stage == "cancelled"
    off = plane.setup.orch("reconcile", "--json", env={**plane.env, "ORCH_RECONCILE_GONE_ENABLED": "false"})
    assert json.loads(off.stdout)["counters"]["gone"] == 0
    rt.close()


def _relay(plane: Plane, secret: str) -> tuple[subprocess.Popen[str], str]:
    """`orch relay serve` as its own long-lived process, on a free port."""
    proc = plane.setup.orch_popen(
        "relay",
        "serve",
        "--port",
        "0",
        env={
            **plane.env,
            "ORCH_GITEA_WEBHOOK_SECRET": secret,
            "ORCH_PLANE_WEBHOOK_SECRET": "plane-" + secret,
        },
    )
    assert proc.stderr is not None
    line = proc.stderr.readline()
    assert "listening on http://" in line, line
    return proc, line.rsplit(" ", 1)[-1].strip()


def _ci_green(url: str, secret: str, sha: str) -> None:
    """Gitea's `status` webhook for the head, signed, posted to the relay."""
    import hashlib
    import hmac

    import httpx

    body = json.dumps(
        {"sha": sha, "state": "success", "context": "orch/ci", "repository": {"full_name": "acme/app"}}
    ).encode()
    sig = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    headers = {"X-Gitea-Event": "status", "X-Gitea-Signature": sig, "Content-Type": "application/json"}
    assert httpx.post(f"{url}/hooks/gitea", content=body, headers=headers, timeout=10).status_code == 202


def _wait_for(check: Any, seconds: float = 10.0) -> bool:
    import time

    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if check():
            return True
        time.sleep(0.05)
    return False


@pytest.mark.slow
def test_a_long_lived_relay_writes_back_what_the_database_says_not_what_it_remembers(plane: Plane) -> None:
    # CI is Gitea's webhook, not local; the agents run when this test says so.
    plane.setup.update_config({"repos": {"app": {"ci": "false"}}, "work": {"start_immediately": False}})
    item, rt = _approved(plane, "Relay writes back")
    secret = "gitea-hook-secret"
    relay, url = _relay(plane, secret)
    try:
        jobs.work(rt, max_jobs=1)  # the developer pushes; local CI says no
        _ci_green(url, secret, rt.forge.branch_head(rt.task("ENG-1")) or "")
        assert _wait_for(lambda: plane.state_of(item) == "Code Review"), "the relay moved it to review"
        # Another process: the review is rejected and the task goes back (Plane: In Progress).
        out = plane.setup.orch("reject", "ENG-1", "--reason", "not yet", env=plane.env)
        assert out.returncode == 0 and "review -> development" in out.stdout, out.stderr
        assert plane.state_of(item) == "In Progress" and rt.task("ENG-1").stage == "development"
        jobs.work(rt)  # the developer again (the reviewer's stale job is dropped): a new head
        patches = sum(r.method == "PATCH" for r in plane.fake.requests)
        _ci_green(url, secret, rt.forge.branch_head(rt.task("ENG-1")) or "")
        assert _wait_for(lambda: rt.task("ENG-1").stage == "review")
        assert _wait_for(lambda: plane.state_of(item) == "Code Review"), "the relay's second write-back"
        assert sum(r.method == "PATCH" for r in plane.fake.requests) == patches + 1
    finally:
        relay.terminate()
        relay.communicate(timeout=10)
    rt.close()


def test_with_no_webhook_lost_the_first_tick_writes_nothing_to_plane(plane: Plane) -> None:
    items = [plane.item(f"Item {n}", "to_analyse") for n in range(2)]
    for item in items:
        plane.event(item, "to_analyse")
    assert [plane.state_of(i) for i in items] == ["Analysis"] * 2  # written at creation
    start = plane.fake.count
    out = plane.setup.orch("tick", "--no-spawn", env={**plane.env, "ORCH_RECONCILE_GRACE_S": "0"})
    assert out.returncode == 0, out.stderr
    sent = [r.method for r in plane.fake.requests[start:]]
    assert "GET" in sent and "PATCH" not in sent, sent
