"""The records the ports and the store both speak in, below both of them.

A task is a row of the store and what every port is told about; keeping it here lets
`orch.ports` name it without depending on the store. NamedTuple, not dataclass: these
modules load on every cron run (see `orch.store.models`).
"""

from __future__ import annotations

from typing import Any, NamedTuple


class Task(NamedTuple):
    id: int
    key: str
    title: str
    repo: str
    stage: str
    version: int
    retries: int
    blocked: bool
    block_reason: str | None
    escalated: bool
    created_at: float
    updated_at: float
    waiting_on: int = 0
    tracker_ref: str | None = None  # the tracker item this task mirrors (Plane work item id)

    def as_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "title": self.title,
            "repo": self.repo,
            "stage": self.stage,
            "version": self.version,
            "retries": self.retries,
            "blocked": self.blocked,
            "block_reason": self.block_reason,
            "escalated": self.escalated,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "waiting_on": self.waiting_on,
            "tracker_ref": self.tracker_ref,
        }
