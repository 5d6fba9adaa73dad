"""The inbox: webhook deliveries committed before they were acknowledged, processed here.

Drained in arrival order by the relay (right after the 202) and by every tick. Each
delivery is handled idempotently by `orch.engine.deliveries`: a handler only records
what the event says (a CI status for a sha) and asks `advance`, so a repeat changes nothing. A delivery that
fails is tried again with a backoff; after `[inbox] max_attempts` it is parked with its
error, visible in `orch inbox list`, until a person retries or drops it. One bad
delivery never stops the drain.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from orch import log
from orch.engine import deliveries
from orch.engine.runtime import Runtime
from orch.errors import OrchError, PermanentFailure, RetryLater
from orch.identity import is_alive
from orch.webhooks import payloads

# Headers kept with a delivery: what the parsers read. Never a signature, never a secret.
KEEP_HEADERS = (
    "x-gitea-event",
    "x-gitea-event-type",
    "x-gogs-event-type",
    "x-github-event-type",
    "x-gitea-delivery",
    "x-gogs-event",
    "x-gogs-delivery",
    "x-github-event",
    "x-github-delivery",
    "x-plane-event",
    "x-plane-delivery",
    "content-type",
)


def put(rt: Runtime, source: str, body: bytes, headers: Mapping[str, str]) -> tuple[int, bool]:
    """Store one delivery durably; returns (inbox id, stored now). Duplicates are stored once.

    The delivery is parsed first, as `source` (the endpoint whose secret verified it) and
    never as what its headers claim: `payloads.MalformedPayload` (WrongSource included)
    means it was refused and nothing was stored. What is stored therefore always parses,
    and holds no `secret` key at any depth.
    """
    event = payloads.parse_for(source, body, headers)
    lower = {k.lower(): v for k, v in headers.items()}
    kept = {k: lower[k] for k in KEEP_HEADERS if k in lower}
    digest = hashlib.sha256(body).hexdigest()
    return rt.store.inbox_put(
        source=source,
        event=payloads.kind(event),
        delivery=event.delivery,
        digest=digest,
        headers=kept,
        body=_without_secret(body),
        now=rt.now(),
    )


def _without_secret(body: bytes) -> bytes:
    """Old Gitea puts the webhook secret in the payload: never let it reach the database.

    Decided on the decoded document, whatever the key's JSON escaping (`"secr\\u0065t"`)
    and depth; the raw bytes are kept when there is nothing to remove.
    """
    data = payloads.load(body)
    if not payloads.has_secret(data):
        return body
    return json.dumps(payloads.scrub(data)).encode()


def drain(rt: Runtime, *, limit: int = 500) -> dict[str, int]:
    """Process due deliveries in arrival order. A delivery's failure (any exception) is
    recorded on that delivery, retried or parked, and the drain goes on; only the store
    failing (damaged, read-only, locked) ends the drain, with that StoreError or Busy."""
    counts = {"done": 0, "failed": 0, "parked": 0}
    for _ in range(limit):
        item = rt.store.inbox_claim(now=rt.now(), owner=rt.owner, ceiling_s=rt.config.reaper.max_running_s)
        if item is None:
            break
        try:
            result = deliveries.handle(rt, item.source, item.body, item.headers)
        except RetryLater as e:
            rt.store.inbox_failed(item.id, now=rt.now(), error=str(e), retry_at=rt.now() + e.delay)
            counts["failed"] += 1
            continue
        except Exception as e:  # one bad delivery never stops the drain
            error = f"{type(e).__name__}: {e}" if not isinstance(e, OrchError) else str(e)
            # Trying again cannot fix a malformed delivery: park it at once.
            if isinstance(e, PermanentFailure) or item.attempts >= rt.config.inbox.max_attempts:
                rt.store.inbox_failed(item.id, now=rt.now(), error=error, retry_at=None)
                counts["parked"] += 1
                log.error("inbox_parked", id=item.id, source=item.source, error=error)
            else:
                delay = rt.config.inbox.backoff_base_s * 2 ** (item.attempts - 1)
                rt.store.inbox_failed(item.id, now=rt.now(), error=error, retry_at=rt.now() + delay)
                counts["failed"] += 1
                log.warning("inbox_failed", id=item.id, source=item.source, error=error, retry_in_s=delay)
            continue
        rt.store.inbox_done(item.id, now=rt.now(), result=result)
        counts["done"] += 1
        log.info("inbox_done", id=item.id, source=item.source, kind=item.event, result=result)
    return counts


def listing(rt: Runtime, *, states: tuple[str, ...] | None = None, limit: int = 50) -> list[dict[str, Any]]:
    """Deliveries, newest first; an open one that is claimed says by whom and whether that
    process still lives (a dead claimer's delivery is taken by the next drain)."""
    rows = []
    for r in rt.store.inbox_rows(states=states, limit=limit):
        row = r.as_dict()
        row["claimed_by"] = None
        if r.claim is not None and r.claimed_at is not None and r.state in ("pending", "failed"):
            row["claimed_by"] = {**r.claim.as_dict(), "alive": is_alive(r.claim)}
        rows.append(row)
    return rows
