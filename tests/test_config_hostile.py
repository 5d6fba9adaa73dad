"""Configuration that must be refused at load, naming the key (issue 10 item 9, issue 14
items 5 and 7, issue 11's config findings), and what must be accepted.

Most cases load in-process (fast); the user's side (exit code 2, the message, `config
check --json` on stdout) is checked with `orch` subprocesses in a scratch directory.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import run_orch

from orch import config as config_mod
from orch.cli.config import redact
from orch.config import render_template
from orch.errors import ConfigError


def _write(path: Path, text: str | bytes) -> Path:
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


@pytest.mark.parametrize(
    "text, names",
    [
        ("[pipeline]\nmax_retrys = 5\n", ["[pipeline] max_retrys: unknown key", "'max_retries'"]),
        ("[agents.analyst]\ncommand = 'x'\ntimeout_s = nan\n", ["[agents.analyst] timeout_s", "nan"]),
        ("[work]\nbackoff_base_s = nan\n", ["[work] backoff_base_s", "finite"]),
        ("[work]\nbackoff_max_s = inf\n", ["[work] backoff_max_s", "inf"]),
        ("[reaper]\ngrace_s = nan\n", ["[reaper] grace_s"]),
        ("[reconcile]\ngrace_s = -inf\n", ["[reconcile] grace_s"]),
        ("[gates.g]\ntype = 'command'\ncommand = 'true'\ntimeout_s = nan\n", ["[gates.g] timeout_s"]),
        ("[relay]\nport = 70000\n", ["[relay] port", "from 0 to 65535", "70000"]),
        ("[relay]\nhost = 'no such host!'\n", ["[relay] host", "not a host name"]),
        ("[telegram]\nchat_id = [1, 2]\n", ["[telegram] chat_id", "one chat id"]),
        ("[reconcile.stage_grace_s]\nreview = 'x'\n", ["[reconcile.stage_grace_s] review: expected"]),
        ("[reconcile.stage_grace_s]\nreview = nan\n", ["[reconcile.stage_grace_s] review"]),
        ("[reconcile.stage_grace_s]\nrevew = 5\n", ["[reconcile.stage_grace_s] revew: not a stage"]),
        ("[plane]\nper_page = 500\n", ["[plane] per_page", "from 1 to 100", "500"]),
        # Names reach terminals, logs, lease names and command lines: printable, one line.
        ('[agents."dev\\u0000x"]\ncommand = "true"\n', ["[agents]: name 'dev\\x00x'", "printable"]),
        ('[agents."dev\\nx"]\ncommand = "true"\n', ["[agents]: name 'dev\\nx'"]),
        ('[gates."\\u001b[2J"]\ntype = "command"\ncommand = "true"\n', ["[gates]: name '\\x1b[2J'"]),
        ('[effects."-rf"]\ncommand = "true"\n', ["[effects]: name '-rf'", "not led by '-'"]),
        ('[repos.""]\npath = "."\n', ["[repos]: name ''"]),
        ("[pipeline.stages." + "s" * 65 + "]\n", ["[pipeline.stages]: name 'sss", "1 to 64"]),
        (
            "[pipeline]\ninitial = 'a'\n[pipeline.stages.a]\n[pipeline.stages.b]\n"
            "[[pipeline.transitions]]\nfrom = 'a'\nto = 'b'\n"
            "[[pipeline.transitions]]\nfrom = 'b'\nto = 'a'\n",
            ["[pipeline.transitions[0]] gates", "a cycle with no gates (a -> b -> a)"],
        ),
        (
            "[[pipeline.transitions]]\nfrom = 'analysis'\nto = 'development'\ngates = ['human_approved']\n"
            "[[pipeline.transitions]]\nfrom = 'done'\nto = 'analysis'\ngates = ['human_approved']\n",
            ["[pipeline.transitions[1]] from", "'done' is a terminal stage"],
        ),
    ],
)
def test_bad_config_is_refused_at_load_naming_the_key(tmp_path: Path, text: str, names: list[str]) -> None:
    path = _write(tmp_path / "orch.toml", text)
    with pytest.raises(ConfigError) as e:
        config_mod.load(path, environ={})
    assert e.value.exit_code == 2
    assert str(path) in str(e.value)
    for n in names:
        assert n in str(e.value)
    assert e.value.problems, "config check lists these"


def test_a_gated_cycle_and_a_chain_without_gates_are_fine(tmp_path: Path) -> None:
    # review <-> development is a cycle, but each way has a gate.
    default = config_mod.load(cwd=tmp_path, environ={})
    moves = {(t.source, t.target) for t in default.pipeline.transitions}
    assert {("review", "development"), ("development", "review")} <= moves
    text = "[pipeline]\ninitial = 'a'\n[pipeline.stages.a]\n[pipeline.stages.b]\n"
    text += "[[pipeline.transitions]]\nfrom = 'a'\nto = 'b'\n"
    text += "[[pipeline.transitions]]\nfrom = 'b'\nto = 'done'\n"
    chain = config_mod.load(_write(tmp_path / "orch.toml", text), environ={})
    assert [(t.source, t.target, t.gates) for t in chain.pipeline.transitions] == [
        ("a", "b", ()),
        ("b", "done", ()),
    ]


def test_env_variables_that_match_no_key_are_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as e:
        config_mod.load(cwd=tmp_path, environ={"ORCH_TRANSITON_LEASE_ENABLED": "false"})
    assert "$ORCH_TRANSITON_LEASE_ENABLED: matches no configuration key" in str(e.value)
    assert "did you mean $ORCH_TRANSITION_LEASE_ENABLED?" in str(e.value)
    with pytest.raises(ConfigError, match="ORCH_DEPS_FINISHED_STAGES: arrays and tables"):
        config_mod.load(cwd=tmp_path, environ={"ORCH_DEPS_FINISHED_STAGES": "done"})
    # What orch reads or sets itself, and the variables the config names as secrets, are fine.
    ok = {
        "ORCH_HOME": str(tmp_path / "state"),
        "ORCH_TASK_KEY": "X-1",
        "ORCH_PROMPT_FILE": "/tmp/p",
        "ORCH_RELAY_TOKEN": "t0ken",
        "ORCH_GITEA_WEBHOOK_SECRET": "s",
        "ORCH_LOG_LEVEL": "info",
        "ORCH_TRANSITION_LEASE_ENABLED": "false",
        "ORCH_TEST_SEED": "7",
    }
    assert config_mod.load(cwd=tmp_path, environ=ok).transition_lease.enabled is False
    named = _write(tmp_path / "orch.toml", "[gitea]\ntoken_env = 'ORCH_MY_GITEA'\n")
    config_mod.load(named, environ={"ORCH_MY_GITEA": "x"})


def test_a_fractional_number_from_the_environment_is_taken_like_the_file_value(tmp_path: Path) -> None:
    cfg = config_mod.load(cwd=tmp_path, environ={"ORCH_PLANE_STATES_TTL_S": "0.5"})
    assert cfg.plane.states_ttl_s == 0.5
    with pytest.raises(ConfigError) as e:
        config_mod.load(cwd=tmp_path, environ={"ORCH_PLANE_PER_PAGE": "0.5"})
    assert "[plane] per_page: expected a whole number" in str(e.value)
    assert "(from $ORCH_PLANE_PER_PAGE)" in str(e.value)
    with pytest.raises(ConfigError, match=r"ORCH_WORK_BACKOFF_BASE_S"):
        config_mod.load(cwd=tmp_path, environ={"ORCH_WORK_BACKOFF_BASE_S": "nan"})


def test_naming_one_stage_merges_into_the_default_stages(tmp_path: Path) -> None:
    path = _write(tmp_path / "orch.toml", '[pipeline.stages.review]\nagent = "reviewer"\nhuman = true\n')
    cfg = config_mod.load(path, environ={})
    assert list(cfg.pipeline.stages) == list(config_mod.DEFAULTS["pipeline"]["stages"])
    assert cfg.pipeline.stages["review"].human and cfg.pipeline.stages["analysis"].agent == "analyst"


def test_a_dollar_that_starts_no_name_is_literal_in_a_prompt(tmp_path: Path) -> None:
    path = _write(tmp_path / "orch.toml", "[agents.analyst]\ncommand = 'true'\nprompt = 'This costs $5'\n")
    cfg = config_mod.load(path, environ={})
    assert render_template(cfg.agents["analyst"].prompt, {}) == "This costs $5"
    assert render_template("$$x ${task_key} $task_key costs $", {"task_key": "K-1"}) == "$x K-1 K-1 costs $"
    with pytest.raises(ConfigError, match=r"prompt: unknown variable \$cost"):
        config_mod.load(_write(path, "[agents.analyst]\ncommand = 'true'\nprompt = 'a $cost'\n"), environ={})


def test_config_show_redacts_credentials_in_urls_whatever_the_case() -> None:
    shown = redact(
        {
            "telegram": {
                "base_url": "https://api.telegram.org/BOT123456:AAbbCCddEEffGGhhIIjjKKllMMnn/",
                "token_env": "TELEGRAM_BOT_TOKEN",
            },
            "plane": {"base_url": "https://user:password@plane.example/api?Token=abc", "API_KEY": "k"},
            "gitea": {"TOKEN_ENV": "GITEA_TOKEN", "Password": "p", "base_url": "https://gitea.example"},
        }
    )
    text = json.dumps(shown)
    for secret in ("password@", "AAbbCCdd", "abc", '"k"', '"p"'):
        assert secret not in text, secret
    assert shown["plane"]["base_url"].startswith("https://user:***@plane.example")  # type: ignore[index]
    assert shown["gitea"] == {
        "TOKEN_ENV": "GITEA_TOKEN",
        "Password": "***",
        "base_url": "https://gitea.example",
    }  # type: ignore[index]


# -- from the user's side ------------------------------------------------------------------------


def test_user_side_typo_in_one_stage_and_every_finding_listed(tmp_path: Path) -> None:
    (tmp_path / "orch.toml").write_text(
        '[pipeline.stages.review]\nagent = "reviewr"\n[work]\nbackoff_base_s = nan\n[plane]\nper_page = 500\n'
    )
    out = run_orch("config", "check", cwd=tmp_path)
    assert out.returncode == 2, out
    assert "Traceback" not in out.stderr
    assert "is not in [pipeline.stages]" not in out.stderr  # the default stages are still there
    for key in (
        "[pipeline.stages.review] agent",
        "'reviewr'",
        "did you mean 'reviewer'",
        "[work] backoff_base_s",
        "[plane] per_page",
    ):
        assert key in out.stderr
    js = run_orch("config", "check", "--json", cwd=tmp_path)
    assert js.returncode == 2
    report = json.loads(js.stdout)
    assert report["ok"] is False
    keys = [f["key"] for f in report["findings"]]
    assert keys == ["[pipeline.stages.review] agent", "[work] backoff_base_s", "[plane] per_page"]
    # Every other command refuses it too, with every problem named once.
    listed = run_orch("task", "list", cwd=tmp_path)
    assert listed.returncode == 2 and listed.stderr.count("orch.toml: [") == 3, listed.stderr


def test_user_side_non_utf8_file_and_misspelt_variable_exit_2(tmp_path: Path) -> None:
    (tmp_path / "orch.toml").write_bytes(b"[tracker]\nkey_prefix = '\xff\xfe'\n")
    out = run_orch("task", "list", cwd=tmp_path)
    assert out.returncode == 2 and "not UTF-8" in out.stderr and "Traceback" not in out.stderr
    js = run_orch("config", "check", "--json", cwd=tmp_path)
    assert js.returncode == 2 and "not UTF-8" in json.loads(js.stdout)["findings"][0]["problem"]
    (tmp_path / "orch.toml").write_text("")
    out = run_orch("config", "show", cwd=tmp_path, env={"ORCH_TRANSITON_LEASE_ENABLED": "false"})
    assert out.returncode == 2 and "$ORCH_TRANSITON_LEASE_ENABLED" in out.stderr
    out = run_orch("config", "show", "--json", cwd=tmp_path, env={"ORCH_PLANE_STATES_TTL_S": "0.5"})
    assert out.returncode == 0 and json.loads(out.stdout)["config"]["plane"]["states_ttl_s"] == 0.5


def test_user_side_shell_syntax_commands_pass_config_check(tmp_path: Path) -> None:
    import subprocess

    subprocess.run(["git", "init", "-q", "-b", "main", str(tmp_path)], check=True)
    subprocess.run(
        ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q",
         "--allow-empty", "-m", "init"],
        check=True,
    )  # fmt: skip
    (tmp_path / "orch.toml").write_text(
        "[agents.analyst]\n"
        'command = \'case "$ORCH_STAGE" in analysis) cat "$ORCH_PROMPT_FILE";; *) exit 1;; esac\'\n'
        "[agents.developer]\ncommand = 'if true; then echo dev; fi'\n"
        "[agents.reviewer]\ncommand = '(cd . && no-such-program-xyz)'\n"
        "[effects.deploy]\ntype = 'command'\ncommand = 'true'\nprobe = 'true'\n"
    )
    out = run_orch("config", "check", "--json", cwd=tmp_path)
    report = json.loads(out.stdout)
    assert out.returncode == 0, report
    assert not [f for f in report["findings"] if f["level"] == "error"]


def test_user_side_relay_with_an_unresolvable_host_exits_2(tmp_path: Path) -> None:
    (tmp_path / "orch.toml").write_text("[relay]\nhost = 'no-such-host.invalid'\nport = 0\n")
    out = run_orch("relay", "serve", cwd=tmp_path, timeout=30)
    assert out.returncode == 2, out
    assert "[relay] host" in out.stderr and "no-such-host.invalid" in out.stderr
    assert "Traceback" not in out.stderr
    (tmp_path / "orch.toml").write_text("[relay]\nport = 70000\n")
    out = run_orch("relay", "serve", cwd=tmp_path, timeout=30)
    assert out.returncode == 2 and "[relay] port" in out.stderr and "Traceback" not in out.stderr
