"""Rows as named tuples: what the store hands to the engine.

NamedTuple, not dataclass: a frozen dataclass costs ~0.8 ms to define (it execs its
generated methods), and these modules load on every cron run.
"""

from __future__ import annotations

import json
from typing import Any, NamedTuple

from orch.identity import Owner
from orch.records import Task

__all__ = [
    "Audit",
    "AuditRow",
    "EffectRow",
    "InboxItem",
    "InboxRow",
    "Job",
    "Lease",
    "Notification",
    "OutboxRow",
    "Task",
    "Verdict",
]


class Lease(NamedTuple):
    name: str
    owner: Owner
    actor: str
    purpose: str
    acquired_at: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "owner": self.owner.as_dict(),
            "actor": self.actor,
            "purpose": self.purpose,
            "acquired_at": self.acquired_at,
        }


class EffectRow(NamedTuple):
    task_id: int
    transition: str
    effect: str
    state: str
    attempts: int
    owner: Owner
    started_at: float
    ended_at: float | None
    result: str | None
    proc_pid: int | None = None  # the effect command's process, while it may run
    proc_pgid: int | None = None
    proc_start: str | None = None
    acting: bool = False  # past the point of no return (see schema v7)


class Job(NamedTuple):
    id: int
    task_id: int
    agent: str
    stage: str
    task_version: int
    attempt: int
    state: str
    priority: int
    queued_at: float
    started_at: float | None
    ended_at: float | None
    deadline: float | None
    owner: Owner | None
    pgid: int | None
    pgid_start: str | None
    exit_code: int | None
    reason: str | None
    log_path: str | None
    head_sha: str | None
    ready: bool
    not_before: float
    note: str | None

    def as_dict(self) -> dict[str, Any]:
        d = self._asdict()
        d["owner"] = self.owner.as_dict() if self.owner else None
        return d


class Verdict(NamedTuple):
    task_id: int
    task_version: int
    stage: str
    sha: str | None
    verdict: str
    actor: str
    reason: str | None
    at: float


class AuditRow(NamedTuple):
    id: int
    at: float
    actor: str
    event: str
    from_stage: str | None
    to_stage: str | None
    detail: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "at": self.at,
            "actor": self.actor,
            "event": self.event,
            "from": self.from_stage,
            "to": self.to_stage,
            "detail": self.detail,
        }


class Notification(NamedTuple):
    key: str
    task_id: int | None
    text: str
    created_at: float


class OutboxRow(NamedTuple):
    """A message in the outbox, sent or not (`orch outbox`, tests)."""

    key: str
    task_id: int | None
    text: str
    created_at: float
    sent_at: float | None
    attempts: int
    next_at: float
    last_error: str | None


class InboxItem(NamedTuple):
    """A delivery claimed for processing: what the drain needs to handle it."""

    id: int
    source: str
    event: str
    delivery: str | None
    digest: str
    headers: dict[str, str]
    body: bytes
    received_at: float
    state: str
    attempts: int  # this claim included
    error: str | None
    claim: Owner | None  # who claimed it: this process


class InboxRow(NamedTuple):
    """A delivery as `orch inbox list` shows it (no body), with who holds its claim."""

    id: int
    source: str
    event: str
    delivery: str | None
    received_at: float
    state: str
    attempts: int
    next_at: float
    error: str | None
    result: str | None
    processed_at: float | None
    claimed_at: float | None
    claim: Owner | None  # the claimer recorded with the claim (None: unclaimed, or from before v9)

    def as_dict(self) -> dict[str, Any]:
        d = self._asdict()
        claim = d.pop("claim")
        d["claimed_by"] = claim.as_dict() if claim is not None and self.claimed_at is not None else None
        return d


class Audit(NamedTuple):
    """An audit row to write, inside whatever transaction writes the change it reports."""

    task_id: int
    actor: str
    event: str
    detail: dict[str, Any]
    from_stage: str | None = None
    to_stage: str | None = None

    def detail_json(self) -> str:
        return json.dumps(self.detail, sort_keys=True, default=str)


class NextJob(NamedTuple):
    """The agent job a transition queues for the stage it enters (at the new version)."""

    agent: str
    note: str | None = None


class Message(NamedTuple):
    """An outbox message to queue; `key` names the change it reports (sent once, ever)."""

    key: str
    text: str


class StageChange(NamedTuple):
    """A stage move to commit by compare-and-swap, with the follow-ups that commit with it
    (built by engine/transition.py, written by `Store.commit_transition`)."""

    task_id: int
    from_stage: str
    to_stage: str
    expected_version: int
    retry: bool  # the move counts as a retry: retries + 1
    audit: Audit
    message: Message | None = None  # the engine always tells: `task:KEY:vN`
    job: NextJob | None = None  # not queued when the move escalates
    escalation: str | None = None  # block the task as escalated, with this reason
    # The move finishes the task: the tasks waiting on it are released, each told this
    # message, a template over {waiter} (the released task's key) and {key} (this one's).
    release: Message | None = None

    @property
    def version(self) -> int:
        """The task's version once the move is committed."""
        return self.expected_version + 1
