"""The CLI as a user meets it: real processes, exit codes and messages."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

from conftest import Setup, drive_to, run_orch

from orch import identity
from orch.engine import tasks
from orch.identity import Owner
from orch.store import schema


def test_version_and_help() -> None:
    out = run_orch("--version")
    assert out.returncode == 0 and out.stdout.startswith("orch ")
    out = run_orch("--help")
    assert out.returncode == 0 and "advance" in out.stdout and "Example:" in out.stdout


def test_unknown_task_and_unknown_stage_are_usage_errors(setup: Setup) -> None:
    out = setup.orch("advance", "NOPE-1")
    assert out.returncode == 2 and "no task 'NOPE-1'" in out.stderr
    assert setup.orch("task", "add", "real", "--key", "K-1").returncode == 0
    out = setup.orch("advance", "K-1", "--expect", "limbo")
    assert out.returncode == 2 and "no such stage" in out.stderr


def test_red_gate_exits_3_and_json_says_why(setup: Setup) -> None:
    setup.orch("task", "add", "red", "--key", "K-1")
    out = setup.orch("advance", "K-1", "--json")
    assert out.returncode == 3
    data = json.loads(out.stdout)
    assert data["outcome"] == "not_ready" and data["exit_code"] == 3
    assert {g["gate"] for g in data["gates"]} == {"human_approved", "agent_ok"}


def test_bad_task_key_is_refused(setup: Setup) -> None:
    out = setup.orch("task", "add", "x", "--key", "../../etc")
    assert out.returncode == 2 and "may hold only" in out.stderr
    out = setup.orch("task", "add", "x", "--key", "K-1")
    out = setup.orch("task", "add", "y", "--key", "K-1")
    assert out.returncode == 2 and "exists already" in out.stderr


def test_malformed_config_exits_2_naming_the_key(tmp_path: Path) -> None:
    cfg = tmp_path / "orch.toml"
    cfg.write_text("[transition_lease]\nenabled = 'sometimes'\n")
    out = run_orch("-c", str(cfg), "task", "list")
    assert out.returncode == 2
    assert "[transition_lease] enabled: expected true or false" in out.stderr


def test_database_from_a_newer_orch_exits_2_untouched(setup: Setup) -> None:
    setup.orch("task", "add", "x")
    db = setup.root / ".orch" / "orch.db"
    c = sqlite3.connect(db)
    c.execute(f"PRAGMA user_version = {schema.LATEST + 5}")
    c.close()
    before = db.read_bytes()
    out = setup.orch("task", "list")
    assert out.returncode == 2 and "newer orch" in out.stderr
    assert db.read_bytes() == before


def test_locked_database_exits_4_and_writes_nothing(setup: Setup) -> None:
    setup.orch("task", "list")  # creates the database
    holder = sqlite3.connect(setup.root / ".orch" / "orch.db", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        out = setup.orch("task", "add", "x", "--key", "L-1", env={"ORCH_STORE_BUSY_TIMEOUT_MS": "300"})
    finally:
        holder.execute("ROLLBACK")
    assert out.returncode == 4 and "locked" in out.stderr
    listed = json.loads(setup.orch("task", "list", "--json").stdout)
    assert listed == []


def test_live_lease_makes_advance_busy_and_release_needs_force(setup: Setup) -> None:
    rt = setup.runtime()
    key = tasks.add(rt, "held").key
    drive_to(rt, key, "merge")
    parent = os.getpid()  # this test process: alive for the whole test
    owner = Owner(identity.host(), identity.me().boot_id, parent, identity.process_start_time(parent) or "")
    setup.open_merge_window()
    rt.store.acquire_lease(f"task:{key}", owner=owner, actor="someone", purpose="merge->deploy", now=rt.now())
    out = setup.orch("advance", key)
    assert out.returncode == 4 and "lease held by someone" in out.stderr
    shown = json.loads(setup.orch("lease", "show", key, "--json").stdout)
    assert shown[0]["alive"] is True and shown[0]["actor"] == "someone"
    out = setup.orch("lease", "release", key)
    assert out.returncode == 4 and "--force" in out.stderr
    out = setup.orch("lease", "release", key, "--force")
    assert out.returncode == 0
    assert setup.orch("advance", key).returncode == 0
    history = json.loads(setup.orch("history", key, "--json").stdout)
    assert any(r["event"] == "lease_released_by_hand" and r["detail"]["forced"] for r in history)
    rt.close()


def test_person_commands_and_json_outputs(setup: Setup) -> None:
    assert setup.orch("task", "add", "people", "--key", "P-1").returncode == 0
    work = json.loads(setup.orch("work", "--inline", "--json").stdout)
    assert [j["state"] for j in work] == ["succeeded"]
    out = setup.orch("approve", "P-1", "--reason", "fine")
    assert out.returncode == 0 and "analysis -> development" in out.stdout
    assert setup.orch("block", "P-1", "--reason", "wait").returncode == 0
    assert setup.orch("advance", "P-1").returncode == 3
    assert setup.orch("unblock", "P-1").returncode == 0
    shown = json.loads(setup.orch("task", "show", "P-1", "--json").stdout)
    assert shown["stage"] == "development" and shown["blocked"] is False and shown["lease"] is None
    assert setup.orch("cancel", "P-1").returncode == 0
    assert setup.orch("cancel", "P-1").returncode == 2
    listed = json.loads(setup.orch("task", "list", "--json").stdout)
    assert [(t["key"], t["stage"]) for t in listed] == [("P-1", "cancelled")]


def test_init_writes_config_and_database(tmp_path: Path) -> None:
    import subprocess

    repo = tmp_path / "app"
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
    out = run_orch("init", "--repo", ".", cwd=repo)
    assert out.returncode == 0, out.stderr
    assert (repo / "orch.toml").exists() and (repo / ".orch" / "orch.db").exists()
    out = run_orch("init", cwd=repo)
    assert out.returncode == 2 and "--force" in out.stderr
    shown = json.loads(run_orch("config", "show", "--json", cwd=repo).stdout)
    assert shown["config"]["repos"]["app"]["path"] == "."


def test_config_show_redacts_secrets() -> None:
    from orch.cli.config import redact

    data = {"plane": {"token_env": "PLANE_API_KEY", "api_key": "s3cret", "webhook_secret": "x"}}
    assert redact(data) == {
        "plane": {"token_env": "PLANE_API_KEY", "api_key": "***", "webhook_secret": "***"}
    }


def test_demo_command_json(tmp_path: Path) -> None:
    out = run_orch("demo", "--json", "--keep", str(tmp_path / "d"))
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["ok"] and set(data["tasks"].values()) == {"done"}
    assert (tmp_path / "d" / "orch.toml").exists()
