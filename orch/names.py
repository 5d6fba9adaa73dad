"""The one sanitizer between tracker text and the file system, git and prompts.

Tracker data is untrusted (DESIGN invariant 7): a key or a title becomes a directory
name, a branch name or a prompt fragment only through `safe_name`, and a path is used
as a worktree only after `inside` has proved it lies under the workspace root.
"""

from __future__ import annotations

import re
from pathlib import Path

MAX_NAME = 64
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_DOTS = re.compile(r"\.{2,}")  # ".." is refused in git ref names


def safe_name(text: str, *, limit: int = MAX_NAME) -> str:
    """Map any text to `[A-Za-z0-9._-]`, capped at `limit`; never empty, never dot-led."""
    name = _DOTS.sub(".", _UNSAFE.sub("-", text)).strip("-.")[:limit].strip("-.")
    if name.endswith(".lock"):  # git refuses a ref name that ends so
        name = name[: -len(".lock")] + "-lock"
    return name or "x"


MAX_ENV_TEXT = 4096


def env_text(text: str, *, limit: int = MAX_ENV_TEXT) -> str:
    """Tracker text made safe for an environment variable or an argv word.

    The OS refuses a NUL there (`ValueError: embedded null byte`) and a lone surrogate
    cannot be encoded; either would stop an agent from starting, on every retry. So:
    surrogates become U+FFFD, other controls but newline and tab become spaces, and the
    length is capped (a value over 128 KiB is refused by execve).
    """
    if text.isprintable() and len(text) <= limit:
        return text
    out = []
    for ch in text[:limit]:
        if ch.isprintable() or ch in "\n\t":
            out.append(ch)
        elif "\ud800" <= ch <= "\udfff":
            out.append("\ufffd")
        elif ch < " " or "\x7f" <= ch < "\xa0":
            out.append(" ")
        else:
            out.append(ch)
    return "".join(out)


# Characters that a terminal acts on or that cannot be written as UTF-8: C0/C1 controls
# (ESC starts a sequence, BEL ends an OSC title), DEL, lone surrogates, the bidi controls
# that reorder what a line appears to say (Trojan Source) and the Unicode line separators.
_INERT_ALSO = frozenset("\u2028\u2029\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def _visible(ch: str) -> str:
    o = ord(ch)
    if o < 0x20 or 0x7F <= o < 0xA0 or 0xD800 <= o < 0xE000 or ch in _INERT_ALSO:
        if ch == "\n":
            return "\\n"
        if ch == "\t":
            return "\\t"
        return f"\\x{o:02x}" if o < 0x100 else f"\\u{o:04x}"
    return ch


def inert_text(text: str) -> str:
    """`text` as one line a terminal shows and never acts on: controls and lone
    surrogates become visible escapes (`\\x1b`, `\\n`, `\\ud800`)."""
    if text.isprintable():  # the common case: nothing to neutralise
        return text
    return "".join(ch if ch.isprintable() else _visible(ch) for ch in text)


def inert_lines(text: str) -> str:
    """`text` as lines a terminal shows and never acts on: as `inert_text`, but newlines
    and tabs stay (an agent's log is many lines) and a CR before a newline is dropped."""
    text = text.replace("\r\n", "\n")
    if text.replace("\n", "").replace("\t", "").isprintable():  # the common case: a plain log
        return text
    return "".join(ch if ch.isprintable() or ch in "\n\t" else _visible(ch) for ch in text)


def is_safe_name(text: str) -> bool:
    return safe_name(text) == text


def inside(path: Path, root: Path) -> bool:
    """True when `path` resolves to a location under `root` (symlinks followed)."""
    try:
        path.resolve().relative_to(root.resolve())
    except ValueError:
        return False
    return True
