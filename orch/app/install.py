"""Install recipes: the text that runs orch on a host, filled in for one configuration.

orch has no daemon, so something else must start it: a systemd timer or a cron line for
`orch tick`, a git `post-receive` hook for `orch event push`, a CI workflow for
`orch gate report ci`. Each function here renders one of them from a `Config` and a
few options, as text; `orch install ... --print` prints it and a person puts it in
place (orch never writes to /etc or to a crontab itself).

Every recipe names the orch executable and the config file by absolute path, so it
does not depend on the working directory or PATH of whatever runs it. Paths are
quoted for the reader of the text (the shell for cron, hooks and CI; systemd's own
rules for unit files). No recipe holds a secret: the systemd units read them from
`/etc/orch/orch.env`, the rest inherit them from their environment.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

from orch.config import Config, Repo
from orch.errors import UsageError

ENV_FILE = "/etc/orch/orch.env"
CI_WORKFLOW_PATH = ".gitea/workflows/orch.yaml"

_UNIT_PREFIX = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_USER = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,31}")
# Characters a systemd word or a shell word may hold without quoting.
_PLAIN = re.compile(r"[A-Za-z0-9_./:@+=,-]+")
# Variables git sets for a hook; orch runs git in other directories (worktrees).
_GIT_HOOK_VARS = "GIT_DIR GIT_WORK_TREE GIT_INDEX_FILE GIT_OBJECT_DIRECTORY GIT_ALTERNATE_OBJECT_DIRECTORIES"


class Where(NamedTuple):
    """What every recipe fills in: the orch command, the config file, the state directory."""

    orch: tuple[str, ...]  # argv prefix: (path,) or (python, "-m", "orch")
    config: Path
    base_dir: Path
    state_dir: Path
    orch_home: Path | None  # carried into the recipe when $ORCH_HOME chose the state dir
    not_carried: tuple[str, ...]  # other ORCH_* variables set now (names only)

    @property
    def argv(self) -> tuple[str, ...]:
        """orch with its config: what every recipe runs, followed by a command."""
        return (*self.orch, "-c", str(self.config))

    @property
    def sh(self) -> str:
        return shlex.join(self.argv)


def find_orch(
    argv0: str | None,
    *,
    executable: str,
    which: Callable[[str], str | None] = shutil.which,
) -> tuple[str, ...]:
    """The absolute command of the running orch, as an argv prefix.

    The orch script that was run, else the one beside this Python (the same venv), else
    the first `orch` on PATH, else `<python> -m orch`.
    """
    if argv0:
        p = Path(argv0)
        if p.name == "orch" and _runnable(p):
            return (str(p.resolve()),)
    # Not resolved: a venv's python is a symlink out of the venv, its bin/ is the point.
    sibling = Path(os.path.abspath(executable)).parent / "orch"
    if _runnable(sibling):
        return (str(sibling),)
    found = which("orch")
    if found:
        return (str(Path(found).resolve()),)
    return (os.path.abspath(executable), "-m", "orch")


def _runnable(p: Path) -> bool:
    return p.is_file() and os.access(p, os.X_OK)


def where(cfg: Config, *, orch: Sequence[str], environ: Mapping[str, str] | None = None) -> Where:
    """Resolve what the recipes need from the configuration and the current environment."""
    env = os.environ if environ is None else environ
    if cfg.source is None:
        raise UsageError(
            "the recipes name the config file by absolute path, and there is none: "
            "run `orch init` to write orch.toml, or pass -c PATH"
        )
    # base_dir is the file's directory, resolved the same way orch resolved it.
    config = cfg.base_dir / cfg.source.name
    w = Where(
        orch=tuple(orch),
        config=config,
        base_dir=cfg.base_dir,
        state_dir=cfg.state_dir,
        orch_home=cfg.state_dir if env.get("ORCH_HOME") else None,
        not_carried=tuple(
            sorted(k for k in env if k.startswith("ORCH_") and k not in ("ORCH_HOME", "ORCH_CONFIG"))
        ),
    )
    for text in (*w.orch, str(w.config), str(w.state_dir)):
        _plain_text(text)
    return w


def _invocation(w: Where, *args: str) -> str:
    """How to print this recipe again (the first line of its header)."""
    return shlex.join((*w.argv, "install", *args))


def _env_note(w: Where) -> list[str]:
    if not w.not_carried:
        return []
    return [
        f"# Not carried over from this shell: {', '.join(w.not_carried)}.",
        "# Set them where this recipe runs if it needs them.",
    ]


def _repo(cfg: Config, name: str | None) -> Repo:
    name = name or cfg.default_repo()
    repo = cfg.repos.get(name)
    if repo is None:
        raise UsageError(f"unknown repo {name!r} (configured: {', '.join(cfg.repos) or 'none'})")
    _plain_text(str(repo.path))
    return repo


def _plain_text(text: str) -> None:
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in text):
        raise UsageError(f"{text!r}: a path with control characters cannot go into a recipe")


# -- systemd -------------------------------------------------------------------------


def _sd_exec(argv: Sequence[str]) -> str:
    """An ExecStart= command line, quoted by systemd's rules rather than the shell's.

    systemd unquotes "..." with C escapes and expands % specifiers everywhere, and $VAR in
    the arguments only ($$ is a literal $ there, but not in the executable's name).
    """
    exe = argv[0]
    if any(ch in exe for ch in "'\"\\"):
        raise UsageError(f"{exe}: systemd refuses an executable path with quotes or backslashes")
    words = [_sd_word(exe)] + [_sd_word(a).replace("$", "$$") for a in argv[1:]]
    return " ".join(w.replace("%", "%%") for w in words)


def _sd_word(word: str) -> str:
    if _PLAIN.fullmatch(word):
        return word
    return '"' + word.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _sd_env(name: str, value: str) -> str:
    """An Environment= assignment: quoted, % escaped; $ has no meaning there."""
    text = f"{name}={value}".replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'.replace("%", "%%")


def _sd_text(text: str) -> str:
    """A path or description in a unit file: taken verbatim but for % specifiers."""
    return text.replace("%", "%%")


def systemd_units(
    cfg: Config,
    *,
    orch: Sequence[str],
    user: str | None = None,
    prefix: str = "orch",
    environ: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The three unit files, by file name: the tick service, its timer, the relay."""
    w = where(cfg, orch=orch, environ=environ)
    if not _UNIT_PREFIX.fullmatch(prefix):
        raise UsageError(f"--unit-prefix {prefix!r}: use letters, digits, '.', '_' and '-' (at most 64)")
    if user is not None and not _USER.fullmatch(user):
        raise UsageError(f"--user {user!r}: not a user name")

    def exec_start(*args: str) -> str:
        return "ExecStart=" + _sd_exec((*w.argv, *args))

    service_common = [
        f"User={user}"
        if user
        else f"# User= is not set, so this runs as root: print again with --user NAME (the owner of "
        f"{w.state_dir}).",
        f"WorkingDirectory={_sd_text(str(w.base_dir))}",
        *([f"Environment={_sd_env('ORCH_HOME', str(w.orch_home))}"] if w.orch_home else []),
        "# Secrets (integration tokens) and a longer PATH for the agents go in this file as",
        "# KEY=value lines (mode 0600), never in the unit; the leading - makes it optional.",
        f"EnvironmentFile=-{ENV_FILE}",
    ]
    where_text = _sd_text(str(w.config))
    tick = [
        "[Unit]",
        f"Description=orch tick: reap, dependencies, sweep, start queued jobs ({where_text})",
        "Wants=network-online.target",
        "After=network-online.target",
        "",
        "[Service]",
        "Type=oneshot",
        *service_common,
        exec_start("tick"),
        "# The tick starts job runners as detached processes and returns. Without this,",
        "# systemd would kill them with the rest of the unit's cgroup as soon as the tick exits.",
        "KillMode=process",
    ]
    timer = [
        "[Unit]",
        f"Description=Run orch tick every minute ({where_text})",
        "",
        "[Timer]",
        "OnCalendar=minutely",
        "# A tick missed while the machine was off runs at the next boot.",
        "Persistent=true",
        "AccuracySec=1s",
        f"# systemd does not start {prefix}-tick.service again while it still runs: no pile-up.",
        "",
        "[Install]",
        "WantedBy=timers.target",
    ]
    secrets = ", ".join((cfg.relay.gitea_secret_env, cfg.relay.plane_secret_env, cfg.relay.token_env))
    _plain_text(secrets)
    relay = [
        "# The webhook relay (`orch relay serve`), for a tracker or forge that sends webhooks:",
        f"# systemctl enable --now {prefix}-relay.service. Its secrets go in {ENV_FILE}:",
        f"# {secrets} (the variables [relay] names).",
        "[Unit]",
        f"Description=orch relay: tracker and forge webhooks into the inbox ({where_text})",
        "After=network.target",
        "",
        "[Service]",
        "Type=simple",
        *service_common,
        exec_start("relay", "serve", "--host", cfg.relay.host, "--port", str(cfg.relay.port)),
        "Restart=on-failure",
        "RestartSec=5s",
        "",
        "[Install]",
        "WantedBy=multi-user.target",
    ]
    return {
        f"{prefix}-tick.service": "\n".join(tick) + "\n",
        f"{prefix}-tick.timer": "\n".join(timer) + "\n",
        f"{prefix}-relay.service": "\n".join(relay) + "\n",
    }


def systemd(
    cfg: Config,
    *,
    orch: Sequence[str],
    user: str | None = None,
    prefix: str = "orch",
    environ: Mapping[str, str] | None = None,
) -> str:
    """The units as one text, each after a `# ---- <file name> ----` line."""
    units = systemd_units(cfg, orch=orch, user=user, prefix=prefix, environ=environ)
    w = where(cfg, orch=orch, environ=environ)
    options = ["systemd", "--print", *(["--user", user] if user else [])]
    if prefix != "orch":
        options += ["--unit-prefix", prefix]
    head = [
        f"# systemd units for {w.config}, printed by:",
        f"#   {_invocation(w, *options)}",
        "# Install them as root: pipe that command into",
        "#   awk '/^# ---- .* ----$/ {f = \"/etc/systemd/system/\" $3; next} f {print > f}'",
        f"# then: systemctl daemon-reload && systemctl enable --now {prefix}-tick.timer",
        "# As a user unit instead: the same files in ~/.config/systemd/user/ without User=,",
        f"# systemctl --user enable --now {prefix}-tick.timer, and loginctl enable-linger USER.",
        *_env_note(w),
    ]
    parts = ["\n".join(head) + "\n"]
    parts += [f"# ---- {name} ----\n{text}" for name, text in units.items()]
    return "\n".join(parts)


def split_units(text: str) -> dict[str, str]:
    """The inverse of `systemd`: file name -> content (what the awk line above does)."""
    units: dict[str, str] = {}
    name = None
    for line in text.splitlines(keepends=True):
        m = re.fullmatch(r"# ---- (\S+) ----\n?", line)
        if m:
            name = m.group(1)
            units[name] = ""
        elif name is not None:
            units[name] += line
    return units


# -- cron ----------------------------------------------------------------------------


def _cron_escape(command: str) -> str:
    # cron turns an unescaped % into a newline (the rest becomes stdin).
    return command.replace("%", "\\%")


def cron(cfg: Config, *, orch: Sequence[str], environ: Mapping[str, str] | None = None) -> str:
    """One crontab line that runs `orch tick` every minute under `flock -n`."""
    w = where(cfg, orch=orch, environ=environ)
    lock = shlex.quote(str(w.state_dir / "tick.lock"))
    log = shlex.quote(str(w.state_dir / "tick.log"))
    home = f"ORCH_HOME={shlex.quote(str(w.orch_home))} " if w.orch_home else ""
    command = f"{home}flock -n -o {lock} {w.sh} tick >> {log} 2>&1"
    lines = [
        f"# orch tick for {w.config}, printed by:",
        f"#   {_invocation(w, 'cron', '--print')}",
        "# Add it with `crontab -e` as the user that owns the state directory",
        f"# {w.state_dir} (it must exist: `orch init` creates it).",
        "# Two ticks at once are safe (each exclusive part runs under a lease); flock -n still",
        "# skips a minute whose tick finds the previous one running, so slow ticks do not pile",
        "# up and tick.log reads one tick after another. -o: job runners do not hold the lock.",
        "# cron's PATH is /usr/bin:/bin: put a PATH= line above this one if the agents need more.",
        *_env_note(w),
        "* * * * * " + _cron_escape(command),
    ]
    return "\n".join(lines) + "\n"


# -- git hook ------------------------------------------------------------------------


def git_hook(
    cfg: Config, *, orch: Sequence[str], repo: str | None = None, environ: Mapping[str, str] | None = None
) -> str:
    """A POSIX sh `post-receive` hook that tells orch about every branch a push moved."""
    w = where(cfg, orch=orch, environ=environ)
    r = _repo(cfg, repo)
    lines = [
        "#!/bin/sh",
        f"# orch post-receive hook for [repos.{r.name}] of {w.config}, printed by:",
        f"#   {_invocation(w, 'git-hook', '--print', '--repo', r.name)}",
        "# Install it, executable, as hooks/post-receive of the repository that receives the",
        f"# pushes: {r.path}/.git/hooks/post-receive, or {r.path}/hooks/post-receive if bare.",
        "# For each branch a push moved, `orch event push` advances the tasks on it. It never",
        "# fails the push: orch's errors go to the pusher's terminal, and the hook exits 0.",
        "# By hand: echo OLDSHA NEWSHA refs/heads/orch/KEY | path/to/post-receive",
        "",
        "# git points these at the receiving repository; orch runs git in its worktrees too.",
        f"unset {_GIT_HOOK_VARS}",
    ]
    if w.orch_home:
        lines += [f"ORCH_HOME={shlex.quote(str(w.orch_home))}", "export ORCH_HOME"]
    lines += [
        *_env_note(w),
        "while read -r oldrev newrev refname; do",
        '  case "$refname" in refs/heads/*) ;; *) continue ;; esac',
        '  case "$newrev" in *[!0]*) ;; *) continue ;; esac  # a deleted branch moves no task',
        f'  {w.sh} event push --repo {shlex.quote(r.name)} --ref "$refname" --sha "$newrev" ||',
        '    echo "orch: event push for $refname failed (exit $?); the push itself went through" >&2',
        "done",
        "exit 0",
    ]
    return "\n".join(lines) + "\n"


# -- CI ------------------------------------------------------------------------------


def _indent(text: str, spaces: int) -> str:
    pad = " " * spaces
    return "\n".join(pad + line if line.strip() else "" for line in text.strip("\n").splitlines())


def ci_workflow(
    cfg: Config, *, orch: Sequence[str], repo: str | None = None, environ: Mapping[str, str] | None = None
) -> str:
    """A Gitea Actions workflow: test each orch/<KEY> branch, report to orch, advance."""
    w = where(cfg, orch=orch, environ=environ)
    r = _repo(cfg, repo)
    test = r.ci or "echo 'orch install ci: put the test command of the project here' >&2\nexit 1"
    home = [f"      ORCH_HOME: {_yaml_str(str(w.orch_home))}"] if w.orch_home else []
    lines = [
        f"# {CI_WORKFLOW_PATH} for [repos.{r.name}] of {w.config}, printed by:",
        f"#   {_invocation(w, 'ci', '--print', '--repo', r.name)}",
        "# On a push to a branch orch/<KEY>, run the tests, then record the result in orch for that",
        "# commit (`orch gate report ci`) and advance task <KEY> if it is still in development.",
        "# Assumption: the job runs where orch runs, with its executable, config and database: a",
        '# self-hosted act_runner on the orch host, registered with the label "orch:host" (host',
        "# mode, no container) and running as the user that owns",
        f"# {w.state_dir}. The workflow needs no secret. (Without such a runner, let the",
        "# repository's webhooks reach `orch relay serve`: it records commit statuses too.)",
        *_env_note(w),
        "name: orch",
        "on:",
        "  push:",
        "    branches:",
        '      - "orch/**"',
        "jobs:",
        "  test:",
        "    runs-on: orch",
        "    env:",
        # Through the environment, not ${{ }} in the script: a branch name may hold $(...).
        "      BRANCH: ${{ github.ref_name }}",
        "      SHA: ${{ github.sha }}",
        *home,
        "    steps:",
        "      - uses: actions/checkout@v4",
        "      - name: Test",
        "        run: |",
        '          export ORCH_TASK_KEY="${BRANCH#orch/}" ORCH_CI_SHA="$SHA"',
        _indent(test, 10),
        "      - name: Report to orch",
        "        if: always()",
        "        env:",
        "          JOB_STATUS: ${{ job.status }}",
        "        run: |",
        '          key="${BRANCH#orch/}"',
        '          case "$JOB_STATUS" in',
        "            success) state=success ;;",
        "            failure) state=failure ;;",
        "            *) state=error ;;  # cancelled: not a verdict on the code",
        "          esac",
        f'          {w.sh} gate report ci --task "$key" --state "$state" --sha "$SHA"',
        "          # gate report ci advances the task already; this catches gates that turned green",
        "          # meanwhile. 3 (a gate is still red) and 4 (another actor is moving it) are fine.",
        "          rc=0",
        f'          {w.sh} advance "$key" --expect development || rc=$?',
        '          case "$rc" in 0|3|4) ;; *) exit "$rc" ;; esac',
    ]
    return "\n".join(lines) + "\n"


def _yaml_str(text: str) -> str:
    # A JSON string is a YAML double-quoted scalar.
    return json.dumps(text)
