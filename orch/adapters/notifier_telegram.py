"""The Telegram notifier: the outbox's messages as Telegram messages.

orch composes its messages as plain text, so every one is HTML-escaped before it goes
out (`<`, `>` and `&` show as themselves) and cut into parts of at most 4096 characters.
What the outbox needs to hear is passed on as it is: `RetryLater(delay=...)` when
Telegram's flood control asks for a longer wait than the client will sleep through (the
outbox keeps the message and tries again after `delay`), `IntegrationError` for any other
failure (the outbox backs off). Neither carries the bot token: the client scrubs it.

A long message whose later part hits flood control resumes where it stopped when the
outbox hands the same text back to this object, so its earlier parts are not sent twice.
That memory lives in the process only; a resend from another process starts over, which
the outbox's at-least-once promise allows.

Given a store, two things outlive the process, because every orch run is a new one:
- flood control: a wait Telegram asked for is recorded (`holds`), and until it is over no
  process sends to this bot: each raises RetryLater at once, without a request;
- a migrated chat: when a group became a supergroup, Telegram answers with its new id;
  the message is sent there, the new id is recorded so later runs send there directly,
  and the operator is told (a warning on every run, and once in the chat) which
  `[telegram] chat_id` to configure.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING

from orch import log
from orch.adapters.telegram import ChatMigrated, TelegramClient, escape_html, split_message
from orch.errors import RetryLater, UsageError

if TYPE_CHECKING:
    from orch.store import Store

_FOREVER = 1e18  # a hold that records a fact, not a wait

_RESUME_SLOTS = 64  # long messages half-sent at once; more is a flood we should not hoard


class TelegramNotifier:
    """Sends plain-text messages to one chat (and topic) through a `TelegramClient`."""

    def __init__(
        self,
        *,
        client: TelegramClient,
        chat_id: str,
        thread_id: int | None = None,
        disable_notification: bool = False,
        store: Store | None = None,
        clock: Callable[[], float] = time.time,
    ):
        if not str(chat_id).strip():
            raise UsageError("the Telegram chat_id is empty")
        self.client = client
        self.chat_id = chat_id
        self.thread_id = thread_id
        self.disable_notification = disable_notification
        self.store = store
        self.clock = clock
        self._sent_parts: OrderedDict[str, int] = OrderedDict()
        # Holds are per bot (flood control) and per configured chat (its migration); the
        # token is a secret, so only a digest of it names the hold.
        bot = client.bot_key()
        self._flood_hold = f"telegram:{bot}:flood"
        self._migrated_hold = f"telegram:{bot}:chat:{chat_id}"
        self._warned = False

    def __repr__(self) -> str:
        return (
            f"TelegramNotifier(chat_id={self.chat_id!r}, thread_id={self.thread_id!r}, "
            f"client={self.client!r})"
        )

    def send(self, text: str) -> None:
        """Send `text` as one or more messages, in order.

        Raises RetryLater (flood control beyond the client's max wait) or IntegrationError.
        """
        if not text.strip():
            # Telegram refuses an empty message with a 400 forever; retrying cannot help.
            log.warning("notify_skipped", notifier="telegram", reason="empty message")
            return
        parts = split_message(escape_html(text), self.client.limit)
        self._honour_flood_hold()
        chat = self._chat()
        done = self._sent_parts.pop(text, 0)
        for i in range(done, len(parts)):
            try:
                try:
                    self._send(chat, parts[i])
                except ChatMigrated as e:
                    chat = self._migrated(e)
                    self._send(chat, parts[i])
            except RetryLater as e:
                self._record_flood(e)
                if i:
                    self._remember(text, i)
                raise
            except Exception:  # IntegrationError: the outbox decides when to resend
                if i:
                    self._remember(text, i)
                raise

    def _send(self, chat: str, part: str) -> None:
        self.client.send_message(
            chat, part, thread_id=self.thread_id, disable_notification=self.disable_notification
        )

    def _chat(self) -> str:
        """The configured chat, or the supergroup it became (as recorded by an earlier run)."""
        if self.store is None:
            return self.chat_id
        hold = self.store.hold_get(self._migrated_hold)
        if hold is None or not hold[1]:
            return self.chat_id
        self._tell_operator(hold[1])
        return hold[1]

    def _migrated(self, e: ChatMigrated) -> str:
        new = str(e.new_chat_id)
        if self.store is not None:
            self.store.hold_set(self._migrated_hold, until=_FOREVER, value=new, reason="migrate_to_chat_id")
        self._tell_operator(new)
        notice = (
            f"orch: this group became a supergroup. Its chat id is now {new}: set "
            f'[telegram] chat_id = "{new}" in orch.toml (orch sends here meanwhile).'
        )
        self._send(new, escape_html(notice))
        return new

    def _tell_operator(self, new: str) -> None:
        if not self._warned:
            self._warned = True
            log.warning(
                "telegram_chat_migrated",
                configured=str(self.chat_id),
                now=new,
                fix=f'set [telegram] chat_id = "{new}"',
            )

    def _honour_flood_hold(self) -> None:
        if self.store is None:
            return
        hold = self.store.hold_get(self._flood_hold)
        now = self.clock()
        if hold is not None and hold[0] > now:
            raise RetryLater(
                f"Telegram flood control: no sending for {hold[0] - now:.0f}s more", delay=hold[0] - now
            )

    def _record_flood(self, e: RetryLater) -> None:
        if self.store is not None and e.delay > 0:
            self.store.hold_set(self._flood_hold, until=self.clock() + e.delay, reason="429 retry_after")

    def _remember(self, text: str, sent: int) -> None:
        self._sent_parts[text] = sent
        while len(self._sent_parts) > _RESUME_SLOTS:
            self._sent_parts.popitem(last=False)
