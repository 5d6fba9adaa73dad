"""orch's state: the only package with SQL (see docs/store.md)."""

from orch.store.db import Store
from orch.store.models import (
    Audit,
    AuditRow,
    EffectRow,
    InboxItem,
    InboxRow,
    Job,
    Lease,
    Message,
    NextJob,
    Notification,
    OutboxRow,
    StageChange,
    Task,
    Verdict,
)

__all__ = [
    "Audit",
    "AuditRow",
    "EffectRow",
    "InboxItem",
    "InboxRow",
    "Job",
    "Lease",
    "Message",
    "NextJob",
    "Notification",
    "OutboxRow",
    "StageChange",
    "Store",
    "Task",
    "Verdict",
]
