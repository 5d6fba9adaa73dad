"""TEMPORARY: the flat attribute names of the old Config, read through the sections.

Lets the package land before the callers are renamed; the rename commit deletes this.
"""

from __future__ import annotations

from typing import Any

FLAT = {
    "db_path": "store.db_path",
    "busy_timeout_ms": "store.busy_timeout_ms",
    "workspace_root": "workspace.root",
    "hooks": "workspace.hooks",
    "hook_timeout_s": "workspace.hook_timeout_s",
    "lease_enabled": "transition_lease.enabled",
    "max_concurrency": "work.max_concurrency",
    "backoff_base_s": "work.backoff_base_s",
    "backoff_max_s": "work.backoff_max_s",
    "start_immediately": "work.start_immediately",
    "max_running_s": "reaper.max_running_s",
    "reap_grace_s": "reaper.grace_s",
    "deps_enabled": "deps.enabled",
    "finished_stages": "deps.finished_stages",
    "premerge_rebase_always": "merge.premerge_rebase_always",
    "merge_line_enabled": "merge.line_enabled",
    "relay_host": "relay.host",
    "relay_port": "relay.port",
    "relay_max_body": "relay.max_body_bytes",
    "relay_header_timeout_s": "relay.header_timeout_s",
    "relay_body_timeout_s": "relay.body_timeout_s",
    "relay_max_connections": "relay.max_connections",
    "plane_secret_env": "relay.plane_secret_env",
    "gitea_secret_env": "relay.gitea_secret_env",
    "relay_token_env": "relay.token_env",
    "inbox_max_attempts": "inbox.max_attempts",
    "inbox_backoff_s": "inbox.backoff_base_s",
    "reconcile_enabled": "reconcile.enabled",
    "reconcile_tracker_enabled": "reconcile.tracker_enabled",
    "reconcile_skip_blocked_enabled": "reconcile.skip_blocked_enabled",
    "reconcile_gone_enabled": "reconcile.gone_enabled",
    "grace_s": "reconcile.grace_s",
    "stage_grace_s": "reconcile.stage_grace_s",
    "tracker_check_before_effects": "tracker.check_before_effects",
    "key_prefix": "tracker.key_prefix",
    "tracker_kind": "tracker.kind",
    "forge_kind": "forge.kind",
    "notifier_kind": "notifier.kind",
    "initial_stage": "pipeline.initial",
    "max_retries": "pipeline.max_retries",
    "stages": "pipeline.stages",
    "transitions": "pipeline.transitions",
    "is_terminal": "pipeline.is_terminal",
    "transitions_from": "pipeline.transitions_from",
}


class _Integrations:
    def __init__(self, cfg: Any):
        self._cfg = cfg

    def __getattr__(self, name: str) -> Any:
        section, _, key = name.partition("_")
        if section in ("plane", "gitea", "telegram"):
            return getattr(getattr(self._cfg, section), key)
        raise AttributeError(name)


def flat(cfg: Any, name: str) -> Any:
    if name == "integrations":
        return _Integrations(cfg)
    path = FLAT.get(name)
    if path is None:
        raise AttributeError(name)
    section, key = path.split(".")
    return getattr(getattr(cfg, section), key)
