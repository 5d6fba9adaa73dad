"""The console notifier, the default: messages go to stderr, one inert line each."""

from __future__ import annotations

import sys
import time
from typing import TextIO

from orch.names import inert_text


class ConsoleNotifier:
    """Writes messages to stderr, so that --json on stdout stays parseable."""

    def __init__(self, stream: TextIO | None = None):
        self.stream = stream

    def send(self, text: str) -> None:
        stream = self.stream or sys.stderr
        stamp = time.strftime("%H:%M:%S")
        # A message carries tracker text: one inert line, no escape sequence reaches the terminal.
        print(f"[orch {stamp}] {inert_text(text)}", file=stream, flush=True)
