"""The Store interface: everything the engine, the app and the adapters may ask of orch's
state, whatever the backend (SQLite by default, PostgreSQL for several hosts).

`orch.store.Store` implements it over any `backend.Database`; `tests/store_contract.py`
is the suite that says what each method must do, and every backend runs it. The engine's
`Runtime.store` is typed with this protocol, so a method the engine starts to use must be
declared here (and specified in the contract) first.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from orch.identity import Owner
from orch.store.models import (
    Audit,
    AuditRow,
    EffectRow,
    InboxItem,
    InboxRow,
    Job,
    Lease,
    Notification,
    OutboxRow,
    StageChange,
    Task,
    Verdict,
)


class StoreProtocol(Protocol):
    """orch's state: tasks and their one write path, leases, the ledger, jobs, deps,
    the inbox and outbox, and what orch remembers for its adapters."""

    def schema_version(self) -> int: ...

    def integrity(self) -> str: ...

    def close(self) -> None: ...

    # -- tasks and the stage compare-and-swap --

    def add_task(
        self,
        *,
        title: str,
        repo: str,
        stage: str,
        now: float,
        key: str | None,
        key_prefix: str,
        actor: str,
        agent: str | None = ...,
    ) -> Task: ...

    def get_task(self, key: str) -> Task | None: ...

    def get_task_by_id(self, task_id: int) -> Task | None: ...

    def list_tasks(self, *, stage: str | None = ..., limit: int = ...) -> list[Task]: ...

    def quiet_tasks(self, stages: tuple[str, ...], *, older_than: float, limit: int = ...) -> list[Task]: ...

    def quiet_count(self, stage: str, *, older_than: float) -> int: ...

    def set_blocked(
        self,
        task_id: int,
        *,
        blocked: bool,
        reason: str | None,
        now: float,
        audit: Audit,
        notify: tuple[str, str] | None = ...,
        escalated: bool | None = ...,
        reset_retries: bool = ...,
    ) -> bool: ...

    def commit_transition(
        self, change: StageChange, *, now: float, unless_in_flight: Callable[[EffectRow], bool] | None = ...
    ) -> bool: ...

    def task_for_ref(self, ref: str) -> Task | None: ...

    def ensure_task_for_ref(
        self,
        *,
        ref: str,
        key: str,
        title: str,
        repo: str,
        stage: str,
        now: float,
        actor: str,
        agent: str | None,
    ) -> tuple[Task, bool]: ...

    def counts(self) -> dict[str, Any]: ...

    # -- the audit trail --

    def audit(self, a: Audit, *, now: float) -> None: ...

    def history(self, task_id: int) -> list[AuditRow]: ...

    def count_events(self, task_id: int, event: str) -> int: ...

    # -- leases and the merge line --

    def get_lease(self, name: str) -> Lease | None: ...

    def list_leases(self) -> list[Lease]: ...

    def acquire_lease(
        self,
        name: str,
        *,
        owner: Owner,
        actor: str,
        purpose: str,
        now: float,
        audit_task: int | None = ...,
        alive: Callable[[Owner], bool] = ...,
        detail: dict[str, Any] | None = ...,
    ) -> tuple[bool, Lease | None]: ...

    def release_lease(
        self, name: str, *, owner: Owner | None, now: float, audit: Audit | None = ...
    ) -> bool: ...

    def dead_leases(self, names: tuple[str, ...], alive: Callable[[Owner], bool] = ...) -> list[Lease]: ...

    def clear_dead_lease(
        self,
        name: str,
        *,
        actor: str,
        now: float,
        audit_task: int | None,
        alive: Callable[[Owner], bool] = ...,
    ) -> Lease | None: ...

    def take_merge_line(
        self, repo: str, *, task_id: int, stage: str, version: int, now: float, max_age_s: float
    ) -> int | None: ...

    def merge_line_holder(self, repo: str) -> tuple[int, int, float] | None: ...

    # -- the effect ledger --

    def get_effect(self, task_id: int, transition: str, effect: str) -> EffectRow | None: ...

    def effects_of(self, task_id: int) -> list[EffectRow]: ...

    def started_effects(self) -> list[EffectRow]: ...

    def start_effect(
        self,
        task_id: int,
        transition: str,
        effect: str,
        *,
        owner: Owner,
        now: float,
        seen: EffectRow | None,
        stage: str,
        version: int,
        acting: bool = ...,
    ) -> tuple[str, EffectRow | None]: ...

    def set_effect_process(
        self,
        task_id: int,
        transition: str,
        effect: str,
        *,
        owner: Owner,
        pid: int,
        pgid: int,
        start: str | None,
    ) -> bool: ...

    def mark_effect_acting(
        self, task_id: int, transition: str, effect: str, *, owner: Owner, stage: str, version: int
    ) -> bool: ...

    def end_effect(
        self,
        task_id: int,
        transition: str,
        effect: str,
        *,
        state: str,
        result: dict[str, Any],
        now: float,
        audit: Audit,
        seen: EffectRow | None = ...,
        owner: Owner | None = ...,
    ) -> bool: ...

    # -- jobs --

    def enqueue_job(
        self,
        *,
        task_id: int,
        agent: str,
        stage: str,
        task_version: int,
        now: float,
        attempt: int = ...,
        not_before: float = ...,
        note: str | None = ...,
        audit: Audit | None = ...,
    ) -> Job | None: ...

    def claim_job(
        self,
        *,
        owner: Owner,
        now: float,
        log_dir: Path,
        max_running: int,
        agent_limits: dict[str, int] | None = ...,
        deps_enabled: bool = ...,
        job_id: int | None = ...,
        timeouts: dict[str, float] | None = ...,
    ) -> Job | None: ...

    def claimable_count(self, *, now: float, deps_enabled: bool = ...) -> int: ...

    def running_count(self) -> int: ...

    def finish_job(
        self,
        job_id: int,
        *,
        state: str,
        exit_code: int | None,
        reason: str,
        now: float,
        head_sha: str | None,
        audit: Audit,
        owner: Owner | None = ...,
    ) -> bool: ...

    def set_job_process(self, job_id: int, *, pgid: int, pgid_start: str | None) -> None: ...

    def get_job(self, job_id: int) -> Job | None: ...

    def latest_job(self, task_id: int, agent: str, task_version: int) -> Job | None: ...

    def jobs(self, *, task_id: int | None = ..., states: tuple[str, ...] | None = ...) -> list[Job]: ...

    def active_job(self, task_id: int) -> Job | None: ...

    # -- dependencies and readiness --

    def add_dep(
        self,
        task_id: int,
        on_task_id: int,
        *,
        unfinished: bool,
        now: float,
        audit: Audit,
        notification: tuple[str, str] | None,
    ) -> list[int] | None: ...

    def remove_dep(
        self, task_id: int, on_task_id: int, *, unfinished: bool, now: float, audit: Audit
    ) -> bool: ...

    def deps_edges(self) -> list[tuple[int, int]]: ...

    def deps_of(self, task_id: int) -> list[Task]: ...

    def dependents_of(self, task_id: int) -> list[Task]: ...

    def waiting_tasks(self) -> list[Task]: ...

    def recount_waiting(self, finished_stages: tuple[str, ...], now: float) -> int: ...

    def unfinished_edges(self, finished_stages: tuple[str, ...]) -> list[tuple[int, int]]: ...

    # -- verdicts, commit statuses, caches, budgets, holds, facts --

    def add_verdict(self, v: Verdict, *, audit: Audit) -> None: ...

    def latest_verdict(self, task_id: int, task_version: int) -> Verdict | None: ...

    def set_commit_status(
        self, *, repo: str, sha: str, context: str, state: str, description: str | None, now: float
    ) -> None: ...

    def commit_statuses(self, repo: str, sha: str) -> list[tuple[str, str, str | None]]: ...

    def cache_states(self, project: str, states: list[tuple[str, str, str]], *, now: float) -> None: ...

    def cached_states(self, project: str) -> tuple[list[tuple[str, str, str]], float | None]: ...

    def rate_take(self, bucket: str, window: int, limit: int, *, prev_weight: float = ...) -> bool: ...

    def rate_used(self, bucket: str, window: int) -> int: ...

    def hold_set(
        self, name: str, *, until: float, value: str | None = ..., reason: str | None = ...
    ) -> None: ...

    def hold_get(self, name: str) -> tuple[float, str | None] | None: ...

    def set_fact(self, name: str, value: Any, *, now: float) -> None: ...

    def fact(self, name: str) -> tuple[Any, float] | None: ...

    def facts_since(self, prefix: str, since: float) -> dict[str, tuple[Any, float]]: ...

    # -- the outbox --

    def notify(self, key: str, task_id: int | None, text: str, *, now: float) -> None: ...

    def pending_notifications(self, limit: int = ..., *, now: float | None = ...) -> list[Notification]: ...

    def claim_notification(self, key: str, *, now: float) -> bool: ...

    def notification_attempts(self, key: str) -> int: ...

    def notification_sent(self, key: str, *, now: float) -> None: ...

    def notification_failed(self, key: str, *, now: float, retry_at: float, error: str) -> None: ...

    def outbox_rows(self, *, pending_only: bool = ..., limit: int = ...) -> list[OutboxRow]: ...

    # -- the inbox --

    def inbox_put(
        self,
        *,
        source: str,
        event: str,
        delivery: str | None,
        digest: str,
        headers: dict[str, str],
        body: bytes,
        now: float,
    ) -> tuple[int, bool]: ...

    def inbox_claim(
        self, *, now: float, owner: Owner | None = ..., claim_s: float = ..., ceiling_s: float = ...
    ) -> InboxItem | None: ...

    def inbox_release_claims(self, owner: Owner) -> int: ...

    def inbox_done(self, item_id: int, *, now: float, result: str) -> None: ...

    def inbox_failed(self, item_id: int, *, now: float, error: str, retry_at: float | None) -> None: ...

    def inbox_set(self, item_id: int, *, state: str, now: float) -> bool: ...

    def inbox_rows(self, *, states: tuple[str, ...] | None = ..., limit: int = ...) -> list[InboxRow]: ...

    def inbox_count(self) -> dict[str, int]: ...
