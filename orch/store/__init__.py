"""SQLite storage: the only package with SQL."""

from orch.store.db import Store
from orch.store.models import (
    Audit,
    AuditRow,
    EffectRow,
    Job,
    Lease,
    Message,
    NextJob,
    Notification,
    StageChange,
    Task,
    Verdict,
)

__all__ = [
    "Audit",
    "AuditRow",
    "EffectRow",
    "Job",
    "Lease",
    "Message",
    "NextJob",
    "Notification",
    "StageChange",
    "Store",
    "Task",
    "Verdict",
]
