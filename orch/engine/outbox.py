"""Send what the outbox holds. Messages are committed with the change they report."""

from __future__ import annotations

from orch.engine.runtime import Runtime
from orch.errors import OrchError


def flush(rt: Runtime, limit: int = 100) -> int:
    """Send pending messages; a message is claimed before it is sent, so it goes out once."""
    sent = 0
    for n in rt.store.pending_notifications(limit):
        if not rt.store.claim_notification(n.key, now=rt.now()):
            continue  # another process took it
        try:
            rt.notifier.send(n.text)
            sent += 1
        except OrchError:
            continue  # a notifier failure never fails the caller's step
    return sent
