"""The plain sections of orch.toml as records: `cfg.relay.port` is `[relay] port`.

One record per section, its fields named after the section's keys (two exceptions:
`store.db_path` is the resolved `[store] path`, `workspace.hooks` gathers the four hook
keys that are set). No defaults here: the loader fills every field (defaults.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

# Sections whose keys are all known (a typo there is an error, not a silent default).
PLAIN_SECTIONS = (
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
ENV_SECTIONS = (*PLAIN_SECTIONS, "pipeline", "plane", "gitea", "telegram")
HOOKS = ("after_create", "before_run", "after_run", "before_remove")
TRACKER_KINDS = ("local", "plane")
FORGE_KINDS = ("local", "gitea")
NOTIFIER_KINDS = ("console", "telegram")
GITEA_MERGE_STYLES = ("rebase", "fast-forward-only")
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

# Plane's REST API refuses per_page above its paginator's maximum with 400 "Invalid
# per_page value" (BasePaginator.get_per_page, makeplane/plane): 100 in the releases
# through 2025, 1000 in newer community editions. 100 is what every version accepts.
PLANE_MAX_PER_PAGE = 100


class StoreSection(NamedTuple):
    """[store]: the SQLite file (`db_path`), or a PostgreSQL `url` (docs/postgres.md)."""

    db_path: Path
    busy_timeout_ms: int
    url: str  # "" = the SQLite file; else postgresql://, never with a password
    password_env: str  # the variable holding the PostgreSQL password


class WorkspaceSection(NamedTuple):
    root: Path
    hook_timeout_s: float
    hooks: dict[str, str]  # hook name -> command, only the hooks that are set


class TransitionLeaseSection(NamedTuple):
    enabled: bool


class WorkSection(NamedTuple):
    max_concurrency: int
    backoff_base_s: float
    backoff_max_s: float
    start_immediately: bool  # no wait for the next tick


class ReaperSection(NamedTuple):
    max_running_s: float
    grace_s: float


class DepsSection(NamedTuple):
    enabled: bool
    finished_stages: tuple[str, ...]


class MergeSection(NamedTuple):
    premerge_rebase_always: bool
    line_enabled: bool


class RelaySection(NamedTuple):
    host: str
    port: int
    max_body_bytes: int
    header_timeout_s: float
    body_timeout_s: float
    max_connections: int
    plane_secret_env: str
    gitea_secret_env: str
    token_env: str


class InboxSection(NamedTuple):
    max_attempts: int
    backoff_base_s: float


class ReconcileSection(NamedTuple):
    enabled: bool
    tracker_enabled: bool
    skip_blocked_enabled: bool
    gone_enabled: bool
    grace_s: float
    stage_grace_s: dict[str, float]


class TrackerSection(NamedTuple):
    kind: str
    key_prefix: str
    check_before_effects: bool


class ForgeSection(NamedTuple):
    kind: str


class NotifierSection(NamedTuple):
    kind: str


class PlaneProject(NamedTuple):
    key: str  # the identifier in work-item keys: ENG in ENG-12
    id: str
    repo: str
    states: dict[str, str]  # logical key -> state name (only the ones the file overrides)


class PlaneSection(NamedTuple):
    """[plane]: the tracker's settings (the API key is only named, never held)."""

    base_url: str
    workspace: str
    api_key_env: str
    states_ttl_s: float
    per_page: int
    timeout_s: float
    requests_per_run: int
    requests_per_minute: int
    projects: dict[str, PlaneProject]


class GiteaSection(NamedTuple):
    base_url: str
    token_env: str
    merge_style: str
    timeout_s: float
    mirror_root: Path


class TelegramSection(NamedTuple):
    base_url: str
    token_env: str
    chat_id: str
    thread_id: int
    max_wait_s: float
    timeout_s: float
    disable_notification: bool
