"""Telegram Bot API: send HTML messages without losing them to flood control or length.

The bot token is part of every URL (`/bot<TOKEN>/sendMessage`), so the token is
registered as a secret with the HTTP layer and every URL shown anywhere is redacted.

Messages are HTML (`parse_mode=HTML`), the mode that is easiest to escape: `escape_html`
for anything that came from outside. Telegram takes at most 4096 characters after entity
parsing; `split_message` cuts longer texts, preferably at line ends, never inside a tag or
an entity, and closes the tags open at a cut and reopens them in the next part, so each
part parses on its own. Should Telegram still say "message is too long", the part is
split smaller and sent again.

Every message goes out with `link_preview_options.is_disabled`: a PR or CI link would
otherwise unfold into a preview card. A group upgraded to a supergroup answers 400 with
`parameters.migrate_to_chat_id`: that is `ChatMigrated`, carrying the new id (the
notifier follows it and tells the operator).

Flood control (429) names its wait in the body (`parameters.retry_after`). A short wait is
slept through (the sleep is injectable, for tests); a long one becomes
`RetryLater(delay=...)`: the message stays in the outbox, nothing is dropped. Sends are
retried after a 5xx or a timeout although that may duplicate a message: a duplicate is
cheaper than a lost notice, and the outbox would resend it anyway.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable
from typing import Any

import httpx

from orch.adapters.http import DEFAULT_POLICY, DEFAULT_TIMEOUT, HttpCaller, RetryPolicy, header_retry_after
from orch.errors import IntegrationError, UsageError

MESSAGE_LIMIT = 4096
_MIN_SPLIT = 64  # below this, "too long" is not something splitting will fix

# An atom is the unit a split may not cut: a tag, an entity, or one character.
_ATOM = re.compile(r"<[^<>]*>|&#?[A-Za-z0-9]+;|[\s\S]")
_TAG = re.compile(r"<\s*(/?)\s*([A-Za-z][A-Za-z0-9-]*)[^<>]*>")
_ANY_TAG = re.compile(r"<[^<>]*>")

_Stack = tuple[tuple[str, str], ...]  # open tags: (name, the opening tag as written)


def escape_html(text: str, *, quote: bool = False) -> str:
    """`text` safe inside Telegram HTML; `quote=True` also for an attribute value."""
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return text.replace('"', "&quot;") if quote else text


def _units(text: str) -> int:
    """Length as Telegram counts it: UTF-16 code units."""
    return len(text.encode("utf-16-le")) // 2


def _apply(stack: _Stack, atom: str) -> _Stack:
    if not atom.startswith("<"):
        return stack
    match = _TAG.fullmatch(atom)
    if match is None:
        return stack
    name = match.group(2).lower()
    if match.group(1):
        for k in range(len(stack) - 1, -1, -1):
            if stack[k][0] == name:
                return stack[:k]
        return stack
    if atom[:-1].rstrip().endswith("/"):
        return stack
    return (*stack, (name, atom))


def _closers(stack: _Stack) -> str:
    return "".join(f"</{name}>" for name, _ in reversed(stack))


def split_message(text: str, limit: int = MESSAGE_LIMIT) -> list[str]:
    """`text` in parts of at most `limit` UTF-16 units, each one valid HTML on its own.

    Cuts at the last line break that fits, else the last space, else anywhere between two
    atoms (never inside a tag or entity). Tags open at a cut are closed at the end of the
    part and reopened at the start of the next. Parts with no visible text are dropped.
    Raises ValueError when a single tag or entity (with the tags around it) exceeds `limit`.
    """
    if limit < 1:
        raise ValueError(f"limit must be positive, not {limit}")
    if _units(text) <= limit:
        return [text]
    atoms = _ATOM.findall(text)
    parts: list[str] = []
    carried: _Stack = ()
    i, n = 0, len(atoms)
    while i < n:
        prefix = "".join(tag for _, tag in carried)
        size = _units(prefix)
        stack = carried
        line_end: tuple[int, _Stack] | None = None
        space: tuple[int, _Stack] | None = None
        j = i
        while j < n:
            atom = atoms[j]
            after = _apply(stack, atom)
            if size + _units(atom) + _units(_closers(after)) > limit:
                break
            if j > i and atom == "\n":
                line_end = (j, stack)
            elif j > i and atom == " ":
                space = (j, stack)
            stack = after
            size += _units(atom)
            j += 1
        if j == n:
            body, end, i = atoms[i:], stack, n
        elif (brk := line_end or space) is not None:
            cut, end = brk
            body, i = atoms[i:cut], cut + 1  # the break itself is dropped
        elif j > i:
            body, end, i = atoms[i:j], stack, j
        else:
            raise ValueError(f"cannot split: {atoms[i][:40]!r} does not fit in {limit} characters")
        part = prefix + "".join(body) + _closers(end)
        if _ANY_TAG.sub("", part).strip():
            parts.append(part)
        carried = end
    return parts


def _telegram_retry_after(response: httpx.Response) -> float | None:
    """Telegram names its wait in `parameters.retry_after`; fall back to `Retry-After`."""
    try:
        data = response.json()
    except ValueError:
        data = None
    if isinstance(data, dict):
        params = data.get("parameters")
        if isinstance(params, dict):
            value = params.get("retry_after")
            if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
                return float(value)
    return header_retry_after(response)


class ChatMigrated(IntegrationError):
    """The group became a supergroup: Telegram answers 400 with `migrate_to_chat_id`, and
    every message to the old id fails until the configuration names the new one."""

    def __init__(self, message: str, *, new_chat_id: int, url: str | None = None):
        super().__init__(message, url=url, status=400)
        self.new_chat_id = new_chat_id


def _migrated_to(response: httpx.Response) -> int | None:
    try:
        data = response.json()
    except ValueError:
        return None
    params = data.get("parameters") if isinstance(data, dict) else None
    value = params.get("migrate_to_chat_id") if isinstance(params, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


class TelegramClient:
    """A bot that sends HTML messages; the token never leaves this object unredacted."""

    def __init__(
        self,
        *,
        client: httpx.Client,
        token: str,
        base_url: str = "https://api.telegram.org",
        max_wait_s: float = 5.0,
        limit: int = MESSAGE_LIMIT,
        policy: RetryPolicy = DEFAULT_POLICY,
        timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ):
        if not token:
            raise UsageError("the Telegram bot token is empty")
        self.base_url = base_url.rstrip("/")
        self.limit = limit
        self._token = token
        self._http = HttpCaller(
            client=client,
            secrets=(token,),
            policy=policy._replace(max_wait=max_wait_s),
            timeout=timeout,
            sleep=sleep,
            clock=clock,
            retry_after=_telegram_retry_after,
        )

    def __repr__(self) -> str:
        return f"TelegramClient(base_url={self.base_url!r}, token='***')"

    def bot_key(self) -> str:
        """A name for this bot in shared state: a digest, never the token itself."""
        return hashlib.sha256(f"{self.base_url}\n{self._token}".encode()).hexdigest()[:16]

    def send_message(
        self,
        chat_id: int | str,
        text: str,
        *,
        thread_id: int | None = None,
        disable_notification: bool = False,
    ) -> list[int]:
        """Send `text` (HTML) as one or more messages; returns their message ids in order.

        Raises RetryLater when Telegram asks for a longer wait than `max_wait_s` (parts sent
        before that stay sent), ChatMigrated when the chat is now a supergroup with another
        id (nothing sent), IntegrationError for any other failure.
        """
        if not _ANY_TAG.sub("", text).strip():
            raise UsageError("refusing to send an empty Telegram message")
        try:
            parts = split_message(text, self.limit)
        except ValueError as exc:
            raise UsageError(f"cannot split the message: {exc}") from None
        ids: list[int] = []
        for part in parts:
            ids.extend(self._send(chat_id, part, thread_id, disable_notification))
        return ids

    def get_me(self) -> str:
        """The bot's username: the cheapest call that proves the token (`orch config check --online`)."""
        url = f"{self.base_url}/bot{self._token}/getMe"
        response = self._http.request("GET", url, idempotent=True)
        data = self._http.json(response)
        result = data.get("result") if isinstance(data, dict) else None
        if not isinstance(result, dict):
            raise self._http.error(response, note="Telegram did not answer ok")
        return str(result.get("username") or "?")

    def get_chat(self, chat_id: int | str) -> str:
        """The chat's title (or username): proves the bot can see the chat. Raises
        ChatMigrated when the group became a supergroup (the answer names the new id)."""
        url = f"{self.base_url}/bot{self._token}/getChat"
        response = self._http.request("POST", url, json={"chat_id": chat_id}, accept=(400,), idempotent=True)
        if response.status_code == 400:
            self._raise_migrated(response, chat_id)
            raise self._http.error(response)
        data = self._http.json(response)
        result = data.get("result") if isinstance(data, dict) else None
        if not isinstance(result, dict):
            raise self._http.error(response, note="Telegram did not answer ok")
        return str(result.get("title") or result.get("username") or result.get("id") or "?")

    def _raise_migrated(self, response: httpx.Response, chat_id: int | str) -> None:
        new = _migrated_to(response)
        if new is not None:
            raise ChatMigrated(
                f"Telegram chat {chat_id} became a supergroup: its id is now {new} "
                f'(set [telegram] chat_id = "{new}")',
                new_chat_id=new,
                url=self._http.redact(response.request.url),
            )

    def _send(self, chat_id: int | str, text: str, thread_id: int | None, silent: bool) -> list[int]:
        # PR and CI links would each unfold into a preview card: keep messages one line.
        payload: dict[str, Any] = {
            "chat_id": chat_id,
            "text": text,
            "parse_mode": "HTML",
            "link_preview_options": {"is_disabled": True},
        }
        if thread_id is not None:
            payload["message_thread_id"] = thread_id
        if silent:
            payload["disable_notification"] = True
        url = f"{self.base_url}/bot{self._token}/sendMessage"
        response = self._http.request("POST", url, json=payload, accept=(400,), idempotent=True)
        if response.status_code == 400:
            self._raise_migrated(response, chat_id)
            if "too long" not in self._http.excerpt(response).lower():
                raise self._http.error(response)
            smaller = min(self.limit, _units(text)) // 2
            if smaller < _MIN_SPLIT:
                raise self._http.error(response, note="too long even after splitting")
            try:
                parts = split_message(text, smaller)
            except ValueError as exc:
                raise self._http.error(response, note=f"cannot split further: {exc}") from None
            ids: list[int] = []
            for part in parts:
                ids.extend(self._send(chat_id, part, thread_id, silent))
            return ids
        data = self._http.json(response)
        result = data.get("result") if isinstance(data, dict) else None
        if not isinstance(data, dict) or data.get("ok") is not True or not isinstance(result, dict):
            raise self._http.error(response, note="Telegram did not answer ok")
        message_id = result.get("message_id")
        if isinstance(message_id, bool) or not isinstance(message_id, int):
            raise IntegrationError(
                f"Telegram answered ok without a message_id ({message_id!r})",
                url=self._http.redact(url),
                status=response.status_code,
            )
        return [message_id]
