"""What the commands orch runs inherit: task text made safe, and none of orch's secrets.

Issue 10 item 4 (a NUL in a title crashed the agent's start and left the job running)
and item 12 (agents, hooks, gate, effect and CI commands inherited every secret).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import Setup, drive_to

from orch.adapters.process import ProcessRunner
from orch.engine import jobs, tasks
from orch.names import env_text

SECRETS = {
    "PLANE_API_KEY": "plane-key-5f1d0c",
    "ORCH_MY_GITEA": "gitea-token-9a8b7c",  # named by [gitea] token_env below
    "TELEGRAM_BOT_TOKEN": "123456:tg-token-AAAAbbbbCCCCddddEEEE",
    "ORCH_RELAY_TOKEN": "relay-token-3e4f5a",
    "ORCH_PLANE_WEBHOOK_SECRET": "plane-hook-1a2b3c",
    "ORCH_GITEA_WEBHOOK_SECRET": "gitea-hook-4d5e6f",
}
PRINT_ENV = "env | sed 's/^/{tag}:/'"


def _env(tag: str) -> str:
    return PRINT_ENV.format(tag=tag)


def test_env_text_makes_any_title_startable() -> None:
    assert env_text("plain title") == "plain title"
    assert env_text("nul\x00byte \ud800 esc\x1b[2J\nnext") == "nul byte \ufffd esc [2J\nnext"
    assert len(env_text("x" * 200_000)) == 4096


def test_a_command_that_cannot_start_fails_with_the_reason(tmp_path: Path) -> None:
    out = ProcessRunner().run(
        "true", cwd=tmp_path, env={"ORCH_TASK_TITLE": "a\x00b"}, log_path=tmp_path / "log", timeout_s=10
    )
    assert out.state == "failed" and "could not start" in out.reason and "null" in out.reason


def test_a_nul_in_a_title_reaches_the_agent_sanitized(setup: Setup) -> None:
    setup.update_config(
        {
            "agents": {"analyst": {"command": 'printf "title=[%s]\\n" "$ORCH_TASK_TITLE"'}},
            "workspace": {"after_create": 'printf "created for [%s]\\n" "$ORCH_TASK_TITLE"'},
        }
    )
    rt = setup.runtime()
    task = tasks.add(rt, "evil\x00title \x00")
    (report,) = jobs.work(rt, max_jobs=1)
    assert report.state == "succeeded", report
    assert rt.store.get_job(report.job).state == "succeeded"  # type: ignore[union-attr]
    assert "title=[evil title  ]" in Path(report.log or "").read_text()
    assert task.key == report.task


def test_commands_never_see_orchs_secrets_unless_passed(
    setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    for var, value in SECRETS.items():
        monkeypatch.setenv(var, value)
    monkeypatch.setenv("NOT_A_SECRET", "visible-value")
    agents = setup.root / "agents"
    setup.update_config(
        {
            "gitea": {"token_env": "ORCH_MY_GITEA"},
            "workspace": {"before_run": _env("hook"), "after_create": _env("create")},
            "agents": {
                name: {
                    "command": f"{_env(name)}; {agents / (name + '.sh')}",
                    **({"pass_env": ["TELEGRAM_BOT_TOKEN"]} if name == "analyst" else {}),
                }
                for name in ("analyst", "developer", "reviewer")
            },
            "repos": {"app": {"ci": f"{_env('ci')}; ls features/*.txt"}},
            "effects": {
                "deploy": {"command": f'{_env("deploy")}; echo "deployed $ORCH_TASK_KEY" >> deploys.log'}
            },
            "gates": {
                "monitor_healthy": {"command": f'{_env("gate")}; grep -q "$ORCH_TASK_KEY" deploys.log'},
                "merge_window": {"command": f"{_env('window')}; true"},
            },
        }
    )
    rt = setup.runtime()
    key = tasks.add(rt, "print the environment").key
    drive_to(rt, key, "done")
    rt.close()
    seen = ""
    for path in setup.root.rglob("*"):
        if path.is_file() and ".git" not in path.parts and path.name != "orch.toml":
            seen += path.read_text(errors="replace")
    # Every kind of command ran and printed its environment...
    for tag in ("hook", "create", "analyst", "developer", "reviewer", "ci", "deploy", "gate", "window"):
        assert f"{tag}:ORCH_TASK_KEY={key}" in seen, tag
        assert f"{tag}:NOT_A_SECRET=visible-value" in seen, tag
    # ...and the only secret in any of it is the one the analyst was given by name.
    assert seen.count(SECRETS["TELEGRAM_BOT_TOKEN"]) == 1
    assert f"analyst:TELEGRAM_BOT_TOKEN={SECRETS['TELEGRAM_BOT_TOKEN']}" in seen
    for var, value in SECRETS.items():
        if var != "TELEGRAM_BOT_TOKEN":
            assert value not in seen, f"{var} leaked"


def test_an_unexpected_error_at_the_start_ends_the_job_failed_not_running(setup: Setup) -> None:
    rt = setup.runtime()
    task = tasks.add(rt, "a job whose prompt cannot be written")
    (job,) = rt.store.jobs(task_id=task.id)
    # A directory where the prompt file goes: an OSError that no handler expects (even as root).
    (rt.config.state_dir / "jobs" / str(job.id) / "prompt.md").mkdir(parents=True)
    with pytest.raises(IsADirectoryError):
        jobs.work(rt, max_jobs=1)
    ended = rt.store.get_job(job.id)
    assert ended is not None and ended.state == "failed", ended
    assert "IsADirectoryError" in (ended.reason or "")
    retry = [j for j in rt.store.jobs(task_id=task.id) if j.id != job.id]
    assert len(retry) == 1 and retry[0].state == "queued"  # retried like any failure


def test_every_workspace_hook_gets_the_task_variables_and_the_job_hooks_the_jobs_too(
    setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One hook runner (orch/command_env.py): the forge's hooks and the job's see the same
    task variables; before_run and after_run also the job's own, never the agent's pass_env."""
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", SECRETS["TELEGRAM_BOT_TOKEN"])
    trail = setup.root / "hooks.env"
    dump = f"env | grep '^ORCH_' | sed \"s/^/$ORCH_HOOK:/\" >> {trail}"
    setup.update_config(
        {
            "workspace": {h: dump for h in ("after_create", "before_run", "after_run", "before_remove")},
            "agents": {"analyst": {"command": "true", "pass_env": ["TELEGRAM_BOT_TOKEN"]}},
        }
    )
    rt = setup.runtime()
    task = tasks.add(rt, "hooks see the task")
    (report,) = jobs.work(rt, max_jobs=1)
    assert report.state == "succeeded", report
    tasks.cancel(rt, task.key, "done looking")
    lines = trail.read_text().splitlines()
    worktree = str(rt.forge.worktree_path(task))
    for hook in ("after_create", "before_run", "after_run", "before_remove"):
        seen = {ln.split(":", 1)[1] for ln in lines if ln.startswith(hook + ":")}
        for var in (
            f"ORCH_TASK_KEY={task.key}",
            "ORCH_TASK_TITLE=hooks see the task",
            f"ORCH_TASK_REPO={task.repo}",
            f"ORCH_STAGE={'cancelled' if hook == 'before_remove' else 'analysis'}",
            "ORCH_RETRIES=0",
            f"ORCH_BRANCH={rt.forge.branch(task)}",
            f"ORCH_WORKTREE={worktree}",
            f"ORCH_HOOK={hook}",
        ):
            assert var in seen, (hook, var, sorted(seen))
        job_vars = {v.split("=", 1)[0] for v in seen} & {"ORCH_JOB_ID", "ORCH_AGENT", "ORCH_HOME"}
        assert job_vars == ({"ORCH_JOB_ID", "ORCH_AGENT", "ORCH_HOME"} if "_run" in hook else set()), hook
    assert SECRETS["TELEGRAM_BOT_TOKEN"] not in trail.read_text()
