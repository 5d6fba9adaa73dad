"""What every HTTP adapter shares: timeouts, bounded retries, redaction, one error type.

orch runs from cron and must not hang on a slow tracker, so every request carries a
timeout and every retry loop is bounded twice: by a number of attempts and by a total
time. What is worth retrying is retried in place (429, most 5xx, connection errors and
timeouts) with exponential backoff and jitter; a 429 whose `Retry-After` is longer than we
are willing to wait becomes `RetryLater(delay=...)`, so the runner records "try again at"
instead of blocking. A request that may already have had its effect (a POST that timed
out while reading, or answered 5xx) is retried only when the caller says it is safe.

Everything else becomes `IntegrationError(message, url=..., status=...)`. Its message
names the method, the URL and the status and quotes a short piece of the server's error
body, so `orch` can print it as it is. Secrets never get that far: URLs pass through
`redact` (Telegram keeps the bot token in the path, some APIs take `?token=`), and any text
taken from a server or from an httpx exception is scrubbed of the secrets the adapter
registered. httpx itself logs each request URL at INFO; a filter on its logger redacts
those too.
"""

from __future__ import annotations

import email.utils
import json
import logging
import random
import re
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, NamedTuple
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import httpx

from orch.errors import IntegrationError, RetryLater

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = httpx.Timeout(10.0, connect=5.0)
"""Per request: 5 s to connect, 10 s for each read/write/pool wait."""

MASK = "***"

# A query parameter whose name contains one of these carries a secret.
_SECRET_PARAM = re.compile(
    r"token|key|secret|passw|signature|credential|^auth(?:orization)?$|^sig$", re.IGNORECASE
)
# Telegram bot tokens look like `123456789:AA...`; they appear in the path as `/bot<TOKEN>/`.
# A `/bot...` segment is masked when it holds a colon or has the Bot API shape
# `/bot<TOKEN>/<method>` (masking a harmless `/bottles/list` too is the cheap mistake).
_BOT_PATH = re.compile(r"/bot[^/?#]*:[^/?#]*|/bot[^/?#]+(?=/[A-Za-z]+/?$)", re.IGNORECASE)
_BOT_TOKEN = re.compile(r"(?<![A-Za-z0-9])(bot)?\d{5,}:[A-Za-z0-9_-]{20,}")

# Methods that can be sent twice without a second effect (RFC 9110 9.2.2), plus PATCH,
# which orch only uses to set a field to a value.
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "PATCH"})
# 501 and 505 say "never", not "not now".
_PERMANENT_5XX = frozenset({501, 505})
_EXCERPT_CHARS = 200


class RetryPolicy(NamedTuple):
    """How hard to try before giving up; all times in seconds."""

    attempts: int = 4  # tries in all, the first included
    base_delay: float = 0.5  # first backoff; doubles per retry
    max_delay: float = 8.0  # cap on one backoff sleep
    max_wait: float = 10.0  # longest Retry-After slept through; longer -> RetryLater
    total_time: float = 30.0  # no new attempt starts after this, sleeps included

    def backoff(self, retry: int, rng: random.Random) -> float:
        """Delay before retry number `retry` (1-based): exponential, capped, half of it jittered."""
        ceiling = min(self.max_delay, self.base_delay * (2 ** (retry - 1)))
        return ceiling / 2 + rng.uniform(0, ceiling / 2)


DEFAULT_POLICY = RetryPolicy()


# -- redaction -----------------------------------------------------------------------------


def redact(url: str | httpx.URL, *, secrets: Iterable[str] = ()) -> str:
    """`url` with credentials removed: userinfo, `/bot<TOKEN>` path segments, secret-named
    query parameters (token, api_key, secret, ...) and any of `secrets` wherever they occur.
    """
    text = str(url)
    try:
        parts = urlsplit(text)
    except ValueError:
        return scrub(text, secrets)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        user = userinfo.split(":", 1)[0] if ":" in userinfo else ""
        netloc = f"{user}:{MASK}@{host}" if user else f"{MASK}@{host}"
    path = _BOT_PATH.sub("/bot" + MASK, parts.path)
    query = "&".join(_redact_param(p) for p in parts.query.split("&")) if parts.query else ""
    fragment = MASK if parts.fragment and _SECRET_PARAM.search(parts.fragment) else parts.fragment
    return scrub(urlunsplit((parts.scheme, netloc, path, query, fragment)), secrets)


def _redact_param(pair: str) -> str:
    name, sep, value = pair.partition("=")
    if sep and value and _SECRET_PARAM.search(unquote(name)):
        return f"{name}={MASK}"
    return pair


def scrub(text: str, secrets: Iterable[str] = ()) -> str:
    """`text` with every one of `secrets` (raw or percent-encoded) and anything shaped like a
    Telegram bot token replaced by `***`. Secrets shorter than 4 characters are ignored:
    masking them would mangle ordinary words and hide nothing worth hiding.
    """
    for secret in secrets:
        if len(secret) < 4:
            continue
        text = text.replace(secret, MASK)
        encoded = quote(secret, safe="")
        if encoded != secret:
            text = text.replace(encoded, MASK)
    return _BOT_TOKEN.sub(lambda m: (m.group(1) or "") + MASK, text)


class _RedactHttpxLog(logging.Filter):
    """httpx logs `HTTP Request: POST <url> ...` at INFO: redact the URL before it is written."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                redact(a) if isinstance(a, httpx.URL) else scrub(a) if isinstance(a, str) else a
                for a in record.args
            )
        if isinstance(record.msg, str):
            record.msg = scrub(record.msg)
        return True


def _install_log_redaction() -> None:
    logger = logging.getLogger("httpx")
    if not any(isinstance(f, _RedactHttpxLog) for f in logger.filters):
        logger.addFilter(_RedactHttpxLog())


_install_log_redaction()


# -- responses -----------------------------------------------------------------------------


def error_excerpt(
    response: httpx.Response, *, secrets: Iterable[str] = (), limit: int = _EXCERPT_CHARS
) -> str:
    """A short, secret-free piece of an error body: the JSON `message`/`description`/`detail`/
    `error` when there is one, else the text with whitespace collapsed, cut at `limit`.
    """
    try:
        raw = response.text
    except Exception:  # undecodable or unread body: say nothing rather than fail the error path
        return ""
    text = raw
    try:
        data = json.loads(raw)
    except ValueError:
        data = None
    if isinstance(data, dict):
        for key in ("message", "description", "detail", "error", "errors"):
            value = data.get(key)
            if value:
                text = value if isinstance(value, str) else json.dumps(value)
                break
    text = " ".join(text.split())
    text = scrub(text, secrets)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def header_retry_after(response: httpx.Response) -> float | None:
    """Seconds from a `Retry-After` header (delta-seconds or an HTTP date), or None."""
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def json_body(response: httpx.Response, *, secrets: Iterable[str] = ()) -> Any:
    """The decoded JSON body; a body that is not JSON is an IntegrationError, not a ValueError."""
    try:
        return response.json()
    except ValueError:
        url = redact(response.request.url, secrets=secrets)
        raise IntegrationError(
            f"{response.request.method} {url} -> {response.status_code}: expected JSON, got "
            f"{error_excerpt(response, secrets=secrets, limit=80)!r}",
            url=url,
            status=response.status_code,
        ) from None


def status_error(
    response: httpx.Response, *, secrets: Iterable[str] = (), note: str = ""
) -> IntegrationError:
    """The IntegrationError for an answer the adapter did not expect."""
    request = response.request
    url = redact(request.url, secrets=secrets)
    reason = response.reason_phrase or ""
    excerpt = error_excerpt(response, secrets=secrets)
    message = f"{request.method} {url} -> {response.status_code} {reason}".rstrip()
    if excerpt:
        message += f": {excerpt}"
    if note:
        message += f" ({note})"
    return IntegrationError(message, url=url, status=response.status_code)


def _retryable_status(status: int) -> bool:
    return status == 429 or (status >= 500 and status not in _PERMANENT_5XX)


def _unsent(exc: httpx.TransportError) -> bool:
    """True when the request cannot have reached the server (safe to resend any method)."""
    return isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout)


def _transient(exc: httpx.TransportError) -> bool:
    return isinstance(exc, httpx.TimeoutException | httpx.NetworkError | httpx.RemoteProtocolError)


# -- the caller ----------------------------------------------------------------------------


class HttpCaller:
    """Sends requests through a caller-owned `httpx.Client` with timeouts and bounded retries.

    `secrets` are scrubbed from every URL and message this object produces. `retry_after`
    reads the wait out of a 429 (Telegram keeps it in the JSON body). `on_attempt` runs
    before every real request, retries included; it may raise (a request budget does).
    `on_response` sees every response received, 429s slept through included (a shared
    rate limit records the server's wait there).
    """

    def __init__(
        self,
        *,
        client: httpx.Client,
        secrets: Iterable[str] = (),
        policy: RetryPolicy = DEFAULT_POLICY,
        timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        retry_after: Callable[[httpx.Response], float | None] = header_retry_after,
        on_attempt: Callable[[], None] | None = None,
        on_response: Callable[[httpx.Response], None] | None = None,
    ):
        if policy.attempts < 1:
            raise ValueError("RetryPolicy.attempts must be at least 1")
        self.client = client
        self._secrets = tuple(s for s in secrets if s)
        self.policy = policy
        self.timeout = timeout
        self.sleep = sleep
        self.clock = clock
        self.rng = rng or random.Random()
        self.retry_after = retry_after
        self.on_attempt = on_attempt
        self.on_response = on_response

    def __repr__(self) -> str:
        return f"HttpCaller(policy={self.policy!r}, secrets={len(self._secrets)} hidden)"

    def redact(self, url: str | httpx.URL) -> str:
        return redact(url, secrets=self._secrets)

    def scrub(self, text: str) -> str:
        return scrub(text, self._secrets)

    def json(self, response: httpx.Response) -> Any:
        return json_body(response, secrets=self._secrets)

    def error(self, response: httpx.Response, note: str = "") -> IntegrationError:
        return status_error(response, secrets=self._secrets, note=note)

    def excerpt(self, response: httpx.Response) -> str:
        return error_excerpt(response, secrets=self._secrets)

    def request(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str | int] | None = None,
        json: Any = None,
        accept: Collection[int] = (),
        idempotent: bool | None = None,
    ) -> httpx.Response:
        """Send and return the response when it is 2xx or its status is in `accept`.

        Retries 429, 5xx, connection errors and timeouts within the policy. `idempotent`
        (default: by method) decides whether a request that may have reached the server
        (read timeout, 5xx) is sent again; one that never left (connect error, 429) always
        may be. Raises RetryLater for a 429 that asks for a longer wait than the policy
        allows, IntegrationError for everything else that is not accepted.
        """
        method = method.upper()
        safe = method in IDEMPOTENT_METHODS if idempotent is None else idempotent
        policy = self.policy
        deadline = self.clock() + policy.total_time
        shown = self.redact(url)
        attempt = 0
        while True:
            attempt += 1
            if self.on_attempt is not None:
                self.on_attempt()
            try:
                response = self.client.request(
                    method, url, headers=headers, params=params, json=json, timeout=self.timeout
                )
            except httpx.TransportError as exc:
                shown = self.redact(exc.request.url) if _has_request(exc) else shown
                may_retry = _unsent(exc) or (safe and _transient(exc))
                delay = policy.backoff(attempt, self.rng)
                detail = f"{type(exc).__name__}: {self.scrub(str(exc)) or 'no detail'}"
                if may_retry and self._can_retry(attempt, delay, deadline):
                    log.info("%s %s failed (%s); retry %d in %.2fs", method, shown, detail, attempt, delay)
                    self.sleep(delay)
                    continue
                tries = f" after {attempt} attempts" if attempt > 1 else ""
                raise IntegrationError(
                    f"{method} {shown} failed{tries}: {detail}", url=shown, status=None
                ) from None
            except httpx.HTTPError as exc:  # not a transport problem: a bad URL, too many redirects
                detail = f"{type(exc).__name__}: {self.scrub(str(exc))}"
                raise IntegrationError(f"{method} {shown} failed: {detail}", url=shown, status=None) from None

            if self.on_response is not None:
                self.on_response(response)
            status = response.status_code
            if 200 <= status < 300 or status in accept:
                return response
            if status == 429:
                wait = self.retry_after(response)
                delay = wait if wait is not None else policy.backoff(attempt, self.rng)
                if wait is not None and wait > policy.max_wait:
                    raise RetryLater(
                        f"{method} {shown} -> 429: asked to wait {wait:g}s, more than {policy.max_wait:g}s",
                        delay=wait,
                    )
                if self._can_retry(attempt, delay, deadline):
                    log.info("%s %s -> 429; retry %d in %.2fs", method, shown, attempt, delay)
                    self.sleep(delay)
                    continue
                raise RetryLater(
                    f"{method} {shown} -> 429 after {attempt} attempts: {self.excerpt(response)}",
                    delay=delay,
                )
            if _retryable_status(status) and safe:
                delay = policy.backoff(attempt, self.rng)
                if self._can_retry(attempt, delay, deadline):
                    log.info("%s %s -> %d; retry %d in %.2fs", method, shown, status, attempt, delay)
                    self.sleep(delay)
                    continue
            note = f"after {attempt} attempts" if attempt > 1 else ""
            raise self.error(response, note=note)

    def _can_retry(self, attempt: int, delay: float, deadline: float) -> bool:
        return attempt < self.policy.attempts and self.clock() + delay <= deadline


def _has_request(exc: httpx.TransportError) -> bool:
    try:
        exc.request  # noqa: B018 - the property raises when httpx had no request to attach
    except RuntimeError:
        return False
    return True
