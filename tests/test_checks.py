"""`orch config check` and `orch doctor` on broken setups: each finding names the key and the fix."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from conftest import Setup, run_orch

from orch.adapters.git import init_repo


@pytest.mark.parametrize(
    ("toml", "key", "fix"),
    [
        ('[repos.app]\npath = "missing"\n', "[repos.app] path", "fix the path"),
        ('[repos.app]\npath = "plain"\n', "[repos.app] path", "git init"),
        (
            '[repos.app]\npath = "repo"\ndefault_branch = "trunk"\n',
            "[repos.app] default_branch",
            "set default_branch",
        ),
        (
            '[repos.app]\npath = "repo"\n[agents.developer]\ncommand = "/no/such/agent --go"\n',
            "[agents.developer] command",
            "existing file",
        ),
        (
            '[repos.app]\npath = "repo"\n[agents.reviewer]\ncommand = "no-such-program-xyz"\n',
            "[agents.reviewer] command",
            "install no-such-program-xyz",
        ),
        ('[repos.app]\npath = "repo"\nci = "./ci.sh"\n', "[repos.app] ci", "existing file"),
        (
            '[repos.app]\npath = "repo"\n[workspace]\nbefore_run = "\'unbalanced"\n',
            "[workspace] before_run",
            "quoting",
        ),
    ],
)
def test_config_check_names_the_key_and_the_fix(tmp_path: Path, toml: str, key: str, fix: str) -> None:
    init_repo(tmp_path / "repo")
    (tmp_path / "plain").mkdir()
    (tmp_path / "orch.toml").write_text(toml)
    out = run_orch("config", "check", "--json", cwd=tmp_path)
    assert out.returncode == 2, out.stdout
    findings = json.loads(out.stdout)["findings"]
    errors = [f for f in findings if f["level"] == "error"]
    assert any(f["key"] == key and fix in f["fix"] for f in errors), errors


def test_a_good_config_checks_clean(setup: Setup) -> None:
    out = setup.orch("config", "check", "--json")
    assert out.returncode == 0, out.stdout
    assert [f for f in json.loads(out.stdout)["findings"] if f["level"] == "error"] == []


def test_unwritable_state_dir_is_reported(setup: Setup, tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root can write anywhere")
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    out = setup.orch("config", "check", env={"ORCH_HOME": str(locked / "state")})
    assert out.returncode == 2 and "not writable" in out.stderr


def test_doctor_reports_integrity_and_queue_problems(setup: Setup) -> None:
    setup.orch("task", "add", "x")
    out = setup.orch("doctor", "--json")
    assert out.returncode == 0, out.stdout
    report = json.loads(out.stdout)
    assert report["ok"] is True
    assert any("no tick has run yet" in f["problem"] for f in report["findings"])
    setup.orch("tick")
    report = json.loads(setup.orch("doctor", "--json").stdout)
    assert not any("tick" in f["problem"] for f in report["findings"])
