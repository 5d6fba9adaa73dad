"""Send what the outbox holds. Messages are committed with the change they report.

At least once (docs/outbox.md says why): a message is claimed (a claim that expires
after `CLAIM_S`), sent, then marked sent. A sender that dies between the send and the
mark leaves its claim to expire, and the next flush sends the message again: a rare
duplicate, never a lost message. While a claim is live no other process sends that
message, so without a crash each key goes out once. A notifier that says "later"
(RetryLater, e.g. Telegram's flood control) or fails keeps the message for a later
flush, after its delay or a backoff; a failing notifier never fails the caller's step.
"""

from __future__ import annotations

from orch import faults, log
from orch.engine.runtime import Runtime
from orch.errors import OrchError, RetryLater

BACKOFF_S = (10, 30, 60, 300, 900, 3600)


def flush(rt: Runtime, limit: int = 100) -> int:
    """Send due messages; returns how many went out."""
    sent = 0
    for n in rt.store.pending_notifications(limit, now=rt.now()):
        if not rt.store.claim_notification(n.key, now=rt.now()):
            continue  # another process took it
        try:
            rt.notifier.send(n.text)
        except RetryLater as e:
            rt.store.notification_failed(n.key, now=rt.now(), retry_at=rt.now() + e.delay, error=str(e))
            log.warning("notify_later", key=n.key, delay=e.delay)
            break  # the notifier asked us to slow down: the rest waits too
        except OrchError as e:
            attempts = _attempts(rt, n.key)
            delay = BACKOFF_S[min(attempts, len(BACKOFF_S)) - 1] if attempts else BACKOFF_S[0]
            rt.store.notification_failed(n.key, now=rt.now(), retry_at=rt.now() + delay, error=str(e))
            log.warning("notify_failed", key=n.key, error=str(e), retry_in_s=delay)
            continue
        faults.point("after_notify_sent")  # sent, not yet marked: the window at-least-once accepts
        rt.store.notification_sent(n.key, now=rt.now())
        sent += 1
    return sent


def _attempts(rt: Runtime, key: str) -> int:
    return rt.store.notification_attempts(key)
