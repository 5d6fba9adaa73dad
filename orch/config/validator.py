"""Typed, collecting reads of the configuration's tables (see `Validator`)."""

from __future__ import annotations

import copy
import math
import re
from typing import Any

from orch.config.defaults import DEFAULTS
from orch.errors import ConfigError

ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
MAX_NAME = 64


class Validator:
    """Typed reads that record a problem naming the file, the key and what was expected,
    and go on with a fallback value, so that one load reports every problem.

    No read has a default: the tables it reads already hold defaults.py's values under
    the file's. The fallback after a problem is the type's zero; it is never used, as
    the load raises once every problem is collected.
    """

    def __init__(self, where: str):
        self.where = where
        self.origin: dict[tuple[str, str], str] = {}  # (section, key) -> ORCH_* that set it
        self.problems: list[tuple[str, str]] = []
        self.stages_known = True  # false when [pipeline] stages is no table

    def error(self, section: str, key: str | None, problem: str) -> None:
        label = f"[{section}] {key}" if key else f"[{section}]"
        var = self.origin.get((section, key)) if key else None
        self.problems.append((label, f"{problem} (from ${var})" if var else problem))

    def raise_if_any(self) -> None:
        if self.problems:
            lines = [f"{self.where}: {key}: {problem}" for key, problem in self.problems]
            raise ConfigError("\n".join(lines), problems=tuple(self.problems))

    def _fail(self, section: str, key: str, expected: str, got: Any) -> None:
        self.error(section, key, f"expected {expected}, got {got!r}")

    def section(self, raw: dict[str, Any], section: str) -> dict[str, Any]:
        """A top-level table; one that is no table is reported once and read as its defaults."""
        val = raw.get(section)
        if not isinstance(val, dict):
            self.error(section, None, f"expected a table, got {val!r}")
            return copy.deepcopy(DEFAULTS[section])
        return val

    def named(self, raw: dict[str, Any], section: str) -> dict[str, Any]:
        """A top-level table of named tables ([agents.NAME]): `section` with its names checked."""
        val = self.section(raw, section)
        self.table_names(section, val)
        return val

    def table(self, d: dict[str, Any], section: str, key: str) -> dict[str, Any]:
        val = d.get(key)
        if not isinstance(val, dict):
            self._fail(section, key, "a table", val)
            return {}
        return val

    def is_table(self, val: Any, section: str) -> dict[str, Any]:
        if not isinstance(val, dict):
            self.error(section, None, f"expected a table, got {val!r}")
            return {}
        return val

    def only(self, d: dict[str, Any], section: str, allowed: set[str]) -> None:
        for k in d:
            if k not in allowed:
                import difflib

                known = ", ".join(sorted(allowed))
                close = difflib.get_close_matches(k, allowed, n=1)
                hint = f"did you mean {close[0]!r}? " if close else ""
                self.error(section, k, f"unknown key ({hint}expected one of {known})")

    def string(self, d: dict[str, Any], section: str, key: str) -> str:
        val = d.get(key)
        if not isinstance(val, str):
            self._fail(section, key, "a string", val)
            return ""
        return val

    def opt_string(self, d: dict[str, Any], section: str, key: str) -> str | None:
        val = d.get(key)
        if val is None:
            return None
        if not isinstance(val, str):
            self._fail(section, key, "a string", val)
            return None
        return val

    def boolean(self, d: dict[str, Any], section: str, key: str) -> bool:
        val = d.get(key)
        if not isinstance(val, bool):
            self._fail(section, key, "true or false", val)
            return False
        return val

    def number(self, d: dict[str, Any], section: str, key: str) -> float:
        val = d.get(key)
        # nan compares false with everything: `timeout_s = nan` would never time out.
        if isinstance(val, bool) or not isinstance(val, int | float) or not math.isfinite(val) or val < 0:
            self._fail(section, key, "a finite number >= 0", val)
            return 0.0
        return float(val)

    def integer(
        self,
        d: dict[str, Any],
        section: str,
        key: str,
        *,
        minimum: int,
        maximum: int | None,
    ) -> int:
        val = d.get(key)
        if (
            isinstance(val, bool)
            or not isinstance(val, int)
            or val < minimum
            or (maximum is not None and val > maximum)
        ):
            span = f"from {minimum} to {maximum}" if maximum is not None else f">= {minimum}"
            self._fail(section, key, f"a whole number {span}", val)
            return minimum
        return val

    def names(self, d: dict[str, Any], section: str, key: str) -> tuple[str, ...]:
        val = d.get(key)
        if not isinstance(val, list) or not all(isinstance(x, str) for x in val):
            self._fail(section, key, "an array of names", val)
            return ()
        return tuple(val)

    def table_names(self, section: str, names: Any) -> None:
        """Names the file gives (of agents, stages, gates, effects, repositories): they reach
        terminals, logs, lease names and command lines, so each is printable, one line, at
        most MAX_NAME characters, and does not start with `-` (it would read as an option)."""
        for n in names:
            if not isinstance(n, str) or not n or len(n) > MAX_NAME or not n.isprintable() or n[0] == "-":
                self.error(
                    section, None, f"name {n!r}: use 1 to {MAX_NAME} printable characters, not led by '-'"
                )

    def variables(self, d: dict[str, Any], section: str, key: str) -> tuple[str, ...]:
        names = self.names(d, section, key)
        for n in names:
            if not ENV_NAME.fullmatch(n):
                self.error(section, key, f"{n!r} is not an environment variable name")
        return names

    def choice(self, d: dict[str, Any], section: str, key: str, options: tuple[str, ...]) -> str:
        val = d.get(key)
        if val not in options:
            self._fail(section, key, "one of " + ", ".join(repr(o) for o in options), val)
            return options[0]
        return str(val)
