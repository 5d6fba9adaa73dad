"""A newcomer's first hour (issue 14), from the user's side: `orch` as a subprocess in a
scratch repository, one test per numbered item, plus the immediate starts (no dead minutes
between stages) and their concurrency limit."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import Setup, run_orch


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=True).stdout


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A scratch repository on `master` (not main) with one commit and a subdirectory."""
    path = tmp_path / "myrepo"
    (path / "sub").mkdir(parents=True)
    _git(tmp_path, "init", "-q", "-b", "master", str(path))
    (path / "sub" / "README").write_text("hi\n")
    _git(path, "add", "-A")
    _git(path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "init")
    return path


def _toml(path: Path, text: str) -> None:
    """Write orch.toml and create its database, as `orch init` would."""
    from orch import config
    from orch.app.wiring import open_runtime

    path.write_text(text)
    open_runtime(config.load(path, environ={})).close()


def test_1_orch_toml_is_found_from_a_subdirectory(repo: Path) -> None:
    assert run_orch("init", cwd=repo).returncode == 0
    quiet = {"ORCH_WORK_START_IMMEDIATELY": "false"}
    assert run_orch("task", "add", "from the top", "--key", "T-1", cwd=repo, env=quiet).returncode == 0
    out = run_orch("task", "list", "--json", cwd=repo / "sub")
    assert out.returncode == 0, out.stderr
    assert [t["key"] for t in json.loads(out.stdout)] == ["T-1"]
    assert run_orch("work", "--inline", cwd=repo / "sub").returncode == 0  # the analyst
    status = run_orch("status", cwd=repo / "sub")  # item 9: who must act, and how
    assert "orch approve T-1" in status.stdout and "from the top" in status.stdout, status
    assert not (repo / "sub" / ".orch").exists()


def test_2_init_looks_at_the_repository(repo: Path, tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    out = run_orch("init", cwd=plain)
    assert out.returncode == 2 and "not inside a git repository" in out.stderr
    assert not (plain / "orch.toml").exists()
    out = run_orch("init", "--repo", str(tmp_path / "nowhere"), cwd=plain)
    assert out.returncode == 2 and "no such directory" in out.stderr

    out = run_orch("init", cwd=repo)
    assert out.returncode == 0, out.stderr
    shown = json.loads(run_orch("config", "show", "--json", cwd=repo).stdout)["config"]
    assert shown["repos"] == {"myrepo": {"path": ".", "default_branch": "master"}}
    check = run_orch("config", "check", cwd=repo)
    assert check.returncode == 0 and check.stdout.startswith("ok"), check.stdout + check.stderr
    assert "warning" not in check.stdout + check.stderr
    # orch's database and worktrees stay out of `git status`; only orch.toml is new.
    assert _git(repo, "status", "--porcelain").split() == ["??", "orch.toml"]


def _failing_site(repo: Path, command: str) -> None:
    _toml(
        repo / "orch.toml",
        '[repos.app]\npath = "."\ndefault_branch = "master"\n'
        "[work]\nbackoff_base_s = 0\nbackoff_max_s = 0\nstart_immediately = false\n"
        f'[agents.analyst]\ncommand = "{command}"\nmax_attempts = 2\n',
    )


def test_3_a_job_that_gives_up_escalates_and_retry_runs_it_again(repo: Path) -> None:
    _failing_site(repo, "echo broken; exit 3")
    assert run_orch("task", "add", "flaky", "--key", "F-1", cwd=repo).returncode == 0
    out = run_orch("work", "--inline", cwd=repo)
    assert out.returncode == 1 and out.stdout.count(": failed") == 2, out.stdout
    task = json.loads(run_orch("task", "show", "F-1", "--json", cwd=repo).stdout)
    assert task["blocked"] and task["escalated"]
    assert "analyst gave up after 2 attempts" in task["block_reason"]
    view = json.loads(run_orch("queue", "--json", cwd=repo).stdout)
    assert view["healthy"] is False and "1 escalated task(s) wait for a person" in view["problems"]
    explain = json.loads(run_orch("explain", "F-1", "--json", cwd=repo).stdout)
    assert "`orch retry F-1`" in explain["next"]
    status = run_orch("status", cwd=repo)  # item 9: one glance says what a person must do
    assert status.returncode == 1 and "orch retry F-1" in status.stdout and "escalated" in status.stdout

    # A person fixes the agent and retries: a fresh series of attempts, the escalation cleared.
    _failing_site(repo, "echo fixed")
    out = run_orch("retry", "F-1", "--reason", "fixed the agent", cwd=repo)
    assert out.returncode == 0 and "queued" in out.stdout, out.stderr
    assert run_orch("retry", "F-1", cwd=repo).returncode == 2  # already queued
    out = run_orch("work", "--inline", cwd=repo)
    assert out.returncode == 0 and ": succeeded" in out.stdout
    task = json.loads(run_orch("task", "show", "F-1", "--json", cwd=repo).stdout)
    assert not task["blocked"] and not task["escalated"]
    assert task["jobs"][-1]["note"].startswith("retried by ")
    # runners.log and `orch logs` show what the agent printed.
    logs = run_orch("logs", "F-1", cwd=repo)
    assert logs.returncode == 0 and "broken" in logs.stdout and "fixed" in logs.stdout


def test_4_a_missing_repository_is_named_and_refused(tmp_path: Path) -> None:
    from orch.adapters.git import GitError, git

    _toml(tmp_path / "orch.toml", '[repos.app]\npath = "gone"\n')
    for args in (("task", "add", "x"), ("tick",)):
        out = run_orch(*args, cwd=tmp_path)
        assert out.returncode == 2, out
        assert "[repos.app] path:" in out.stderr and "does not exist" in out.stderr
        assert "not installed" not in out.stderr and "Traceback" not in out.stderr
    with pytest.raises(GitError, match="is missing"):
        git("status", cwd=tmp_path / "gone")


def test_6_a_log_file_in_a_missing_directory(repo: Path, tmp_path: Path) -> None:
    assert run_orch("init", cwd=repo).returncode == 0
    log = tmp_path / "var" / "log" / "orch" / "tick.jsonl"
    env = {"ORCH_LOG_FILE": str(log), "ORCH_LOG_LEVEL": "info", "ORCH_LOG_FORMAT": "json"}
    out = run_orch("tick", env=env, cwd=repo)
    assert out.returncode == 0, out.stderr
    assert any(json.loads(line)["event"] == "tick" for line in log.read_text().splitlines())
    (tmp_path / "afile").write_text("")
    env["ORCH_LOG_FILE"] = str(tmp_path / "afile" / "tick.jsonl")  # under a file: cannot exist
    out = run_orch("tick", env=env, cwd=repo)
    assert out.returncode == 0 and "Traceback" not in out.stderr
    assert out.stderr.count("cannot write the log file") == 1


def test_8_exit_codes_agree_with_the_table(repo: Path) -> None:
    assert run_orch("init", cwd=repo).returncode == 0
    assert run_orch("task", "add", "x", "--key", "E-1", cwd=repo).returncode == 0
    out = run_orch("task", "list", "--stage", "reveiw", cwd=repo)
    assert out.returncode == 2 and "no such stage 'reveiw'" in out.stderr
    out = run_orch("job", "run", "42", cwd=repo)
    assert out.returncode == 2 and "no job 42" in out.stderr
    out = run_orch("approve", "E-1", cwd=repo)  # at analysis, a person's gate
    assert out.returncode == 0 and "E-1: approved at analysis" in out.stdout
    out = run_orch("approve", "E-1", cwd=repo)  # development: no gate reads a verdict
    assert out.returncode == 2 and "no gate reads a verdict" in out.stderr
    assert run_orch("cancel", "E-1", cwd=repo).returncode == 0
    out = run_orch("block", "E-1", cwd=repo)
    assert out.returncode == 2 and "cancelled" in out.stderr
    # A reader that stops early (`orch explain E-1 | head`) is not an error.
    proc = subprocess.Popen(
        _orch_argv("explain", "E-1"),
        cwd=repo,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None
    proc.stdout.close()
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0 and b"Traceback" not in err, err


def _orch_argv(*args: str) -> list[str]:
    import sys

    return [sys.executable, "-m", "orch", *args]


def test_9_help_lists_choices_and_human_output_has_no_python_reprs(repo: Path) -> None:
    from typer.testing import CliRunner

    from orch.cli import app

    assert "[text|json]" in CliRunner().invoke(app, ["--help"]).output
    ci_help = CliRunner().invoke(app, ["gate", "report", "ci", "--help"]).output
    assert "[pending|success|failure|error]" in ci_help
    assert run_orch("init", cwd=repo).returncode == 0
    assert run_orch("task", "add", "x", "--key", "S-1", cwd=repo).returncode == 0
    for args in (("queue",), ("status",), ("task", "show", "S-1"), ("explain", "S-1")):
        out = run_orch(*args, cwd=repo).stdout
        assert "{'" not in out and "None" not in out, (args, out)


# -- no dead minutes -----------------------------------------------------------------


def _jobs(setup: Setup) -> list[dict[str, Any]]:
    conn = sqlite3.connect(setup.root / ".orch" / "orch.db")
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute("SELECT * FROM jobs ORDER BY id")]
    finally:
        conn.close()


def _wait(pred: Any, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.05)
    raise AssertionError("timed out")


def test_a_verdict_and_a_runner_end_start_the_next_job_without_a_tick(setup: Setup) -> None:
    setup.update_config({"work": {"start_immediately": True}})
    assert setup.orch("task", "add", "quick", "--key", "Q-1").returncode == 0  # starts the analyst
    _wait(lambda: [j["state"] for j in _jobs(setup)] == ["succeeded"])
    assert setup.orch("approve", "Q-1").returncode == 0  # -> development, starts the developer
    # The developer starts without a tick. Its end may go on to the reviewer at once when
    # CI is already green, so only the first two jobs are waited on (a poll can miss the
    # moment when exactly two exist).
    _wait(lambda: [j["state"] for j in _jobs(setup)][:2] == ["succeeded", "succeeded"])
    dev = _jobs(setup)[1]
    assert dev["agent"] == "developer"
    assert dev["started_at"] - _jobs(setup)[0]["ended_at"] < 30  # no tick ran at all


def test_immediate_starts_never_exceed_max_concurrency(setup: Setup) -> None:
    setup.update_config(
        {
            "work": {"start_immediately": True, "max_concurrency": 2},
            "agents": {"analyst": {"command": "sleep 0.8"}},
        }
    )
    # Five tasks queue quietly; the sixth's `task add` starts runners, and each runner that
    # ends starts the next ones: every start after the first is an immediate one.
    quiet = {"ORCH_WORK_START_IMMEDIATELY": "false"}
    for i in range(5):
        assert setup.orch("task", "add", f"t{i}", "--key", f"C-{i}", env=quiet).returncode == 0
    assert _jobs(setup)[0]["state"] == "queued"
    assert setup.orch("task", "add", "t5", "--key", "C-5").returncode == 0
    _wait(lambda: len(_jobs(setup)) == 6 and all(j["state"] == "succeeded" for j in _jobs(setup)))
    events = sorted(
        [(j["started_at"], 1) for j in _jobs(setup)] + [(j["ended_at"], -1) for j in _jobs(setup)]
    )
    running = peak = 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    assert peak == 2, peak  # the limit is reached and never passed
