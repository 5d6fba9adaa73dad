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
"""

from __future__ import annotations

from collections import OrderedDict

from orch import log
from orch.adapters.telegram import TelegramClient, escape_html, split_message
from orch.errors import UsageError

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
    ):
        if not str(chat_id).strip():
            raise UsageError("the Telegram chat_id is empty")
        self.client = client
        self.chat_id = chat_id
        self.thread_id = thread_id
        self.disable_notification = disable_notification
        self._sent_parts: OrderedDict[str, int] = OrderedDict()

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
        done = self._sent_parts.pop(text, 0)
        for i in range(done, len(parts)):
            try:
                self.client.send_message(
                    self.chat_id,
                    parts[i],
                    thread_id=self.thread_id,
                    disable_notification=self.disable_notification,
                )
            except Exception:  # RetryLater or IntegrationError: the outbox decides when to resend
                if i:
                    self._remember(text, i)
                raise

    def _remember(self, text: str, sent: int) -> None:
        self._sent_parts[text] = sent
        while len(self._sent_parts) > _RESUME_SLOTS:
            self._sent_parts.popitem(last=False)
