"""Install recipes, printed by the real CLI and then used for real.

systemd units go through `systemd-analyze verify`; the crontab line runs under /bin/sh
with flock; the git hook sits in a real bare repository and a real `git push` reaches
orch through it; the CI workflow parses and its report script records a CI status.

Run as a script to rewrite the examples in scripts/install/:
    .venv/bin/python tests/test_install.py
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import Setup, drive_to, run_orch

from orch import config as config_mod
from orch.app import install
from orch.errors import UsageError

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "scripts" / "install"
RECIPES = ["systemd", "cron", "git-hook", "ci"]
# A path that needs quoting everywhere: space, quote, %, $ and a backslash-free glob.
AWKWARD = "it's 100% $HOME [x]"


def orch_cmd() -> tuple[str, ...]:
    """What the CLI should name: the orch of this very venv (tests run `python -m orch`)."""
    return install.find_orch(None, executable=sys.executable)


def printed(setup: Setup, recipe: str, *args: str, env: dict[str, str] | None = None) -> str:
    out = setup.orch("install", recipe, "--print", *args, env=env)
    assert out.returncode == 0, out.stderr
    return out.stdout


def need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.skip(f"{tool} is not installed here")
    return path


def plain_env(**extra: str) -> dict[str, str]:
    """No ORCH_*, and a PATH without this venv: whatever runs the recipe must not need it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORCH_")}
    env["PATH"] = "/usr/local/bin:/usr/bin:/bin"
    env.update(extra)
    return env


# -- every recipe --------------------------------------------------------------------


@pytest.mark.parametrize("recipe", RECIPES)
def test_every_recipe_names_the_config_and_this_orch_by_absolute_path(setup: Setup, recipe: str) -> None:
    text = printed(setup, recipe)
    config = setup.config_path.parent.resolve() / "orch.toml"
    exe = orch_cmd()
    assert Path(exe[0]).is_absolute()
    if (Path(sys.executable).parent / "orch").exists():  # a venv with its console script
        assert exe == (str(Path(sys.executable).parent / "orch"),)
    assert f"{shlex.join(exe)} -c {shlex.quote(str(config))}" in text


@pytest.mark.parametrize("recipe", RECIPES)
def test_recipes_hold_no_secret_and_carry_orch_home(setup: Setup, recipe: str, tmp_path: Path) -> None:
    home = tmp_path / "state home"
    env = {"ORCH_HOME": str(home), "ORCH_GITEA_WEBHOOK_SECRET": "s3cret-value", "GITEA_TOKEN": "s3cret"}
    text = printed(setup, recipe, env=env)
    assert "s3cret" not in text
    assert "ORCH_GITEA_WEBHOOK_SECRET" in text  # its name (not carried over), never its value
    assert str(home) in text


def test_print_is_required_and_errors_are_usage_errors(setup: Setup, tmp_path: Path) -> None:
    out = setup.orch("install", "cron")
    assert out.returncode == 2 and "--print" in out.stderr
    out = setup.orch("install", "git-hook", "--print", "--repo", "nope")
    assert out.returncode == 2 and "unknown repo 'nope'" in out.stderr
    out = setup.orch("install", "systemd", "--print", "--unit-prefix", "../etc")
    assert out.returncode == 2 and "--unit-prefix" in out.stderr
    out = run_orch("install", "cron", "--print", cwd=tmp_path)  # no orch.toml: nothing to name
    assert out.returncode == 2 and "orch init" in out.stderr


def test_find_orch_prefers_the_running_script_then_the_venv_then_path(tmp_path: Path) -> None:
    venv = tmp_path / "venv" / "bin"
    venv.mkdir(parents=True)
    python = venv / "python"
    python.touch()
    script = tmp_path / "elsewhere" / "orch"
    script.parent.mkdir()
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    nowhere = lambda name: None  # noqa: E731
    assert install.find_orch(str(script), executable=str(python), which=nowhere) == (str(script),)
    main = "/x/orch/__main__.py"  # `python -m orch`
    assert install.find_orch(main, executable=str(python), which=lambda n: str(script)) == (str(script),)
    assert install.find_orch(main, executable=str(python), which=nowhere) == (str(python), "-m", "orch")
    (venv / "orch").write_text("#!/bin/sh\n")
    (venv / "orch").chmod(0o755)
    found = install.find_orch(main, executable=str(python), which=lambda n: str(script))
    assert found == (str(venv / "orch"),)


# -- systemd -------------------------------------------------------------------------


def verify(units: dict[str, str], where: Path) -> None:
    tool = need("systemd-analyze")
    where.mkdir(parents=True, exist_ok=True)
    for name, text in units.items():
        (where / name).write_text(text)
    out = subprocess.run(
        [tool, "verify", *(str(where / n) for n in units)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert "Unknown" not in out.stderr and "ignoring" not in out.stderr, out.stderr


def test_systemd_units_split_as_documented_and_pass_systemd_analyze_verify(
    setup: Setup, tmp_path: Path
) -> None:
    user = os.environ.get("USER") or "root"
    text = printed(setup, "systemd", "--user", user)
    units = install.split_units(text)
    assert list(units) == ["orch-tick.service", "orch-tick.timer", "orch-relay.service"]
    tick, timer, relay = units.values()
    for needle in ("Type=oneshot", "KillMode=process", f"User={user}", "EnvironmentFile=-/etc/orch/orch.env"):
        assert needle in tick
    assert f"WorkingDirectory={setup.config_path.parent.resolve()}" in tick
    assert re.search(r"^ExecStart=\S+ -c \S+ tick$", tick, re.M)
    for needle in ("OnCalendar=minutely", "Persistent=true", "AccuracySec=1s", "WantedBy=timers.target"):
        assert needle in timer
    assert "relay serve --host 127.0.0.1 --port 8787" in relay and "Restart=on-failure" in relay
    # The awk line of the header splits the output into the same files.
    awk = re.search(r"^#\s+(awk '.*')$", text, re.M)
    assert awk is not None
    target = tmp_path / "system"
    target.mkdir()
    program = shlex.split(awk.group(1))[1].replace("/etc/systemd/system/", f"{target}/")
    subprocess.run(["awk", program], input=text, text=True, check=True)
    assert {p.name: p.read_text() for p in target.iterdir()} == units
    verify(units, tmp_path / "verify")


def test_systemd_quotes_awkward_paths_so_systemd_finds_orch(tmp_path: Path) -> None:
    """ExecStart must name an existing file: verify fails on a path split or mangled by %/$."""
    base = tmp_path / AWKWARD
    base.mkdir()
    # systemd takes no quote or backslash in the executable's own path; anything else goes.
    exe = tmp_path / "bin 100% $HOME [x]" / "orch"
    exe.parent.mkdir()
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    (base / "orch.toml").write_text("")
    env = {"ORCH_HOME": str(base / "state")}
    cfg = config_mod.load(base / "orch.toml", environ=env)
    units = install.systemd_units(cfg, orch=(str(exe),), prefix="my-orch", environ=env)
    tick = units["my-orch-tick.service"]
    exe_word = f'"{tmp_path}/bin 100%% $HOME [x]/orch"'  # no $$ in the executable's name
    config_word = f'"{tmp_path}/it\'s 100%% $$HOME [x]/orch.toml"'
    assert f"ExecStart={exe_word} -c {config_word} tick" in tick
    assert f'Environment="ORCH_HOME={tmp_path}/it\'s 100%% $HOME [x]/state"' in tick
    verify(units, tmp_path / "verify")
    with pytest.raises(UsageError, match="quotes or backslashes"):
        install.systemd_units(cfg, orch=(str(base / "orch"),), environ=env)


# -- cron ----------------------------------------------------------------------------

CRON_FIELD = re.compile(r"[0-9*,/-]+")


def cron_line(text: str) -> tuple[list[str], str]:
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    assert len(lines) == 1, lines
    fields = lines[0].split(None, 5)
    assert len(fields) == 6
    return fields[:5], fields[5]


def test_cron_line_has_five_time_fields_and_runs_tick_under_flock(setup: Setup) -> None:
    need("flock")
    import shutil

    from orch.app.wiring import open_runtime

    shutil.rmtree(setup.config().state_dir)  # as before `orch init`
    out = setup.orch("install", "cron", "--print")
    assert out.returncode == 0 and "does not exist yet; `orch init` creates it" in out.stderr
    assert setup.orch("task", "list").returncode == 1  # a reading command creates nothing
    assert not setup.config().state_dir.exists()
    open_runtime(setup.config()).close()  # what `orch init` does: the state directory and database
    fields, command = cron_line(printed(setup, "cron"))
    assert fields == ["*"] * 5 and all(CRON_FIELD.fullmatch(f) for f in fields)
    assert command.startswith("flock -n ")
    state = setup.config().state_dir
    lock, log = state / "tick.lock", state / "tick.log"
    assert shlex.quote(str(lock)) in command and command.endswith(f">> {shlex.quote(str(log))} 2>&1")

    # What cron does with the line: \% -> %, then /bin/sh -c, with cron's bare PATH.
    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["/bin/sh", "-c", command.replace("\\%", "%")],
            capture_output=True,
            text=True,
            env=plain_env(PATH="/usr/bin:/bin"),
            cwd="/",
            timeout=60,
        )

    out = run()
    assert out.returncode == 0, out.stderr
    first = log.read_text()
    assert first.strip(), "tick wrote nothing to tick.log"
    # A tick still running holds the lock: the next minute's line gives up at once.
    with open(lock) as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        out = run()
    assert out.returncode == 1
    assert log.read_text() == first


def test_cron_escapes_percent_and_quotes_awkward_paths(tmp_path: Path) -> None:
    base = tmp_path / AWKWARD
    base.mkdir()
    (base / "orch.toml").write_text("")
    cfg = config_mod.load(base / "orch.toml", environ={})
    _, command = cron_line(install.cron(cfg, orch=("/opt/orch 1/orch",), environ={}))
    assert "%" not in command.replace("\\%", "")
    words = shlex.split(command.replace("\\%", "%"))
    assert words[:4] == ["flock", "-n", "-o", str(base / ".orch" / "tick.lock")]
    assert words[4:8] == ["/opt/orch 1/orch", "-c", str(base / "orch.toml"), "tick"]


# -- git hook ------------------------------------------------------------------------


def git(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {
        **plain_env(),
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@invalid",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@invalid",
    }
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, env=env, timeout=60)


class HookSetup:
    """A bare repository orch manages, the printed hook in it, a clone to push from."""

    def __init__(self, root: Path):
        self.root = root
        self.bare = root / "app.git"
        self.clone = root / "clone"
        root.mkdir(parents=True)
        assert git("init", "-q", "--bare", "-b", "main", str(self.bare), cwd=root).returncode == 0
        self.config_path = root / "orch.toml"
        # A pipeline whose first move needs only a pushed branch: the push alone moves the task.
        self.config_path.write_text(
            """
[tracker]
key_prefix = "HOOK"
[deps]
finished_stages = ["done"]
[repos.app]
path = "app.git"
default_branch = "main"
[pipeline]
initial = "waiting"
[pipeline.stages.waiting]
[pipeline.stages.pushed]
[pipeline.stages.done]
terminal = true
[[pipeline.transitions]]
from = "waiting"
to = "pushed"
gates = ["branch_pushed"]
"""
        )
        from orch import config as config_mod
        from orch.app.wiring import open_runtime

        open_runtime(config_mod.load(self.config_path)).close()  # as `orch init` does
        out = self.orch("install", "git-hook", "--print")
        assert out.returncode == 0, out.stderr
        self.hook_text = out.stdout
        hook = self.bare / "hooks" / "post-receive"
        hook.write_text(self.hook_text)
        hook.chmod(0o755)
        assert git("clone", "-q", str(self.bare), str(self.clone), cwd=root).returncode == 0
        self.commit("README.md", "hello\n")
        self.push("main")

    def orch(self, *args: str) -> subprocess.CompletedProcess[str]:
        return run_orch("-c", str(self.config_path), *args, cwd=self.root)

    def commit(self, name: str, text: str) -> None:
        (self.clone / name).write_text(text)
        assert git("add", name, cwd=self.clone).returncode == 0
        assert git("commit", "-q", "-m", f"add {name}", cwd=self.clone).returncode == 0

    def push(self, *refspecs: str) -> subprocess.CompletedProcess[str]:
        out = git("push", "origin", *refspecs, cwd=self.clone)
        assert out.returncode == 0, out.stderr
        return out

    def stage(self, key: str) -> str:
        out = self.orch("task", "show", key, "--json")
        assert out.returncode == 0, out.stderr
        data = json.loads(out.stdout)
        return str(data.get("stage") or data["task"]["stage"])


def test_git_hook_in_a_bare_repository_moves_the_task_on_push(tmp_path: Path) -> None:
    need("git")
    h = HookSetup(tmp_path / AWKWARD)
    assert shlex.join(orch_cmd()) in h.hook_text and "event push --repo app" in h.hook_text
    assert h.orch("task", "add", "Push me", "--key", "HOOK-1").returncode == 0
    assert h.stage("HOOK-1") == "waiting"

    assert git("checkout", "-q", "-b", "orch/HOOK-1", cwd=h.clone).returncode == 0
    h.commit("feature.txt", "done\n")
    head = git("rev-parse", "HEAD", cwd=h.clone).stdout.strip()
    out = h.push("orch/HOOK-1")  # PATH has no orch: the hook must name it by absolute path

    assert re.search(r"^remote: HOOK-1: .*waiting -> pushed", out.stderr, re.M), out.stderr
    assert h.stage("HOOK-1") == "pushed"
    history = json.loads(h.orch("history", "HOOK-1", "--json").stdout)
    moves = [(r["from"], r["to"], r["actor"]) for r in history if r["event"] == "stage_changed"]
    assert moves == [("waiting", "pushed", "git-hook")]
    assert git("rev-parse", "orch/HOOK-1", cwd=h.bare).stdout.strip() == head


def test_git_hook_never_fails_the_push(tmp_path: Path) -> None:
    need("git")
    h = HookSetup(tmp_path / "repo")
    h.config_path.rename(h.root / "moved.toml")  # orch now fails with a usage error
    assert git("checkout", "-q", "-b", "orch/HOOK-2", cwd=h.clone).returncode == 0
    h.commit("x.txt", "x\n")
    out = h.push("orch/HOOK-2")
    assert "remote: orch:" in out.stderr and "no such config file" in out.stderr
    assert "event push for refs/heads/orch/HOOK-2 failed (exit 2); the push itself went through" in out.stderr
    # A deleted branch and a tag call nothing at all.
    assert git("tag", "v1", cwd=h.clone).returncode == 0
    out = h.push(":orch/HOOK-2", "v1")
    assert "remote:" not in out.stderr, out.stderr


# -- CI ------------------------------------------------------------------------------


def parse_yaml(text: str) -> Any | None:
    """Parse with PyYAML here or in a system python3 that has it; None if neither does."""
    try:
        import yaml  # type: ignore[import-untyped]
    except ImportError:
        pass
    else:
        return yaml.safe_load(text)
    for python in ("python3", "python"):
        exe = shutil.which(python)
        if not exe or Path(exe).resolve() == Path(sys.executable).resolve():
            continue
        out = subprocess.run(
            [exe, "-c", "import json, sys, yaml; print(json.dumps(yaml.safe_load(sys.stdin)))"],
            input=text,
            capture_output=True,
            text=True,
            timeout=60,
        )
        if out.returncode == 0:
            return json.loads(out.stdout)
    return None


def report_script(text: str) -> str:
    """The `run: |` block of the last step, as the runner hands it to bash."""
    block = text.rsplit("run: |\n", 1)[1]
    lines = []
    for line in block.splitlines():
        if line.strip() and not line.startswith(" " * 10):
            break
        lines.append(line[10:])
    return "\n".join(lines) + "\n"


def test_ci_workflow_parses_and_reports_on_orch_branches(setup: Setup) -> None:
    text = printed(setup, "ci")
    assert text.count("run: |") == 2 and "if: always()" in text
    doc = parse_yaml(text)
    if doc is None:  # no YAML parser anywhere: the structure by text
        for needle in ('on:\n  push:\n    branches:\n      - "orch/**"\n', "jobs:\n  test:\n"):
            assert needle in text
        return
    on = doc.get("on") or doc.get(True) or doc.get("true")  # YAML 1.1 reads a bare `on` as true
    assert on == {"push": {"branches": ["orch/**"]}}
    job = doc["jobs"]["test"]
    assert job["env"] == {"BRANCH": "${{ github.ref_name }}", "SHA": "${{ github.sha }}"}
    test, report = job["steps"][1], job["steps"][2]
    assert "ls features/*.txt" in test["run"]  # [repos.app] ci of the demo
    assert report["if"] == "always()" and report["env"] == {"JOB_STATUS": "${{ job.status }}"}
    assert report["run"] == report_script(text)
    assert 'gate report ci --task "$key" --state "$state" --sha "$SHA"' in report["run"]
    assert 'advance "$key" --expect development' in report["run"]


@pytest.mark.parametrize(("job_status", "state"), [("success", "success"), ("failure", "failure")])
def test_ci_report_step_records_the_result_and_tolerates_a_red_gate(
    setup: Setup, job_status: str, state: str
) -> None:
    need("bash")
    script = report_script(printed(setup, "ci"))
    rt = setup.runtime()
    try:
        from orch.engine import tasks

        tasks.add(rt, "Report me", key="CI-1")
        drive_to(rt, "CI-1", "development")  # the developer has not run: agent_ok stays red (exit 3)
        sha = setup.git("rev-parse", "main").strip()
        out = subprocess.run(
            ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", script],
            capture_output=True,
            text=True,
            env=plain_env(BRANCH="orch/CI-1", SHA=sha, JOB_STATUS=job_status),
            cwd=setup.root,
            timeout=60,
        )
        assert out.returncode == 0, out.stdout + out.stderr
        assert f"CI-1: ci {state} at {sha[:10]}" in out.stdout
        assert [(c, s) for c, s, _ in rt.store.commit_statuses("app", sha)] == [("ci", state)]
        assert rt.task("CI-1").stage == "development"
    finally:
        rt.close()


def test_ci_without_a_ci_command_fails_loudly_rather_than_green(tmp_path: Path) -> None:
    (tmp_path / "orch.toml").write_text('[repos.app]\npath = "/srv/app"\n')
    cfg = config_mod.load(tmp_path / "orch.toml", environ={})
    text = install.ci_workflow(cfg, orch=("/usr/bin/orch",), environ={})
    assert "put the test command of the project here' >&2\n          exit 1\n" in text


# -- the examples in scripts/install -------------------------------------------------


def examples() -> dict[str, str]:
    """The recipes for a typical host: orch in /srv/orch/.venv, its config in /srv/orch."""
    cfg = config_mod.build(
        {"repos": {"app": {"path": "/srv/git/app.git", "ci": "make test"}}},
        source=Path("/srv/orch/orch.toml"),
        environ={},
    )
    orch = ("/srv/orch/.venv/bin/orch",)
    out = dict(install.systemd_units(cfg, orch=orch, user="orch", environ={}))
    out["crontab"] = install.cron(cfg, orch=orch, environ={})
    out["post-receive"] = install.git_hook(cfg, orch=orch, environ={})
    out["orch.yaml"] = install.ci_workflow(cfg, orch=orch, environ={})
    return out


@pytest.mark.skipif(Path("/srv/orch").resolve() != Path("/srv/orch"), reason="/srv is a symlink here")
def test_examples_in_scripts_install_are_current() -> None:
    for name, text in examples().items():
        path = EXAMPLES / name
        assert path.exists() and path.read_text() == text, (
            f"{path} is stale: run .venv/bin/python tests/test_install.py"
        )


if __name__ == "__main__":
    for name, text in examples().items():
        (EXAMPLES / name).write_text(text)
        if name == "post-receive":
            (EXAMPLES / name).chmod(0o755)
        print(f"wrote {EXAMPLES / name}")
