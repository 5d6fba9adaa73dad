"""The console notifier (default) and the local tracker (the orch DB is the tracker)."""

from __future__ import annotations

import sys
import time
from typing import TextIO

from orch.names import inert_text
from orch.store import Task


class ConsoleNotifier:
    """Writes messages to stderr, so that --json on stdout stays parseable."""

    def __init__(self, stream: TextIO | None = None):
        self.stream = stream

    def send(self, text: str) -> None:
        stream = self.stream or sys.stderr
        stamp = time.strftime("%H:%M:%S")
        # A message carries tracker text: one inert line, no escape sequence reaches the terminal.
        print(f"[orch {stamp}] {inert_text(text)}", file=stream, flush=True)


class LocalTracker:
    """Tasks and their states live in the DB; people act through the CLI."""

    def stage_changed(self, task: Task, stage: str) -> None:
        return None

    def effect_started(self, task: Task, effect: str) -> None:
        return None
