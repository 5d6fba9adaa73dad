"""orch.toml + ORCH_* overrides -> one frozen, validated `Config`.

`discover` finds the file (walking up from the current directory, as git does), `load`
reads it, `build` lays it over DEFAULTS (defaults.py), applies the environment
(environment.py) and reads every section through one `Validator`, which collects every
problem before a single ConfigError names them all.
"""

from __future__ import annotations

import copy
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from orch.config.defaults import DEFAULTS, item, item_keys
from orch.config.environment import apply_env, unknown_variables
from orch.config.model import Config
from orch.config.pipeline import Pipeline, Repo, Stage
from orch.config.pipeline_loader import read_pipeline, read_repos
from orch.config.sections import (
    FORGE_KINDS,
    GITEA_MERGE_STYLES,
    HOOKS,
    LOGICAL_STATES,
    NOTIFIER_KINDS,
    PLAIN_SECTIONS,
    PLANE_MAX_PER_PAGE,
    TRACKER_KINDS,
    DepsSection,
    ForgeSection,
    GiteaSection,
    InboxSection,
    MergeSection,
    NotifierSection,
    PlaneProject,
    PlaneSection,
    ReaperSection,
    ReconcileSection,
    RelaySection,
    StoreSection,
    TelegramSection,
    TrackerSection,
    TransitionLeaseSection,
    WorkSection,
    WorkspaceSection,
)
from orch.config.validator import Validator
from orch.errors import ConfigError


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
    v = Validator(where)
    for section, table in data.items():
        if section not in DEFAULTS:
            v.error(section, None, f"unknown section [{section}] (known: {', '.join(DEFAULTS)})")
        elif section in PLAIN_SECTIONS and isinstance(table, dict):
            v.only(table, section, set(DEFAULTS[section]))
    v.origin = apply_env(raw, env, v)
    unknown_variables(raw, env, v)
    cfg = _build(v, raw, source=source, cwd=cwd, environ=env)
    v.raise_if_any()
    return cfg


def _build(
    v: Validator, raw: dict[str, Any], *, source: Path | None, cwd: Path | None, environ: Mapping[str, str]
) -> Config:
    base_dir = (source.parent if source else (cwd or Path.cwd())).resolve()
    home = environ.get("ORCH_HOME")
    state_dir = Path(home).resolve() if home else base_dir / ".orch"

    # The order of the reads is the order of the problems in the message (as it was
    # when this was one module): the pipeline first, then the plain sections.
    store = v.section(raw, "store")
    db = v.string(store, "store", "path")
    workspace = v.section(raw, "workspace")
    ws = v.string(workspace, "workspace", "root")
    tables = read_pipeline(v, raw)
    stages = tables.stages
    repos = read_repos(v, raw, base_dir)

    tracker = v.section(raw, "tracker")
    forge_kind = v.choice(v.section(raw, "forge"), "forge", "kind", FORGE_KINDS)
    notifier_kind = v.choice(v.section(raw, "notifier"), "notifier", "kind", NOTIFIER_KINDS)
    work, reaper, deps = v.section(raw, "work"), v.section(raw, "reaper"), v.section(raw, "deps")
    relay, inbox, rec = v.section(raw, "relay"), v.section(raw, "inbox"), v.section(raw, "reconcile")
    for h in HOOKS:
        v.opt_string(workspace, "workspace", h)
    finished = v.names(deps, "deps", "finished_stages")
    for st_name in finished:
        if st_name not in stages and v.stages_known:
            v.error("deps", "finished_stages", f"{st_name!r} is not in [pipeline.stages]")
    relay_host = v.string(relay, "relay", "host")
    if relay_host and not _HOST.fullmatch(relay_host):
        v.error("relay", "host", f"{relay_host!r} is not a host name or an IP address")
    store_section = StoreSection(
        db_path=_path(db, base_dir) if db else state_dir / "orch.db",
        busy_timeout_ms=v.integer(store, "store", "busy_timeout_ms", minimum=0, maximum=None),
        url=_store_url(v, store),
        password_env=v.string(store, "store", "password_env"),
    )
    lease = TransitionLeaseSection(
        enabled=v.boolean(v.section(raw, "transition_lease"), "transition_lease", "enabled"),
    )
    max_concurrency = v.integer(work, "work", "max_concurrency", minimum=1, maximum=None)
    backoff_base_s = v.number(work, "work", "backoff_base_s")
    backoff_max_s = v.number(work, "work", "backoff_max_s")
    reaper_section = ReaperSection(
        max_running_s=v.number(reaper, "reaper", "max_running_s"),
        grace_s=v.number(reaper, "reaper", "grace_s"),
    )
    deps_section = DepsSection(enabled=v.boolean(deps, "deps", "enabled"), finished_stages=finished)
    merge = v.section(raw, "merge")
    merge_section = MergeSection(
        premerge_rebase_always=v.boolean(merge, "merge", "premerge_rebase_always"),
        line_enabled=v.boolean(merge, "merge", "line_enabled"),
    )
    workspace_section = WorkspaceSection(
        root=_path(ws, base_dir) if ws else state_dir / "worktrees",
        hook_timeout_s=v.number(workspace, "workspace", "hook_timeout_s"),
        hooks={h: str(workspace[h]) for h in HOOKS if isinstance(workspace.get(h), str) and workspace[h]},
    )
    relay_section = RelaySection(
        host=relay_host,
        port=v.integer(relay, "relay", "port", minimum=0, maximum=65535),
        max_body_bytes=v.integer(relay, "relay", "max_body_bytes", minimum=1, maximum=None),
        header_timeout_s=v.number(relay, "relay", "header_timeout_s"),
        body_timeout_s=v.number(relay, "relay", "body_timeout_s"),
        max_connections=v.integer(relay, "relay", "max_connections", minimum=1, maximum=None),
        plane_secret_env=v.string(relay, "relay", "plane_secret_env"),
        gitea_secret_env=v.string(relay, "relay", "gitea_secret_env"),
        token_env=v.string(relay, "relay", "token_env"),
    )
    inbox_section = InboxSection(
        max_attempts=v.integer(inbox, "inbox", "max_attempts", minimum=1, maximum=None),
        backoff_base_s=v.number(inbox, "inbox", "backoff_base_s"),
    )
    rec_enabled = v.boolean(rec, "reconcile", "enabled")
    rec_tracker = v.boolean(rec, "reconcile", "tracker_enabled")
    rec_skip_blocked = v.boolean(rec, "reconcile", "skip_blocked_enabled")
    rec_gone = v.boolean(rec, "reconcile", "gone_enabled")
    check_before_effects = v.boolean(tracker, "tracker", "check_before_effects")
    reconcile_section = ReconcileSection(
        enabled=rec_enabled,
        tracker_enabled=rec_tracker,
        skip_blocked_enabled=rec_skip_blocked,
        gone_enabled=rec_gone,
        grace_s=v.number(rec, "reconcile", "grace_s"),
        stage_grace_s=_stage_grace(v, rec, stages),
    )
    plane, gitea, telegram = _integrations(
        v, raw, base_dir, state_dir, repos, tracker, forge_kind, notifier_kind
    )
    key_prefix = v.string(tracker, "tracker", "key_prefix")
    tracker_section = TrackerSection(
        kind=v.choice(tracker, "tracker", "kind", TRACKER_KINDS),
        key_prefix=key_prefix,
        check_before_effects=check_before_effects,
    )
    pipeline = Pipeline(
        initial=tables.initial,
        max_retries=v.integer(tables.table, "pipeline", "max_retries", minimum=1, maximum=None),
        stages=stages,
        transitions=tables.transitions,
    )
    work_section = WorkSection(
        max_concurrency=max_concurrency,
        backoff_base_s=backoff_base_s,
        backoff_max_s=backoff_max_s,
        start_immediately=v.boolean(work, "work", "start_immediately"),
    )
    return Config(
        source=source,
        base_dir=base_dir,
        state_dir=state_dir,
        store=store_section,
        workspace=workspace_section,
        transition_lease=lease,
        work=work_section,
        reaper=reaper_section,
        deps=deps_section,
        merge=merge_section,
        relay=relay_section,
        inbox=inbox_section,
        reconcile=reconcile_section,
        tracker=tracker_section,
        forge=ForgeSection(kind=forge_kind),
        notifier=NotifierSection(kind=notifier_kind),
        plane=plane,
        gitea=gitea,
        telegram=telegram,
        pipeline=pipeline,
        gates=tables.gates,
        effects=tables.effects,
        agents=tables.agents,
        repos=repos,
        raw=raw,
    )


def _path(p: str, base: Path) -> Path:
    q = Path(p).expanduser()
    return q if q.is_absolute() else base / q


# A host name (RFC 1123 labels), an IPv4 address, or an IPv6 address (bare or in brackets).
# Resolving it is left to `relay serve` and `config check`: every command loads the
# configuration, and none of them should wait on DNS.
_HOST = re.compile(
    r"(?=.{1,253}$)[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?(\.[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)*\.?"
    r"|\[?[0-9A-Fa-f:.]+(%\w+)?\]?"
)


def _stage_grace(v: Validator, rec: dict[str, Any], stages: dict[str, Stage]) -> dict[str, float]:
    out = {}
    section = "reconcile.stage_grace_s"
    for stage, seconds in v.table(rec, "reconcile", "stage_grace_s").items():
        if stage not in stages and v.stages_known:
            v.error(section, stage, "not a stage of [pipeline.stages]")
        out[stage] = v.number({stage: seconds}, section, stage)
    return out


def _integrations(
    v: Validator,
    raw: dict[str, Any],
    base_dir: Path,
    state_dir: Path,
    repos: dict[str, Repo],
    tracker: dict[str, Any],
    forge_kind: str,
    notifier_kind: str,
) -> tuple[PlaneSection, GiteaSection, TelegramSection]:
    """[plane], [gitea] and [telegram], and what each requires when it is the one in use."""
    plane, gitea, tg = v.section(raw, "plane"), v.section(raw, "gitea"), v.section(raw, "telegram")
    v.only(plane, "plane", set(DEFAULTS["plane"]))
    v.only(gitea, "gitea", set(DEFAULTS["gitea"]))
    v.only(tg, "telegram", set(DEFAULTS["telegram"]))
    projects: dict[str, PlaneProject] = {}
    for key, p in v.table(plane, "plane", "projects").items():
        section = f"plane.projects.{key}"
        p = v.is_table(p, section)
        v.only(p, section, item_keys("plane_project"))
        p = item("plane_project", p)
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
    chat_id = tg.get("chat_id")
    if isinstance(chat_id, bool) or not isinstance(chat_id, str | int):
        v.error("telegram", "chat_id", f'expected one chat id (a number or "@channel"), got {chat_id!r}')
        chat_id = ""
    plane_section = PlaneSection(
        base_url=v.string(plane, "plane", "base_url"),
        workspace=v.string(plane, "plane", "workspace"),
        api_key_env=v.string(plane, "plane", "api_key_env"),
        states_ttl_s=v.number(plane, "plane", "states_ttl_s"),
        per_page=v.integer(plane, "plane", "per_page", minimum=1, maximum=PLANE_MAX_PER_PAGE),
        requests_per_run=v.integer(plane, "plane", "requests_per_run", minimum=0, maximum=None),
        requests_per_minute=v.integer(plane, "plane", "requests_per_minute", minimum=0, maximum=None),
        timeout_s=v.number(plane, "plane", "timeout_s"),
        projects=projects,
    )
    gitea_section = GiteaSection(
        base_url=v.string(gitea, "gitea", "base_url"),
        token_env=v.string(gitea, "gitea", "token_env"),
        merge_style=v.choice(gitea, "gitea", "merge_style", GITEA_MERGE_STYLES),
        timeout_s=v.number(gitea, "gitea", "timeout_s"),
        mirror_root=_path(v.string(gitea, "gitea", "mirror_root"), base_dir)
        if gitea.get("mirror_root")
        else state_dir / "mirrors",
    )
    telegram_section = TelegramSection(
        base_url=v.string(tg, "telegram", "base_url"),
        token_env=v.string(tg, "telegram", "token_env"),
        chat_id=str(chat_id),
        thread_id=v.integer(tg, "telegram", "thread_id", minimum=0, maximum=None),
        max_wait_s=v.number(tg, "telegram", "max_wait_s"),
        timeout_s=v.number(tg, "telegram", "timeout_s"),
        disable_notification=v.boolean(tg, "telegram", "disable_notification"),
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
        if not gitea_section.base_url:
            v.error("gitea", "base_url", 'required with [forge] kind = "gitea"')
        for configured in repos.values():
            if not configured.forge_repo or "/" not in configured.forge_repo:
                v.error(
                    f"repos.{configured.name}",
                    "forge_repo",
                    '"owner/name" is required with [forge] kind = "gitea"',
                )
    if notifier_kind == "telegram" and not telegram_section.chat_id:
        v.error("telegram", "chat_id", 'required with [notifier] kind = "telegram"')
    return plane_section, gitea_section, telegram_section


def _store_url(v: Validator, store: dict[str, Any]) -> str:
    """[store] url: "" (the SQLite file) or a postgresql:// URL with no password in it.
    The message never repeats the URL: it may hold the very password it refuses."""
    url = v.string(store, "store", "url")
    if not url:
        return ""
    if not url.startswith(("postgresql://", "postgres://")):
        v.error("store", "url", 'expected a postgresql:// URL, or "" for the SQLite file')
        return url
    import urllib.parse  # only for a PostgreSQL store: the SQLite path does not load it

    try:
        parts = urllib.parse.urlsplit(url)
        in_query = any(k.lower() == "password" for k, _ in urllib.parse.parse_qsl(parts.query))
        has_password = parts.password is not None or in_query
    except ValueError:
        v.error("store", "url", "cannot be parsed as a URL")
        return url
    if has_password:
        v.error(
            "store", "url", "must not contain a password: set it in the variable [store] password_env names"
        )
    return url
