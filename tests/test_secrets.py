"""Secrets (API keys, bot tokens, webhook secrets) never reach the database, the logs,
`--json` output or an error message. Every command that could leak one runs here with
real integrations (fake servers on 127.0.0.1), then everything written is grepped."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Setup
from fakes.plane_workflow import add_orch_project
from fakes.servers import FakePlane, FakeTelegram

GITEA_WEBHOOK = "gitea-webhook-SECRET-7f3a9c"
PLANE_WEBHOOK = "plane-webhook-SECRET-1b2c3d"
RELAY_TOKEN = "relay-bearer-SECRET-9e8d7c"
GITEA_TOKEN = "gitea-api-token-SECRET-5a6b7c"


@pytest.fixture
def wired(setup: Setup, tmp_path: Path) -> Iterator[tuple[Setup, dict[str, str], list[str]]]:
    plane, tg = FakePlane().start(), FakeTelegram().start()
    project = add_orch_project(plane, "ENG")
    setup.update_config(
        {
            "tracker": {"kind": "plane"},
            "notifier": {"kind": "telegram"},
            "plane": {
                "base_url": plane.url,
                "workspace": plane.workspace,
                "projects": {"ENG": {"id": project.id, "repo": "app"}},
            },
            "telegram": {"base_url": tg.url, "chat_id": "-100123"},
        }
    )
    env = {
        "PLANE_API_KEY": plane.api_key,
        "TELEGRAM_BOT_TOKEN": tg.token,
        "GITEA_TOKEN": GITEA_TOKEN,
        "ORCH_GITEA_WEBHOOK_SECRET": GITEA_WEBHOOK,
        "ORCH_PLANE_WEBHOOK_SECRET": PLANE_WEBHOOK,
        "ORCH_RELAY_TOKEN": RELAY_TOKEN,
        "ORCH_LOG_LEVEL": "debug",
        "ORCH_LOG_FORMAT": "json",
        "ORCH_LOG_FILE": str(tmp_path / "orch.jsonl"),
    }
    item = plane.add_work_item(project.id, "Secret-free task", state_id=project.states["to_analyse"])
    secrets = [
        plane.api_key,
        tg.token,
        tg.token.split(":", 1)[1],
        GITEA_TOKEN,
        GITEA_WEBHOOK,
        PLANE_WEBHOOK,
        RELAY_TOKEN,
    ]
    yield setup, {**env, "_ITEM": item, "_TG_URL": tg.url}, secrets
    assert tg.messages, "Telegram was really used"
    plane.stop()
    tg.stop()


def test_no_secret_is_written_anywhere(
    wired: tuple[Setup, dict[str, str], list[str]], tmp_path: Path
) -> None:
    setup, env, secrets = wired
    env_urls = {"tg": env["_TG_URL"]}
    env = {k: v for k, v in env.items() if not k.startswith("_")}
    outputs: list[str] = []

    def run(*args: str, extra: dict[str, str] | None = None) -> None:
        out = setup.orch(*args, env={**env, **(extra or {})})
        outputs.extend([out.stdout, out.stderr])

    run("reconcile", "--json")  # creates ENG-1 from Plane, tells Telegram
    run("work", "--inline", "--json")
    run("approve", "ENG-1")  # writes the state back to Plane, tells Telegram
    run("tick", "--json")
    run("queue", "--json")
    run("explain", "ENG-1", "--json")
    run("config", "show", "--json")
    run("config", "show")
    run("config", "check", "--online", "--json")
    run("doctor", "--json")
    run("history", "ENG-1", "--json")
    # Failures: a refused key, an unreachable notifier; their errors must not quote the secret.
    run("config", "check", "--online", "--json", extra={"PLANE_API_KEY": "wrong-" + secrets[0]})
    setup.update_config({"telegram": {"base_url": "http://127.0.0.1:9"}})  # nothing listens there
    run("block", "ENG-1")  # the message stays in the outbox, with its (redacted) error
    setup.update_config({"telegram": {"base_url": env_urls["tg"]}})
    # Webhooks: one signed, one with a wrong signature.
    body = json.dumps(
        {"ref": "refs/heads/main", "before": "0" * 40, "after": "1" * 40, "repository": {"full_name": "x/y"}}
    ).encode()
    (tmp_path / "body.json").write_bytes(body)
    sig = hmac.new(GITEA_WEBHOOK.encode(), body, hashlib.sha256).hexdigest()
    (tmp_path / "h.json").write_text(json.dumps({"X-Gitea-Event": "push", "X-Gitea-Signature": sig}))
    run(
        "event",
        "gitea",
        "--body",
        str(tmp_path / "body.json"),
        "--headers",
        str(tmp_path / "h.json"),
        "--json",
    )
    run("inbox", "list", "--json")

    rt_db = setup.root / ".orch" / "orch.db"
    import sqlite3

    errors = [
        r[0]
        for r in sqlite3.connect(rt_db).execute("SELECT last_error FROM outbox WHERE last_error IS NOT NULL")
    ]
    assert errors and all("127.0.0.1:9" in e for e in errors)  # the failure was recorded
    written = [b"".join(p.read_bytes() for p in (setup.root / ".orch").rglob("*") if p.is_file())]
    log = (tmp_path / "orch.jsonl").read_bytes()
    assert b'"event": "advance"' in log  # the log is really there
    assert any('"ENG-1"' in o for o in outputs)  # the commands really ran
    for secret in secrets:
        for blob in written:
            assert secret.encode() not in blob, f"a secret is in the state directory: {secret[:6]}..."
        assert secret.encode() not in log, f"a secret is in the log: {secret[:6]}..."
        for o in outputs:
            assert secret not in o, f"a secret is in the output: {secret[:6]}...\n{o[:500]}"


def test_git_never_hands_a_secret_to_a_hook_an_agent_wrote(
    setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An agent works inside the repository, so it can write the repository's hooks and
    # config; git runs them during orch's own worktree adds, rebases and merges. They see
    # the task's work happen, never orch's secrets.
    from conftest import drive_to

    from orch.engine import advance, tasks

    for name, value in (("GITEA_TOKEN", GITEA_TOKEN), ("ORCH_RELAY_TOKEN", RELAY_TOKEN)):
        monkeypatch.setenv(name, value)
    seen = setup.root / "seen-by-git"
    hook = setup.repo / ".git" / "hooks" / "reference-transaction"
    hook.write_text(f'#!/bin/sh\nenv >> "{seen}"\ncat > /dev/null\n')
    hook.chmod(0o755)
    rt = setup.runtime()
    key = tasks.add(rt, "watched by git").key
    drive_to(rt, key, "merge")
    setup.open_merge_window()
    assert advance.advance(rt, key, expect="merge").to_stage == "deploy"
    rt.close()
    written = seen.read_text()
    assert written.count("PATH=") >= 3  # git really ran it, for every ref it moved
    assert GITEA_TOKEN not in written and RELAY_TOKEN not in written
