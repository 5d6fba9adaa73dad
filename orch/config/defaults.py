"""Every default of the configuration, in one place.

DEFAULTS is what a missing orch.toml stands for, and what `orch.toml.example` spells out
(tests/test_docs.py keeps the two equal). ITEM_DEFAULTS holds the optional keys of the
named tables ([gates.NAME], [agents.NAME], ...), laid under each one before it is read.
The loader has no default of its own: a value it reads comes from the file, the
environment, or here.
"""

from __future__ import annotations

from typing import Any

DEFAULT_PROMPT = (
    "You are the $agent of task $task_key.\n"
    "Title: $task_title\n"
    "Stage: $stage (retry $retries)\n"
    "Work in: $worktree on branch $branch\n"
)

DEFAULTS: dict[str, Any] = {
    "store": {"path": "", "url": "", "password_env": "PGPASSWORD", "busy_timeout_ms": 5000},
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


# The optional keys of each kind of named table, and their values when left out. A key
# absent here and from REQUIRED_ITEM_KEYS is unknown (an error naming the known ones).
# None stands for "not set": TOML has no null, so a file can never write it.
ITEM_DEFAULTS: dict[str, dict[str, Any]] = {
    "stage": {"agent": None, "human": False, "terminal": False},
    "transition": {"gates": [], "effects": [], "retry": False, "on_fail": None},
    "gate": {"verdict": None, "bind_head": False, "command": None, "timeout_s": 60.0, "pass_env": []},
    "effect": {"irreversible": True, "command": None, "probe": None, "timeout_s": 900.0, "pass_env": []},
    "agent": {
        "prompt": DEFAULT_PROMPT,
        "timeout_s": 3600.0,
        "stall_timeout_s": 0.0,  # 0: off
        "max_attempts": 3,
        "max_concurrency": 0,  # 0: only the global limit
        "pass_env": [],
    },
    "repo": {"default_branch": "main", "ci": None, "ci_timeout_s": 1800.0, "forge_repo": None},
    "plane_project": {"states": {}},
}

# The keys a named table must have (reading a missing one reports it).
REQUIRED_ITEM_KEYS: dict[str, tuple[str, ...]] = {
    "stage": (),
    "transition": ("from", "to"),
    "gate": ("type",),
    "effect": ("type",),
    "agent": ("command",),
    "repo": ("path",),
    "plane_project": ("id", "repo"),
}


def item(kind: str, table: dict[str, Any]) -> dict[str, Any]:
    """`table` with the defaults of its kind laid under it (a new dict)."""
    return {**ITEM_DEFAULTS[kind], **table}


def item_keys(kind: str) -> set[str]:
    """Every key a table of this kind accepts."""
    return {*ITEM_DEFAULTS[kind], *REQUIRED_ITEM_KEYS[kind]}
