"""`orch config check` and `orch doctor`: precise findings, each with its key and its fix.

A finding is {level, key, problem, fix}; `error` makes the command exit 2 (config) or
1 (doctor). Secrets are never printed: a check says which variable is missing, not
what it holds.
"""

from __future__ import annotations

import os
import shlex
import shutil
import sqlite3
from pathlib import Path
from typing import Any

from orch.adapters.git import git
from orch.app.store_checks import shared_store_findings
from orch.config import Config

# A command that opens with one of these is shell syntax (case ... esac, if ..., a
# subshell): its first word is no program to look up, so it is not checked.
_KEYWORDS = {
    "case",
    "if",
    "for",
    "while",
    "until",
    "select",
    "function",
    "time",
    "!",
    "{",
    "(",
    "((",
    "[[",
}
# Shell words that are not programs on PATH.
_BUILTINS = {
    "exit",
    "echo",
    "cd",
    "[",
    "test",
    "true",
    "false",
    "printf",
    "export",
    "set",
    ":",
    ".",
    "exec",
    "eval",
    "source",
    "trap",
    "umask",
    "ulimit",
    "unset",
    "wait",
    "read",
    "shift",
    "command",
}


def _finding(level: str, key: str, problem: str, fix: str) -> dict[str, str]:
    return {"level": level, "key": key, "problem": problem, "fix": fix}


def _program(command: str) -> str | None:
    try:
        words = shlex.split(command)
    except ValueError:
        return None
    words = [w for w in words if "=" not in w.split("/")[0] or w.startswith(("/", "."))]
    return words[0] if words else None


def _check_command(cfg: Config, key: str, command: str, cwd: Path) -> list[dict[str, str]]:
    prog = _program(command)
    if prog is None:
        return [_finding("error", key, f"cannot parse the command {command!r}", "fix its shell quoting")]
    if prog in _KEYWORDS or prog.startswith(("(", "{")) or prog in _BUILTINS or prog.startswith("$"):
        return []
    if "/" in prog:
        path = Path(prog) if Path(prog).is_absolute() else cwd / prog
        if not path.exists():
            return [_finding("error", key, f"{prog} does not exist", "point the command at an existing file")]
        if not os.access(path, os.X_OK):
            return [_finding("error", key, f"{prog} is not executable", f"chmod +x {path}")]
        return []
    if shutil.which(prog) is None:
        return [
            _finding("error", key, f"{prog!r} is not on PATH", f"install {prog} or use its absolute path")
        ]
    return []


def load_findings(e: Exception) -> list[dict[str, str]]:
    """A configuration that did not load, as findings: one per problem it had."""
    from orch.errors import ConfigError

    problems = e.problems if isinstance(e, ConfigError) else ()
    if not problems:
        return [_finding("error", "config", str(e), "fix the configuration")]
    return [
        _finding("error", key, problem, "fix this key (orch.toml.example lists every key)")
        for key, problem in problems
    ]


def relay_address_problem(host: str, port: int) -> str | None:
    """Why the relay could not listen on host:port, or None. Resolves the host (DNS)."""
    import socket

    if not 0 <= port <= 65535:
        return f"port {port} is out of range (0-65535)"
    try:
        socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as e:
        return f"cannot resolve {host!r}: {getattr(e, 'strerror', None) or e}"
    return None


def config_check(cfg: Config) -> list[dict[str, str]]:
    out: list[dict[str, str]] = []
    problem = relay_address_problem(cfg.relay.host, cfg.relay.port)
    if problem:
        out.append(_finding("error", "[relay] host", problem, "set host to an address of this machine"))
    if not cfg.repos:
        out.append(
            _finding(
                "error",
                "[repos]",
                "no repository is configured",
                'add [repos.app] path = "../app" (or run orch inside a git repository)',
            )
        )
    for repo in cfg.repos.values():
        key = f"[repos.{repo.name}]"
        if not repo.path.exists():
            out.append(_finding("error", f"{key} path", f"{repo.path} does not exist", "fix the path"))
            continue
        inside = git("rev-parse", "--git-dir", cwd=repo.path, check=False)
        if inside.returncode != 0:
            out.append(
                _finding(
                    "error",
                    f"{key} path",
                    f"{repo.path} is not a git repository",
                    f"git init {repo.path}, or point path at the repository",
                )
            )
            continue
        has = git(
            "rev-parse", "--verify", "-q", f"refs/heads/{repo.default_branch}", cwd=repo.path, check=False
        )
        if has.returncode != 0:
            out.append(
                _finding(
                    "error",
                    f"{key} default_branch",
                    f"branch {repo.default_branch!r} does not exist",
                    "set default_branch to the branch tasks merge into",
                )
            )
        if repo.ci:
            out += _check_command(cfg, f"{key} ci", repo.ci, repo.path)
    for agent in cfg.agents.values():
        used = any(s.agent == agent.name for s in cfg.pipeline.stages.values())
        if used:
            out += _check_command(cfg, f"[agents.{agent.name}] command", agent.command, cfg.base_dir)
    used_gates = {g for t in cfg.pipeline.transitions for g in t.gates}
    for gate in cfg.gates.values():
        if gate.command and gate.name in used_gates:
            out += _check_command(cfg, f"[gates.{gate.name}] command", gate.command, cfg.base_dir)
    used_effects = {e for t in cfg.pipeline.transitions for e in t.effects}
    for eff in cfg.effects.values():
        if eff.name not in used_effects:
            continue
        if eff.command:
            out += _check_command(cfg, f"[effects.{eff.name}] command", eff.command, cfg.base_dir)
        if eff.type == "command" and eff.irreversible and not eff.probe:
            out.append(
                _finding(
                    "warning",
                    f"[effects.{eff.name}] probe",
                    "irreversible effect without a probe: an interrupted run blocks the task",
                    'add probe = "<command that exits 0 if it happened, 1 if not>"',
                )
            )
    for hook, command in cfg.workspace.hooks.items():
        out += _check_command(cfg, f"[workspace] {hook}", command, cfg.base_dir)
    for path, key in (
        (cfg.state_dir, "state directory ($ORCH_HOME)"),
        (cfg.workspace.root, "[workspace] root"),
    ):
        probe = path
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        if not os.access(probe, os.W_OK):
            out.append(
                _finding("error", key, f"{path} is not writable", f"make {probe} writable for this user")
            )
    if cfg.store.db_path.exists():
        try:
            conn = sqlite3.connect(f"file:{cfg.store.db_path}?mode=ro", uri=True)
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            conn.close()
        except sqlite3.Error as e:
            out.append(
                _finding(
                    "error", "[store] path", f"{cfg.store.db_path}: {e}", "point path at an orch database"
                )
            )
        else:
            from orch.store.schema import LATEST

            if version > LATEST:
                out.append(
                    _finding(
                        "error",
                        "[store] path",
                        f"schema {version} is from a newer orch",
                        "upgrade orch, or use another database",
                    )
                )
    out += shared_store_findings(cfg)
    return out


def _integration_finding(key: str, what: str, e: Exception) -> dict[str, str]:
    from orch.errors import ConfigError, IntegrationError

    if isinstance(e, ConfigError):
        return _finding("error", key, str(e), "export the variable in the environment orch runs in")
    status = getattr(e, "status", None) if isinstance(e, IntegrationError) else None
    if status in (401, 403):
        return _finding(
            "error",
            key,
            f"{what}: the credentials were refused ({status})",
            "check the token/API key in the environment variable",
        )
    if status == 404:
        return _finding("error", key, f"{what}: not found (404)", "check the id, owner/name or workspace")
    if status is None:
        return _finding("error", key, f"{what}: unreachable: {e}", "check base_url and the network")
    return _finding("error", key, f"{what}: {e}", "see the message")


# -- version floors (--online) -----------------------------------------------------------

GITEA_FLOOR = (1, 22)  # GET /repos/{o}/{r}/pulls/{base}/{head} appeared in 1.22
PLANE_RELATIONS_FLOOR = "1.3.0"  # GET .../work-items/{id}/relations/


def gitea_version(raw: str) -> tuple[int, ...] | None:
    """(major, minor, patch) of a Gitea version string; a Forgejo one (`7.0.0+gitea-1.21.11`)
    gives the Gitea version it carries. None when there is no number to read."""
    import re

    if "+gitea-" in raw:
        raw = raw.split("+gitea-", 1)[1]
    match = re.match(r"v?(\d+)\.(\d+)(?:\.(\d+))?", raw.strip())
    if match is None:
        return None
    return tuple(int(g or 0) for g in match.groups())


def _gitea_floor(gitea: Any) -> list[dict[str, str]]:
    raw = gitea.version()
    version = gitea_version(raw)
    floor = ".".join(map(str, GITEA_FLOOR))
    if version is None:
        return [
            _finding(
                "warning",
                "[gitea] base_url",
                f"Gitea version {raw!r} is unreadable",
                f"make sure it is {floor} or newer",
            )
        ]
    if version[:2] < GITEA_FLOOR:
        return [
            _finding(
                "error",
                "[gitea] base_url",
                f"Gitea {raw} is too old: orch needs {floor} or newer (GET pulls/{{base}}/{{head}}; "
                "below it opening a pull request fails with '409 but no pull request' and merges "
                "are never seen)",
                f"upgrade Gitea to {floor} or newer",
            )
        ]
    return [_finding("info", "[gitea] base_url", f"Gitea {raw} (>= {floor})", "nothing to do")]


def _plane_floors(client: Any, key: str, project_id: str) -> list[dict[str, str]]:
    """Plane has no version endpoint: probe what orch uses. The work-items API (a listing
    of one item) and, when the project has an item, its relations (Plane 1.3.0 or newer;
    `orch deps ingest --from plane` needs them). Both relation shapes parse."""
    from orch.adapters.plane import WorkItem
    from orch.errors import IntegrationError

    where = f"[plane.projects.{key}]"
    try:
        first: list[WorkItem] = client.first_work_items(project_id, 1)
    except IntegrationError as e:
        if e.status == 404:
            return [
                _finding(
                    "error",
                    where,
                    "this Plane has no /work-items/ API: it is too old for orch",
                    f"upgrade Plane (relations need {PLANE_RELATIONS_FLOOR} or newer)",
                )
            ]
        raise
    if not first:
        return [
            _finding("info", where, "no work item yet: the relations API was not probed", "nothing to do")
        ]
    try:
        client.list_relations(project_id, first[0].id)
    except IntegrationError as e:
        if e.status != 404:
            raise
        return [
            _finding(
                "warning",
                where,
                f"Plane is older than {PLANE_RELATIONS_FLOOR}: it has no relations API, so "
                "`orch deps ingest --from plane` cannot read blocked-by relations",
                f"upgrade Plane to {PLANE_RELATIONS_FLOOR} or newer",
            )
        ]
    return [
        _finding(
            "info",
            where,
            f"work items and relations answer (Plane >= {PLANE_RELATIONS_FLOOR})",
            "nothing to do",
        )
    ]


def _telegram_chat(tg: Any, chat_id: str) -> list[dict[str, str]]:
    from orch.adapters.telegram import ChatMigrated

    try:
        title = tg.get_chat(chat_id)
    except ChatMigrated as e:
        return [
            _finding(
                "error",
                "[telegram] chat_id",
                f"the group {chat_id} became a supergroup with the id {e.new_chat_id}",
                f'set [telegram] chat_id = "{e.new_chat_id}"',
            )
        ]
    return [_finding("info", "[telegram] chat_id", f"the bot sees the chat {title!r}", "nothing to do")]


def online_checks(cfg: Config) -> list[dict[str, str]]:
    """One cheap call to each configured integration; secrets are never printed."""
    from orch.app import wiring

    out: list[dict[str, str]] = []
    if cfg.tracker.kind == "plane":
        from orch.adapters.plane import PlaneClient

        try:
            client = PlaneClient(
                client=wiring.http_client(cfg.plane.timeout_s),
                base_url=cfg.plane.base_url,
                workspace=cfg.plane.workspace,
                api_key=wiring.secret(cfg.plane.api_key_env, "[plane] api_key_env"),
                per_page=1,
            )
            for project in cfg.plane.projects.values():
                try:
                    client.list_states(project.id)
                    out.append(
                        _finding("info", f"[plane.projects.{project.key}]", "reachable", "nothing to do")
                    )
                except Exception as e:
                    out.append(
                        _integration_finding(
                            f"[plane.projects.{project.key}] id", f"project {project.key}", e
                        )
                    )
                    continue
                out += _plane_floors(client, project.key, project.id)
        except Exception as e:
            out.append(_integration_finding("[plane]", "Plane", e))
    if cfg.forge.kind == "gitea":
        from orch.adapters.gitea import GiteaClient

        try:
            gitea = GiteaClient(
                client=wiring.http_client(cfg.gitea.timeout_s),
                base_url=cfg.gitea.base_url,
                token=wiring.secret(cfg.gitea.token_env, "[gitea] token_env"),
            )
            out += _gitea_floor(gitea)
            for repo in cfg.repos.values():
                owner, name = (repo.forge_repo or "/").split("/", 1)
                try:
                    gitea.combined_status(owner, name, repo.default_branch)
                    out.append(_finding("info", f"[repos.{repo.name}]", "reachable", "nothing to do"))
                except Exception as e:
                    out.append(
                        _integration_finding(f"[repos.{repo.name}] forge_repo", repo.forge_repo or "?", e)
                    )
        except Exception as e:
            out.append(_integration_finding("[gitea]", "Gitea", e))
    if cfg.notifier.kind == "telegram":
        from orch.adapters.telegram import TelegramClient

        try:
            tg = TelegramClient(
                client=wiring.http_client(cfg.telegram.timeout_s),
                base_url=cfg.telegram.base_url,
                token=wiring.secret(cfg.telegram.token_env, "[telegram] token_env"),
            )
            out.append(_finding("info", "[telegram]", f"bot {tg.get_me()} answers", "nothing to do"))
            out += _telegram_chat(tg, cfg.telegram.chat_id)
        except Exception as e:
            out.append(_integration_finding("[telegram] token_env", "Telegram", e))
    if not out:
        out.append(
            _finding(
                "info",
                "[tracker] [forge] [notifier]",
                "no online integration is configured (local tracker, forge, console)",
                "nothing to do",
            )
        )
    return out


def doctor(cfg: Config) -> dict[str, Any]:
    """config check + database integrity + what the queue view calls problems."""
    findings = config_check(cfg)
    view: dict[str, Any] = {}
    if cfg.store.url or cfg.store.db_path.exists():
        from orch.app.wiring import open_runtime
        from orch.engine import status
        from orch.errors import StoreError

        try:
            rt = open_runtime(cfg, actor="doctor", create=False)
        except StoreError as e:  # damaged, unreadable, read-only: a finding, not a traceback
            rt = None
            findings.append(_finding("error", "[store] path", str(e), "restore the database from a backup"))
        if rt is not None:
            try:
                check = rt.store.integrity()
                if check != "ok":
                    findings.append(
                        _finding(
                            "error",
                            "[store] path",
                            f"integrity check: {check}",
                            "restore the database from a backup",
                        )
                    )
                view = status.queue(rt)
            except StoreError as e:
                findings.append(
                    _finding("error", "[store] path", str(e), "restore the database from a backup")
                )
            finally:
                rt.close()
        for p in view.get("problems", []):
            findings.append(_finding("warning", "queue", p, "see `orch queue`"))
    else:
        findings.append(
            _finding("warning", "[store] path", f"{cfg.store.db_path} does not exist yet", "run `orch init`")
        )
    return {
        "ok": not any(f["level"] == "error" for f in findings),
        "findings": findings,
        "healthy": view.get("healthy"),
        "hosts": view.get("hosts", []),
    }
