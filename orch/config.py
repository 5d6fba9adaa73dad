"""orch.toml + ORCH_* overrides -> one frozen, validated `Config`.

Discovery, first hit wins: `--config PATH`, `$ORCH_CONFIG`, `./orch.toml` (or the
nearest parent directory's),
`$ORCH_HOME/orch.toml`, else the embedded defaults (DEFAULTS below, which are also
what `orch.toml.example` spells out). State (database, worktrees, logs) lives in
`$ORCH_HOME` if set, else in `.orch/` beside the config file (or the current directory).

Every scalar key of a plain section can be overridden from the environment as
`ORCH_<SECTION>_<KEY>` (`ORCH_TRANSITION_LEASE_ENABLED=false`). Errors name the file,
the key and what was expected. Secrets are never in this file: a key ending in `_env`
names the environment variable that holds one.
"""

from __future__ import annotations

import copy
import math
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

from orch.errors import ConfigError

DEFAULT_PROMPT = (
    "You are the $agent of task $task_key.\n"
    "Title: $task_title\n"
    "Stage: $stage (retry $retries)\n"
    "Work in: $worktree on branch $branch\n"
)

# The one place defaults live. orch.toml.example mirrors this (a test keeps them equal).
DEFAULTS: dict[str, Any] = {
    "store": {"path": "", "busy_timeout_ms": 5000},
    "workspace": {
        "root": "",
        "hook_timeout_s": 120,
        "after_create": "",
        "before_run": "",
        "after_run": "",
        "before_remove": "",
    },
    "transition_lease": {"enabled": True},
    "work": {"max_concurrency": 4, "backoff_base_s": 30, "backoff_max_s": 600, "start_immediately": True},
    "reaper": {"max_running_s": 14400, "grace_s": 5},
    "deps": {"enabled": True, "finished_stages": ["deploy", "monitoring", "done"]},
    "merge": {"premerge_rebase_always": True, "line_enabled": True},
    "relay": {
        "host": "127.0.0.1",
        "port": 8787,
        "max_body_bytes": 1048576,
        "header_timeout_s": 10,
        "body_timeout_s": 30,
        "max_connections": 256,
        "plane_secret_env": "ORCH_PLANE_WEBHOOK_SECRET",
        "gitea_secret_env": "ORCH_GITEA_WEBHOOK_SECRET",
        "token_env": "ORCH_RELAY_TOKEN",
    },
    "inbox": {"max_attempts": 5, "backoff_base_s": 10},
    "reconcile": {
        "enabled": True,
        "tracker_enabled": True,
        "skip_blocked_enabled": True,
        "gone_enabled": True,
        "grace_s": 120,
        "stage_grace_s": {},
    },
    "tracker": {"kind": "local", "key_prefix": "ORCH", "check_before_effects": True},
    "forge": {"kind": "local"},
    "notifier": {"kind": "console"},
    "plane": {
        "base_url": "",
        "workspace": "",
        "api_key_env": "PLANE_API_KEY",
        "states_ttl_s": 300,
        "per_page": 100,
        "timeout_s": 10,
        "requests_per_run": 50,
        "requests_per_minute": 50,
        "projects": {},
    },
    "gitea": {
        "base_url": "",
        "token_env": "GITEA_TOKEN",
        "merge_style": "rebase",
        "timeout_s": 10,
        "mirror_root": "",
    },
    "telegram": {
        "base_url": "https://api.telegram.org",
        "token_env": "TELEGRAM_BOT_TOKEN",
        "chat_id": "",
        "thread_id": 0,
        "max_wait_s": 5,
        "timeout_s": 10,
        "disable_notification": False,
    },
    "pipeline": {
        "initial": "analysis",
        "max_retries": 3,
        "stages": {
            "analysis": {"agent": "analyst", "human": True},
            "development": {"agent": "developer"},
            "review": {"agent": "reviewer"},
            "merge": {},
            "deploy": {},
            "monitoring": {},
            "done": {"terminal": True},
            "cancelled": {"terminal": True},
        },
        "transitions": [
            {"from": "analysis", "to": "development", "gates": ["human_approved", "agent_ok"]},
            {
                "from": "development",
                "to": "review",
                "gates": ["agent_ok", "branch_pushed", "ci_green"],
            },
            {"from": "review", "to": "development", "gates": ["review_rejected"], "retry": True},
            {"from": "review", "to": "merge", "gates": ["review_approved"]},
            {
                "from": "merge",
                "to": "deploy",
                "effects": ["premerge_rebase", "merge"],
                "on_fail": "development",
            },
            {"from": "deploy", "to": "monitoring", "effects": ["deploy"]},
            {"from": "monitoring", "to": "done", "gates": ["monitor_healthy"]},
        ],
    },
    "gates": {
        "human_approved": {"type": "verdict", "verdict": "approve"},
        "agent_ok": {"type": "agent"},
        "branch_pushed": {"type": "branch"},
        "ci_green": {"type": "ci"},
        "review_approved": {"type": "verdict", "verdict": "approve", "bind_head": True},
        "review_rejected": {"type": "verdict", "verdict": "reject", "bind_head": True},
        "monitor_healthy": {"type": "monitor", "command": "true", "timeout_s": 60},
    },
    "effects": {
        "premerge_rebase": {"type": "rebase", "irreversible": False},
        "merge": {"type": "merge", "irreversible": True},
        "deploy": {"type": "command", "command": "true", "irreversible": True, "timeout_s": 900},
    },
    "agents": {
        "analyst": {"command": 'cat "$ORCH_PROMPT_FILE"', "timeout_s": 1800},
        "developer": {
            "command": "echo 'set [agents.developer] command in orch.toml' >&2; exit 1",
            "timeout_s": 3600,
        },
        "reviewer": {
            "command": "echo 'set [agents.reviewer] command in orch.toml' >&2; exit 1",
            "timeout_s": 1800,
        },
    },
    "repos": {},
}

# Sections whose keys are all known (a typo there is an error, not a silent default).
_PLAIN_SECTIONS = (
    "store",
    "workspace",
    "transition_lease",
    "work",
    "reaper",
    "deps",
    "merge",
    "relay",
    "inbox",
    "reconcile",
    "tracker",
    "forge",
    "notifier",
)
# Sections whose scalar keys accept ORCH_<SECTION>_<KEY> overrides (ORCH_TELEGRAM_CHAT_ID).
_ENV_SECTIONS = (*_PLAIN_SECTIONS, "pipeline", "plane", "gitea", "telegram")
HOOKS = ("after_create", "before_run", "after_run", "before_remove")
GATE_TYPES = ("verdict", "agent", "branch", "ci", "command", "monitor")
EFFECT_TYPES = ("rebase", "merge", "command")
TRACKER_KINDS = ("local", "plane")
FORGE_KINDS = ("local", "gitea")
NOTIFIER_KINDS = ("console", "telegram")
LOGICAL_STATES = (
    "backlog",
    "to_analyse",
    "analysis",
    "in_progress",
    "code_review",
    "approved",
    "rejected",
    "blocked",
    "needs_input",
    "awaiting_deploy",
    "deploying",
    "monitoring",
    "done",
    "cancelled",
)


class PlaneProject(NamedTuple):
    key: str  # the identifier in work-item keys: ENG in ENG-12
    id: str
    repo: str
    states: dict[str, str] = {}  # noqa: RUF012 (logical key -> state name; never mutated)


class Integrations(NamedTuple):
    """The settings of the real integrations (secrets are only named here, never held)."""

    plane_base_url: str
    plane_workspace: str
    plane_api_key_env: str
    plane_states_ttl_s: float
    plane_per_page: int
    plane_timeout_s: float
    plane_requests_per_run: int
    plane_requests_per_minute: int
    plane_projects: dict[str, PlaneProject]
    gitea_base_url: str
    gitea_token_env: str
    gitea_merge_style: str
    gitea_timeout_s: float
    gitea_mirror_root: Path
    telegram_base_url: str
    telegram_token_env: str
    telegram_chat_id: str
    telegram_thread_id: int
    telegram_max_wait_s: float
    telegram_timeout_s: float
    telegram_disable_notification: bool


class Stage(NamedTuple):
    name: str
    agent: str | None = None
    human: bool = False
    terminal: bool = False


class Transition(NamedTuple):
    source: str
    target: str
    gates: tuple[str, ...] = ()
    effects: tuple[str, ...] = ()
    retry: bool = False
    on_fail: str | None = None  # where a failed effect sends the task (else: blocked)

    @property
    def name(self) -> str:
        return f"{self.source}->{self.target}"


class Gate(NamedTuple):
    name: str
    type: str
    verdict: str | None = None
    bind_head: bool = False
    command: str | None = None
    timeout_s: float = 60.0
    pass_env: tuple[str, ...] = ()  # secrets its command is given (docs/security.md)


class Effect(NamedTuple):
    name: str
    type: str
    irreversible: bool
    command: str | None = None
    probe: str | None = None
    timeout_s: float = 900.0
    pass_env: tuple[str, ...] = ()  # secrets its command and probe are given


class Agent(NamedTuple):
    name: str
    command: str
    prompt: str = DEFAULT_PROMPT
    timeout_s: float = 3600.0
    stall_timeout_s: float = 0.0  # 0: off
    max_attempts: int = 3
    max_concurrency: int = 0  # 0: only the global limit
    pass_env: tuple[str, ...] = ()  # secrets the agent is given back by name (docs/security.md)


class Repo(NamedTuple):
    name: str
    path: Path
    default_branch: str = "main"
    ci: str | None = None
    ci_timeout_s: float = 1800.0
    forge_repo: str | None = None  # "owner/name" on the forge: maps its webhooks here


class Config(NamedTuple):
    source: Path | None
    base_dir: Path
    state_dir: Path
    db_path: Path
    workspace_root: Path
    busy_timeout_ms: int
    lease_enabled: bool
    max_concurrency: int
    backoff_base_s: float
    backoff_max_s: float
    max_running_s: float
    reap_grace_s: float
    deps_enabled: bool
    finished_stages: tuple[str, ...]
    premerge_rebase_always: bool
    merge_line_enabled: bool
    hooks: dict[str, str]
    hook_timeout_s: float
    relay_host: str
    relay_port: int
    relay_max_body: int
    relay_header_timeout_s: float
    relay_body_timeout_s: float
    relay_max_connections: int
    plane_secret_env: str
    gitea_secret_env: str
    relay_token_env: str
    inbox_max_attempts: int
    inbox_backoff_s: float
    integrations: Integrations
    reconcile_enabled: bool
    reconcile_tracker_enabled: bool
    reconcile_skip_blocked_enabled: bool
    reconcile_gone_enabled: bool
    tracker_check_before_effects: bool
    grace_s: float
    stage_grace_s: dict[str, float]

    def grace(self, stage: str) -> float:
        """How long a task must sit untouched at `stage` before the reconciler looks at it.

        A stage with no agent (merge, deploy, monitoring) waits for no event but the tick
        itself: no grace unless configured.
        """
        if stage in self.stage_grace_s:
            return self.stage_grace_s[stage]
        st = self.stages.get(stage)
        return 0.0 if st is not None and st.agent is None else self.grace_s

    key_prefix: str
    tracker_kind: str
    forge_kind: str
    notifier_kind: str
    initial_stage: str
    max_retries: int
    stages: dict[str, Stage]
    transitions: tuple[Transition, ...]
    gates: dict[str, Gate]
    effects: dict[str, Effect]
    agents: dict[str, Agent]
    repos: dict[str, Repo]
    raw: dict[str, Any] | None = None  # the merged tables, for `orch config show`
    start_immediately: bool = True  # [work] start_immediately: no wait for the next tick

    @property
    def log_dir(self) -> Path:
        return self.state_dir / "logs"

    def secret_env_names(self) -> frozenset[str]:
        """Every variable orch knows holds a secret: the value of each `*_env` key.

        Commands orch runs (agents, hooks, gates, effects, CI) never inherit these; a
        `pass_env` list gives one back by name.
        """
        return frozenset(str(x) for x in _env_values(self.raw or DEFAULTS))

    def transitions_from(self, stage: str) -> tuple[Transition, ...]:
        return tuple(t for t in self.transitions if t.source == stage)

    def is_terminal(self, stage: str) -> bool:
        s = self.stages.get(stage)
        return bool(s and s.terminal)

    def repo_for_forge(self, full_name: str) -> str | None:
        """The configured repo a forge webhook's "owner/name" belongs to (forge_repo, else the name)."""
        for repo in self.repos.values():
            if repo.forge_repo and repo.forge_repo.lower() == full_name.lower():
                return repo.name
        tail = full_name.rsplit("/", 1)[-1]
        return tail if tail in self.repos and not self.repos[tail].forge_repo else None

    def default_repo(self) -> str:
        if len(self.repos) == 1:
            return next(iter(self.repos))
        if not self.repos:
            raise ConfigError("no repository configured: add a [repos.NAME] section with path = ...")
        raise ConfigError(f"several repositories configured ({', '.join(self.repos)}): pass --repo")


def discover(
    explicit: str | os.PathLike[str] | None = None,
    *,
    cwd: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> Path | None:
    """The config file to read, or None for the embedded defaults."""
    env = os.environ if environ is None else environ
    cwd = cwd or Path.cwd()
    if explicit:
        p = Path(explicit)
        if not p.is_file():
            raise ConfigError(f"{p}: no such config file")
        return p
    from_env = env.get("ORCH_CONFIG")
    if from_env:
        p = Path(from_env)
        if not p.is_file():
            raise ConfigError(f"{p}: no such config file (from $ORCH_CONFIG)")
        return p
    # Walk up to the filesystem root, as git does: `orch` run from a subdirectory of the
    # repository must find the same state, not start an empty one beside it.
    for d in (cwd, *cwd.resolve().parents):
        if (d / "orch.toml").is_file():
            return d / "orch.toml"
    home = env.get("ORCH_HOME")
    if home and (Path(home) / "orch.toml").is_file():
        return Path(home) / "orch.toml"
    return None


def load(
    explicit: str | os.PathLike[str] | None = None,
    *,
    cwd: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Find, read, override and validate the configuration."""
    env = os.environ if environ is None else environ
    cwd = cwd or Path.cwd()
    path = discover(explicit, cwd=cwd, environ=env)
    data: dict[str, Any] = {}
    if path is not None:
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except UnicodeDecodeError as e:
            raise ConfigError(
                f"{path}: not UTF-8 text (byte {e.start} is {e.object[e.start : e.start + 1]!r}): "
                "save the file as UTF-8",
                problems=(("file", f"not UTF-8 text (byte {e.start})"),),
            ) from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(
                f"{path}: not valid TOML: {e}", problems=(("file", f"not valid TOML: {e}"),)
            ) from None
        except OSError as e:
            raise ConfigError(f"{path}: cannot read: {e.strerror}") from None
    return build(data, source=path, cwd=cwd, environ=env)


def merged(data: dict[str, Any]) -> dict[str, Any]:
    """DEFAULTS with `data` laid over it (tables merge, lists and scalars replace)."""
    out = copy.deepcopy(DEFAULTS)

    def lay(dst: dict[str, Any], src: dict[str, Any]) -> None:
        for k, v in src.items():
            if isinstance(v, dict) and isinstance(dst.get(k), dict):
                lay(dst[k], v)
            else:
                dst[k] = copy.deepcopy(v)

    lay(out, data)
    return out


def build(
    data: dict[str, Any],
    *,
    source: Path | None = None,
    cwd: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Validate `data` laid over DEFAULTS, with ORCH_* overrides from `environ`.

    Every problem is collected before one ConfigError is raised with all of them (its
    `problems` feed `orch config check`): a file with three typos takes one fix, not three.
    """
    env = os.environ if environ is None else environ
    where = str(source) if source else "embedded defaults"
    raw = merged(data)
    v = _Validator(where)
    for section, table in data.items():
        if section not in DEFAULTS:
            v.error(section, None, f"unknown section [{section}] (known: {', '.join(DEFAULTS)})")
        elif section in _PLAIN_SECTIONS and isinstance(table, dict):
            v.only(table, section, set(DEFAULTS[section]))
    v.origin = _apply_env(raw, env, v)
    _unknown_variables(raw, env, v)
    cfg = _build(v, raw, source=source, cwd=cwd, environ=env)
    v.raise_if_any()
    return cfg


def _build(
    v: _Validator, raw: dict[str, Any], *, source: Path | None, cwd: Path | None, environ: Mapping[str, str]
) -> Config:
    base_dir = (source.parent if source else (cwd or Path.cwd())).resolve()
    home = environ.get("ORCH_HOME")
    state_dir = Path(home).resolve() if home else base_dir / ".orch"

    store = v.table(raw, "store")
    db = v.string(store, "store", "path")
    workspace = v.table(raw, "workspace")
    ws = v.string(workspace, "workspace", "root")
    pipe = v.table(raw, "pipeline")
    v.only(pipe, "pipeline", set(DEFAULTS["pipeline"]))

    stages: dict[str, Stage] = {}
    # A stages value that is no table is one problem; checking every reference to a stage
    # against it would bury that problem under a dozen echoes.
    v.stages_known = isinstance(pipe.get("stages", {}), dict)
    for name, st in v.table(pipe, "pipeline", "stages").items():
        key = f"pipeline.stages.{name}"
        st = v.is_table(st, key)
        v.only(st, key, {"agent", "human", "terminal"})
        stages[name] = Stage(
            name=name,
            agent=v.opt_string(st, key, "agent"),
            human=v.boolean(st, key, "human", False),
            terminal=v.boolean(st, key, "terminal", False),
        )
    gates = {
        name: _gate(v, name, v.is_table(g, f"gates.{name}")) for name, g in v.table(raw, "gates").items()
    }
    effects = {
        name: _effect(v, name, v.is_table(e, f"effects.{name}"))
        for name, e in v.table(raw, "effects").items()
    }
    agents = {
        name: _agent(v, name, v.is_table(a, f"agents.{name}")) for name, a in v.table(raw, "agents").items()
    }
    transitions = _transitions(v, pipe, stages, gates, effects)
    for st in stages.values():
        if st.agent and st.agent not in agents:
            import difflib

            close = difflib.get_close_matches(st.agent, agents, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            v.error(
                f"pipeline.stages.{st.name}",
                "agent",
                f"unknown agent {st.agent!r} ({hint}define [agents.{st.agent}]; known: {', '.join(agents)})",
            )
    initial = v.string(pipe, "pipeline", "initial")
    if initial not in stages and v.stages_known:
        v.error("pipeline", "initial", f"{initial!r} is not in [pipeline.stages]")
    if not any(s.terminal for s in stages.values()) and v.stages_known:
        v.error("pipeline.stages", None, "no stage has terminal = true")

    repos: dict[str, Repo] = {}
    for name, r in v.table(raw, "repos").items():
        key = f"repos.{name}"
        r = v.is_table(r, key)
        v.only(r, key, {"path", "default_branch", "ci", "ci_timeout_s", "forge_repo"})
        p = Path(v.string(r, key, "path")).expanduser()
        repos[name] = Repo(
            name=name,
            path=(p if p.is_absolute() else base_dir / p),
            default_branch=v.string(r, key, "default_branch", "main"),
            ci=v.opt_string(r, key, "ci"),
            ci_timeout_s=v.number(r, key, "ci_timeout_s", 1800.0),
            forge_repo=v.opt_string(r, key, "forge_repo"),
        )
    if not repos and (base_dir / ".git").exists():
        # With nothing configured, the directory orch runs in is the repository.
        repos["default"] = Repo(name="default", path=base_dir)

    tracker = v.table(raw, "tracker")
    forge_kind = v.choice(v.table(raw, "forge"), "forge", "kind", FORGE_KINDS)
    notifier_kind = v.choice(v.table(raw, "notifier"), "notifier", "kind", NOTIFIER_KINDS)
    work, reaper, deps = v.table(raw, "work"), v.table(raw, "reaper"), v.table(raw, "deps")
    relay, inbox, rec = v.table(raw, "relay"), v.table(raw, "inbox"), v.table(raw, "reconcile")
    for h in HOOKS:
        v.opt_string(workspace, "workspace", h)
    finished = v.names(deps, "deps", "finished_stages")
    for st_name in finished:
        if st_name not in stages and v.stages_known:
            v.error("deps", "finished_stages", f"{st_name!r} is not in [pipeline.stages]")
    relay_host = v.string(relay, "relay", "host")
    if relay_host and not _HOST.fullmatch(relay_host):
        v.error("relay", "host", f"{relay_host!r} is not a host name or an IP address")
    return Config(
        source=source,
        base_dir=base_dir,
        state_dir=state_dir,
        db_path=_path(db, base_dir) if db else state_dir / "orch.db",
        workspace_root=_path(ws, base_dir) if ws else state_dir / "worktrees",
        busy_timeout_ms=v.integer(store, "store", "busy_timeout_ms", 5000),
        lease_enabled=v.boolean(v.table(raw, "transition_lease"), "transition_lease", "enabled", True),
        max_concurrency=v.integer(work, "work", "max_concurrency", 4, minimum=1),
        backoff_base_s=v.number(work, "work", "backoff_base_s", 30),
        backoff_max_s=v.number(work, "work", "backoff_max_s", 600),
        max_running_s=v.number(reaper, "reaper", "max_running_s", 14400),
        reap_grace_s=v.number(reaper, "reaper", "grace_s", 5),
        deps_enabled=v.boolean(deps, "deps", "enabled", True),
        finished_stages=finished,
        premerge_rebase_always=v.boolean(v.table(raw, "merge"), "merge", "premerge_rebase_always", True),
        merge_line_enabled=v.boolean(v.table(raw, "merge"), "merge", "line_enabled", True),
        hooks={h: str(workspace[h]) for h in HOOKS if isinstance(workspace.get(h), str) and workspace[h]},
        hook_timeout_s=v.number(workspace, "workspace", "hook_timeout_s", 120),
        relay_host=relay_host,
        relay_port=v.integer(relay, "relay", "port", 8787, maximum=65535),
        relay_max_body=v.integer(relay, "relay", "max_body_bytes", 1048576, minimum=1),
        relay_header_timeout_s=v.number(relay, "relay", "header_timeout_s", 10),
        relay_body_timeout_s=v.number(relay, "relay", "body_timeout_s", 30),
        relay_max_connections=v.integer(relay, "relay", "max_connections", 256, minimum=1),
        plane_secret_env=v.string(relay, "relay", "plane_secret_env"),
        gitea_secret_env=v.string(relay, "relay", "gitea_secret_env"),
        relay_token_env=v.string(relay, "relay", "token_env"),
        inbox_max_attempts=v.integer(inbox, "inbox", "max_attempts", 5, minimum=1),
        inbox_backoff_s=v.number(inbox, "inbox", "backoff_base_s", 10),
        reconcile_enabled=v.boolean(rec, "reconcile", "enabled", True),
        reconcile_tracker_enabled=v.boolean(rec, "reconcile", "tracker_enabled", True),
        reconcile_skip_blocked_enabled=v.boolean(rec, "reconcile", "skip_blocked_enabled", True),
        reconcile_gone_enabled=v.boolean(rec, "reconcile", "gone_enabled", True),
        tracker_check_before_effects=v.boolean(tracker, "tracker", "check_before_effects", True),
        grace_s=v.number(rec, "reconcile", "grace_s", 120),
        stage_grace_s=_stage_grace(v, rec, stages),
        integrations=_integrations(v, raw, base_dir, state_dir, repos, tracker, forge_kind, notifier_kind),
        key_prefix=v.string(tracker, "tracker", "key_prefix"),
        tracker_kind=v.choice(tracker, "tracker", "kind", TRACKER_KINDS),
        forge_kind=forge_kind,
        notifier_kind=notifier_kind,
        initial_stage=initial,
        max_retries=v.integer(pipe, "pipeline", "max_retries", 3, minimum=1),
        stages=stages,
        transitions=tuple(transitions),
        gates=gates,
        effects=effects,
        agents=agents,
        repos=repos,
        raw=raw,
        start_immediately=v.boolean(work, "work", "start_immediately", True),
    )


# A host name (RFC 1123 labels), an IPv4 address, or an IPv6 address (bare or in brackets).
# Resolving it is left to `relay serve` and `config check`: every command loads the
# configuration, and none of them should wait on DNS.
_HOST = re.compile(
    r"(?=.{1,253}$)[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?(\.[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)*\.?"
    r"|\[?[0-9A-Fa-f:.]+(%\w+)?\]?"
)


def _transitions(
    v: _Validator,
    pipe: dict[str, Any],
    stages: dict[str, Stage],
    gates: dict[str, Gate],
    effects: dict[str, Effect],
) -> list[Transition]:
    transitions: list[Transition] = []
    tlist = pipe.get("transitions")
    if not isinstance(tlist, list):
        v.error("pipeline", "transitions", "expected an array of tables")
        return transitions
    for i, t in enumerate(tlist):
        key = f"pipeline.transitions[{i}]"
        t = v.is_table(t, key)
        v.only(t, key, {"from", "to", "gates", "effects", "retry", "on_fail"})
        tr = Transition(
            source=v.string(t, key, "from"),
            target=v.string(t, key, "to"),
            gates=v.names(t, key, "gates"),
            effects=v.names(t, key, "effects"),
            retry=v.boolean(t, key, "retry", False),
            on_fail=v.opt_string(t, key, "on_fail"),
        )
        for field, s in (("from", tr.source), ("to", tr.target), ("on_fail", tr.on_fail)):
            if s is not None and s not in stages and v.stages_known:
                v.error(key, field, f"stage {s!r} is not in [pipeline.stages]")
        if tr.source in stages and stages[tr.source].terminal:
            v.error(key, "from", f"{tr.source!r} is a terminal stage: no transition may leave it")
        for g in tr.gates:
            if g not in gates:
                v.error(key, "gates", f"unknown gate {g!r} (define [gates.{g}])")
        for e in tr.effects:
            if e not in effects:
                v.error(key, "effects", f"unknown effect {e!r} (define [effects.{e}])")
        transitions.append(tr)
    _ungated_cycle(v, transitions)
    return transitions


def _ungated_cycle(v: _Validator, transitions: list[Transition]) -> None:
    """A loop of transitions without gates would move a task one step per tick, forever."""
    edges: dict[str, list[tuple[int, str]]] = {}
    for i, t in enumerate(transitions):
        if not t.gates:
            edges.setdefault(t.source, []).append((i, t.target))
    done: set[str] = set()
    for start in sorted(edges):
        path: list[tuple[int, str]] = []  # (transition index, stage it leads to)
        on_path = {start: 0}
        stack = [iter(edges.get(start, []))]
        while stack:
            step = next(stack[-1], None)
            if step is None:
                stack.pop()
                if path:
                    on_path.pop(path.pop()[1], None)
                continue
            i, nxt = step
            if nxt in on_path:
                loop = [*path[on_path[nxt] :], (i, nxt)]
                names = " -> ".join([nxt, *(s for _, s in loop)])
                v.error(
                    f"pipeline.transitions[{loop[0][0]}]",
                    "gates",
                    f"a cycle with no gates ({names}) would move a task one step per tick "
                    "forever: give one of its transitions a gate",
                )
                return
            if nxt in done:
                continue
            path.append((i, nxt))
            on_path[nxt] = len(path)
            stack.append(iter(edges.get(nxt, [])))
        done.add(start)


def _stage_grace(v: _Validator, rec: dict[str, Any], stages: dict[str, Stage]) -> dict[str, float]:
    out = {}
    section = "reconcile.stage_grace_s"
    for stage, seconds in v.table(rec, "reconcile", "stage_grace_s").items():
        if stage not in stages and v.stages_known:
            v.error(section, stage, "not a stage of [pipeline.stages]")
        out[stage] = v.number({stage: seconds}, section, stage, 0)
    return out


# Plane's REST API refuses per_page above its paginator's maximum with 400 "Invalid
# per_page value" (BasePaginator.get_per_page, makeplane/plane): 100 in the releases
# through 2025, 1000 in newer community editions. 100 is what every version accepts.
PLANE_MAX_PER_PAGE = 100


def _integrations(
    v: _Validator,
    raw: dict[str, Any],
    base_dir: Path,
    state_dir: Path,
    repos: dict[str, Repo],
    tracker: dict[str, Any],
    forge_kind: str,
    notifier_kind: str,
) -> Integrations:
    plane, gitea, tg = v.table(raw, "plane"), v.table(raw, "gitea"), v.table(raw, "telegram")
    v.only(plane, "plane", set(DEFAULTS["plane"]))
    v.only(gitea, "gitea", set(DEFAULTS["gitea"]))
    v.only(tg, "telegram", set(DEFAULTS["telegram"]))
    projects: dict[str, PlaneProject] = {}
    for key, p in v.table(plane, "plane", "projects").items():
        section = f"plane.projects.{key}"
        p = v.is_table(p, section)
        v.only(p, section, {"id", "repo", "states"})
        states = v.table(p, section, "states")
        for logical, name in states.items():
            if logical not in LOGICAL_STATES:
                v.error(
                    f"{section}.states",
                    logical,
                    f"unknown status key (expected one of {', '.join(LOGICAL_STATES)})",
                )
            elif not isinstance(name, str):
                v.error(f"{section}.states", logical, f"expected a state name, got {name!r}")
        repo = v.string(p, section, "repo")
        if repo not in repos:
            v.error(section, "repo", f"{repo!r} is not a configured [repos.*]")
        projects[key] = PlaneProject(key=key, id=v.string(p, section, "id"), repo=repo, states=dict(states))
    chat_id = tg.get("chat_id", "")
    if isinstance(chat_id, bool) or not isinstance(chat_id, str | int):
        v.error("telegram", "chat_id", f'expected one chat id (a number or "@channel"), got {chat_id!r}')
        chat_id = ""
    out = Integrations(
        plane_base_url=v.string(plane, "plane", "base_url"),
        plane_workspace=v.string(plane, "plane", "workspace"),
        plane_api_key_env=v.string(plane, "plane", "api_key_env"),
        plane_states_ttl_s=v.number(plane, "plane", "states_ttl_s", 300),
        plane_per_page=v.integer(plane, "plane", "per_page", 100, minimum=1, maximum=PLANE_MAX_PER_PAGE),
        plane_requests_per_run=v.integer(plane, "plane", "requests_per_run", 50),
        plane_requests_per_minute=v.integer(plane, "plane", "requests_per_minute", 50, minimum=0),
        plane_timeout_s=v.number(plane, "plane", "timeout_s", 10),
        plane_projects=projects,
        gitea_base_url=v.string(gitea, "gitea", "base_url"),
        gitea_token_env=v.string(gitea, "gitea", "token_env"),
        gitea_merge_style=v.choice(gitea, "gitea", "merge_style", ("rebase", "fast-forward-only")),
        gitea_timeout_s=v.number(gitea, "gitea", "timeout_s", 10),
        gitea_mirror_root=_path(v.string(gitea, "gitea", "mirror_root"), base_dir)
        if gitea.get("mirror_root")
        else state_dir / "mirrors",
        telegram_base_url=v.string(tg, "telegram", "base_url"),
        telegram_token_env=v.string(tg, "telegram", "token_env"),
        telegram_chat_id=str(chat_id),
        telegram_thread_id=v.integer(tg, "telegram", "thread_id", 0),
        telegram_max_wait_s=v.number(tg, "telegram", "max_wait_s", 5),
        telegram_timeout_s=v.number(tg, "telegram", "timeout_s", 10),
        telegram_disable_notification=v.boolean(tg, "telegram", "disable_notification", False),
    )
    if tracker.get("kind") == "plane":
        for k in ("base_url", "workspace"):
            if not plane.get(k):
                v.error("plane", k, 'required with [tracker] kind = "plane"')
        if not projects:
            v.error(
                "plane.projects.KEY",
                None,
                'at least one project (id, repo) is required with [tracker] kind = "plane"',
            )
    if forge_kind == "gitea":
        if not out.gitea_base_url:
            v.error("gitea", "base_url", 'required with [forge] kind = "gitea"')
        for configured in repos.values():
            if not configured.forge_repo or "/" not in configured.forge_repo:
                v.error(
                    f"repos.{configured.name}",
                    "forge_repo",
                    '"owner/name" is required with [forge] kind = "gitea"',
                )
    if notifier_kind == "telegram" and not out.telegram_chat_id:
        v.error("telegram", "chat_id", 'required with [notifier] kind = "telegram"')
    return out


def _path(p: str, base: Path) -> Path:
    q = Path(p).expanduser()
    return q if q.is_absolute() else base / q


def _gate(v: _Validator, name: str, g: dict[str, Any]) -> Gate:
    key = f"gates.{name}"
    v.only(g, key, {"type", "verdict", "bind_head", "command", "timeout_s", "pass_env"})
    gtype = v.choice(g, key, "type", GATE_TYPES)
    gate = Gate(
        name=name,
        type=gtype,
        verdict=v.opt_string(g, key, "verdict"),
        bind_head=v.boolean(g, key, "bind_head", False),
        command=v.opt_string(g, key, "command"),
        timeout_s=v.number(g, key, "timeout_s", 60.0),
        pass_env=v.variables(g, key, "pass_env"),
    )
    if g.get("type") not in GATE_TYPES:
        return gate  # its type is reported; checks that depend on it would only add noise
    if gtype in ("command", "monitor") and not gate.command:
        v.error(key, "command", f'required for type = "{gtype}"')
    if gtype == "verdict" and gate.verdict not in ("approve", "reject"):
        v.error(key, "verdict", 'expected "approve" or "reject"')
    return gate


def _effect(v: _Validator, name: str, e: dict[str, Any]) -> Effect:
    key = f"effects.{name}"
    v.only(e, key, {"type", "irreversible", "command", "probe", "timeout_s", "pass_env"})
    etype = v.choice(e, key, "type", EFFECT_TYPES)
    eff = Effect(
        name=name,
        type=etype,
        irreversible=v.boolean(e, key, "irreversible", True),
        command=v.opt_string(e, key, "command"),
        probe=v.opt_string(e, key, "probe"),
        timeout_s=v.number(e, key, "timeout_s", 900.0),
        pass_env=v.variables(e, key, "pass_env"),
    )
    if etype == "command" and e.get("type") == "command" and not eff.command:
        v.error(key, "command", 'required for type = "command"')
    return eff


def _agent(v: _Validator, name: str, a: dict[str, Any]) -> Agent:
    key = f"agents.{name}"
    v.only(
        a,
        key,
        {"command", "prompt", "timeout_s", "stall_timeout_s", "max_attempts", "max_concurrency", "pass_env"},
    )
    agent = Agent(
        name=name,
        command=v.string(a, key, "command"),
        prompt=v.opt_string(a, key, "prompt") or DEFAULT_PROMPT,
        timeout_s=v.number(a, key, "timeout_s", 3600.0),
        stall_timeout_s=v.number(a, key, "stall_timeout_s", 0.0),
        max_attempts=v.integer(a, key, "max_attempts", 3, minimum=1),
        max_concurrency=v.integer(a, key, "max_concurrency", 0),
        pass_env=v.variables(a, key, "pass_env"),
    )
    unknown = _template_names(agent.prompt) - PROMPT_VARIABLES
    if unknown:
        v.error(
            key,
            "prompt",
            f"unknown variable ${sorted(unknown)[0]} (known: {', '.join(sorted(PROMPT_VARIABLES))}; "
            "write $$ for a literal $ before a name)",
        )
    return agent


# What a prompt template may use; rendering fails on anything else.
PROMPT_VARIABLES = frozenset(
    {"agent", "task_key", "task_title", "stage", "retries", "worktree", "branch", "repo", "attempt", "note"}
)


def _template_names(template: str) -> set[str]:
    import string

    names = set()
    for match in string.Template.pattern.finditer(template):
        name = match.group("named") or match.group("braced")
        if name:
            names.add(name)
    return names


def render_template(template: str, values: Mapping[str, str]) -> str:
    """A prompt template with its $variables filled in (`string.Template` syntax).

    A `$` that does not start a name ("This costs $5", a lone `$`) is kept as written
    instead of failing every job; `$$` is a literal `$`. An unknown $name raises
    KeyError (the configuration refuses it at load).
    """
    import string

    def fill(m: re.Match[str]) -> str:
        if m.group("escaped") is not None:
            return "$"
        name = m.group("named") or m.group("braced")
        if name is not None:
            return values[name]
        return m.group(0)  # invalid: not a placeholder, keep it

    return string.Template.pattern.sub(fill, template)


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}

# ORCH_* variables that are not ORCH_<SECTION>_<KEY> overrides. Any other ORCH_* variable
# is a configuration error (a misspelt kill-switch must not be silently ignored): a new
# variable that orch reads or sets must be listed here.
RESERVED_VARIABLES = frozenset(
    {
        # read by orch itself
        "ORCH_CONFIG",
        "ORCH_HOME",
        "ORCH_LOG_FORMAT",
        "ORCH_LOG_LEVEL",
        "ORCH_LOG_FILE",
        "ORCH_ACTOR",
        "ORCH_FAULT",
        "ORCH_BOOT_ID",
        # set by orch for the commands it runs (an agent may run orch in turn)
        "ORCH_TASK_KEY",
        "ORCH_TASK_TITLE",
        "ORCH_TASK_REPO",
        "ORCH_STAGE",
        "ORCH_RETRIES",
        "ORCH_BRANCH",
        "ORCH_WORKTREE",
        "ORCH_PROMPT_FILE",
        "ORCH_VERDICT_FILE",
        "ORCH_JOB_ID",
        "ORCH_ATTEMPT",
        "ORCH_AGENT",
        "ORCH_NOTE",
        "ORCH_HOOK",
        "ORCH_CI_SHA",
    }
)


def _apply_env(raw: dict[str, Any], env: Mapping[str, str], v: _Validator) -> dict[tuple[str, str], str]:
    """Lay ORCH_<SECTION>_<KEY> over `raw`; returns which variable set which key."""
    origin: dict[tuple[str, str], str] = {}
    for section in _ENV_SECTIONS:
        table = raw.get(section)
        if not isinstance(table, dict):
            continue
        for key, current in list(table.items()):
            if isinstance(current, dict | list):
                continue
            var = f"ORCH_{section}_{key}".upper()
            if var not in env:
                continue
            origin[(section, key)] = var
            text = env[var].strip()
            default = DEFAULTS.get(section, {}).get(key, current)
            if isinstance(default, bool):
                if text.lower() in _TRUE:
                    table[key] = True
                elif text.lower() in _FALSE:
                    table[key] = False
                else:
                    v.problems.append((f"${var}", f"expected true or false, got {text!r}"))
            elif isinstance(default, int | float):
                # 300 in DEFAULTS may still be a number of seconds: take 0.5 as the file
                # would, and let the key's own check say whether it must be whole.
                try:
                    table[key] = int(text)
                except ValueError:
                    try:
                        table[key] = float(text)
                    except ValueError:
                        v.problems.append((f"${var}", f"expected a number, got {text!r}"))
            else:
                table[key] = text
    return origin


def _unknown_variables(raw: dict[str, Any], env: Mapping[str, str], v: _Validator) -> None:
    """An ORCH_* variable that sets nothing is an error: a typo must not keep a default."""
    named = {str(x) for x in _env_values(raw)}
    settable: dict[str, str] = {}
    for section in _ENV_SECTIONS:
        table = raw.get(section)
        if isinstance(table, dict):
            for key, value in table.items():
                settable[f"ORCH_{section}_{key}".upper()] = (
                    "table" if isinstance(value, dict | list) else "scalar"
                )
    for var in sorted(env):
        if not var.startswith("ORCH_") or var.startswith("ORCH_TEST_"):  # test suites' own knobs
            continue
        if var in RESERVED_VARIABLES or var in named:
            continue
        kind = settable.get(var)
        if kind == "scalar":
            continue
        if kind == "table":
            v.problems.append((f"${var}", "arrays and tables cannot be set from the environment"))
            continue
        import difflib  # only on this error path: start-up stays lean

        close = difflib.get_close_matches(var, [*settable, *RESERVED_VARIABLES], n=1)
        hint = f" (did you mean ${close[0]}?)" if close else ""
        v.problems.append((f"${var}", f"matches no configuration key{hint}; unset it"))


def _env_values(node: Any) -> list[Any]:
    """The values of every `*_env` key: the variables that hold secrets."""
    out: list[Any] = []
    if isinstance(node, dict):
        for k, val in node.items():
            if isinstance(k, str) and k.endswith("_env") and isinstance(val, str) and val:
                out.append(val)
            else:
                out += _env_values(val)
    elif isinstance(node, list):
        for val in node:
            out += _env_values(val)
    return out


_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class _Validator:
    """Typed reads that record a problem naming the file, the key and what was expected,
    and go on with a fallback value, so that one load reports every problem."""

    def __init__(self, where: str):
        self.where = where
        self.origin: dict[tuple[str, str], str] = {}  # (section, key) -> ORCH_* that set it
        self.problems: list[tuple[str, str]] = []
        self.stages_known = True  # false when [pipeline] stages is no table

    def error(self, section: str, key: str | None, problem: str) -> None:
        label = f"[{section}] {key}" if key else f"[{section}]"
        var = self.origin.get((section, key)) if key else None
        self.problems.append((label, f"{problem} (from ${var})" if var else problem))

    def raise_if_any(self) -> None:
        if self.problems:
            lines = [f"{self.where}: {key}: {problem}" for key, problem in self.problems]
            raise ConfigError("\n".join(lines), problems=tuple(self.problems))

    def _fail(self, section: str, key: str, expected: str, got: Any) -> None:
        self.error(section, key, f"expected {expected}, got {got!r}")

    def table(self, d: dict[str, Any], section: str, key: str | None = None) -> dict[str, Any]:
        val = d.get(key if key else section, {})
        if not isinstance(val, dict):
            self._fail(section, key or "", "a table", val)
            return {}
        return val

    def is_table(self, val: Any, section: str) -> dict[str, Any]:
        if not isinstance(val, dict):
            self.error(section, None, f"expected a table, got {val!r}")
            return {}
        return val

    def only(self, d: dict[str, Any], section: str, allowed: set[str]) -> None:
        for k in d:
            if k not in allowed:
                import difflib

                known = ", ".join(sorted(allowed))
                close = difflib.get_close_matches(k, allowed, n=1)
                hint = f"did you mean {close[0]!r}? " if close else ""
                self.error(section, k, f"unknown key ({hint}expected one of {known})")

    def string(self, d: dict[str, Any], section: str, key: str, default: str | None = None) -> str:
        val = d.get(key, default)
        if not isinstance(val, str):
            self._fail(section, key, "a string", val)
            return ""
        return val

    def opt_string(self, d: dict[str, Any], section: str, key: str) -> str | None:
        val = d.get(key)
        if val is None:
            return None
        if not isinstance(val, str):
            self._fail(section, key, "a string", val)
            return None
        return val

    def boolean(self, d: dict[str, Any], section: str, key: str, default: bool) -> bool:
        val = d.get(key, default)
        if not isinstance(val, bool):
            self._fail(section, key, "true or false", val)
            return default
        return val

    def number(self, d: dict[str, Any], section: str, key: str, default: float) -> float:
        val = d.get(key, default)
        # nan compares false with everything: `timeout_s = nan` would never time out.
        if isinstance(val, bool) or not isinstance(val, int | float) or not math.isfinite(val) or val < 0:
            self._fail(section, key, "a finite number >= 0", val)
            return float(default)
        return float(val)

    def integer(
        self,
        d: dict[str, Any],
        section: str,
        key: str,
        default: int,
        *,
        minimum: int = 0,
        maximum: int | None = None,
    ) -> int:
        val = d.get(key, default)
        if (
            isinstance(val, bool)
            or not isinstance(val, int)
            or val < minimum
            or (maximum is not None and val > maximum)
        ):
            span = f"from {minimum} to {maximum}" if maximum is not None else f">= {minimum}"
            self._fail(section, key, f"a whole number {span}", val)
            return default
        return val

    def names(self, d: dict[str, Any], section: str, key: str) -> tuple[str, ...]:
        val = d.get(key, [])
        if not isinstance(val, list) or not all(isinstance(x, str) for x in val):
            self._fail(section, key, "an array of names", val)
            return ()
        return tuple(val)

    def variables(self, d: dict[str, Any], section: str, key: str) -> tuple[str, ...]:
        names = self.names(d, section, key)
        for n in names:
            if not _ENV_NAME.fullmatch(n):
                self.error(section, key, f"{n!r} is not an environment variable name")
        return names

    def choice(self, d: dict[str, Any], section: str, key: str, options: tuple[str, ...]) -> str:
        val = d.get(key)
        if val not in options:
            self._fail(section, key, "one of " + ", ".join(repr(o) for o in options), val)
            return options[0]
        return str(val)
