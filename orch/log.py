"""Decision logs: one line per decision of the tick, the reconciler, the relay and advance.

`ORCH_LOG_FORMAT` (text | json), `ORCH_LOG_LEVEL` (debug | info | warning | error;
default warning) and `ORCH_LOG_FILE` (default: stderr), or the CLI's `--log-format`,
`--log-level` and `--log-file`. JSON lines carry `ts`, `level`, `event` and the fields
of the decision (task, actor, ...). A timer run that sets a log file keeps a history
without a shell redirect.

Not the stdlib `logging`: configuring it costs imports on every cron run, and these
lines need no handlers, filters or propagation. Secrets never reach a field: callers
pass keys, stages and reasons, never URLs with tokens or payloads.

A field can hold untrusted text (a tracker item id, a webhook's repository name): in the
text format every control character (newline, carriage return, escape, NUL, the C1
range, U+2028/2029) and every lone surrogate is written as a backslash escape, so one
event is always one line and nothing can forge another (issue 10 item 10). JSON lines
are escaped by the encoder.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from typing import Any, TextIO

LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}

_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(match: re.Match[str]) -> str:
    ch = match.group()
    return _NAMED.get(ch) or (f"\\x{ord(ch):02x}" if ord(ch) < 0x100 else f"\\u{ord(ch):04x}")


def plain(value: Any) -> str:
    """`value` as text on one line: control characters and lone surrogates escaped."""
    text = value if isinstance(value, str) else str(value)
    return _UNSAFE.sub(_escape, text)


class _Sink:
    def __init__(self) -> None:
        self.level = LEVELS["warning"]
        self.format = "text"
        self.path: str | None = None
        self.stream: TextIO | None = None
        self.owned = False

    def configure(self, *, fmt: str | None = None, level: str | None = None, path: str | None = None) -> None:
        fmt = (fmt or os.environ.get("ORCH_LOG_FORMAT") or "text").lower()
        level = (level or os.environ.get("ORCH_LOG_LEVEL") or "warning").lower()
        path = path or os.environ.get("ORCH_LOG_FILE") or None
        if fmt not in ("text", "json"):
            raise ValueError(f"log format {fmt!r}: expected text or json")
        if level not in LEVELS:
            raise ValueError(f"log level {level!r}: expected one of {', '.join(LEVELS)}")
        self.format, self.level, self.path = fmt, LEVELS[level], path
        if self.stream is not None and self.owned:  # close only a file we opened
            self.stream.close()
        self.stream = None
        self.owned = False

    def _open(self) -> TextIO:
        """The log file, its directory created; if that fails, one line says so and the
        logs go to stderr: a missing /var/log/orch must not stop a tick."""
        if not self.path:
            return sys.stderr
        try:
            os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
            return open(self.path, "a", encoding="utf-8", errors="backslashreplace")
        except OSError as e:
            why = e.strerror or e
            sys.stderr.write(f"orch: cannot write the log file {self.path}: {why}; logging to stderr\n")
            return sys.stderr

    def emit(self, level: str, event: str, fields: dict[str, Any]) -> None:
        if LEVELS[level] < self.level:
            return
        if self.stream is None:
            self.stream = self._open()
            self.owned = self.stream is not sys.stderr
        now = time.time()
        if self.format == "json":
            line = json.dumps({"ts": round(now, 3), "level": level, "event": event, **fields}, default=str)
        else:
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(now))
            line = f"{stamp} {level:<7} {plain(event)} " + " ".join(
                f"{plain(k)}={plain(v)}" for k, v in fields.items()
            )
        self.stream.write(line + "\n")
        self.stream.flush()


_sink = _Sink()
_sink_configured = False


def configure(*, fmt: str | None = None, level: str | None = None, path: str | None = None) -> None:
    global _sink_configured
    _sink.configure(fmt=fmt, level=level, path=path)
    _sink_configured = True


def _emit(level: str, event: str, fields: dict[str, Any]) -> None:
    if not _sink_configured:
        configure()
    _sink.emit(level, event, fields)


def debug(event: str, **fields: Any) -> None:
    _emit("debug", event, fields)


def info(event: str, **fields: Any) -> None:
    _emit("info", event, fields)


def warning(event: str, **fields: Any) -> None:
    _emit("warning", event, fields)


def error(event: str, **fields: Any) -> None:
    _emit("error", event, fields)
