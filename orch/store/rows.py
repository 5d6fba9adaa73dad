"""Rows to records: one mapper, by column name, for every record the store returns.

A record is a NamedTuple whose field names are column names. What a field's annotation
says decides the conversion: `bool` from SQLite's 0/1, `dict[...]` from JSON text, and an
`Owner` from the four columns `<field>_host`, `_boot`, `_pid`, `_start` (an optional
owner is None while its host is empty). Every other field is the column's value as is.
Columns a record has no field for are ignored.

The plan for a record type is built once, on first use, from its annotations: a row
then costs one call per field, no look-up of names or types.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from operator import itemgetter
from typing import Any, TypeVar

from orch.identity import Owner

R = TypeVar("R")

_PLANS: dict[type, list[Callable[[Any], Any]]] = {}


def _owner(field: str, optional: bool) -> Callable[[Any], Owner | None]:
    host, boot, pid, start = (f"{field}_{part}" for part in ("host", "boot", "pid", "start"))

    def get(r: Any) -> Owner | None:
        if optional and not r[host]:
            return None
        return Owner(r[host], r[boot] or "", int(r[pid] or 0), r[start] or "")

    return get


def _bool(field: str) -> Callable[[Any], bool]:
    return lambda r: bool(r[field])


def _json(field: str) -> Callable[[Any], Any]:
    return lambda r: json.loads(r[field])


def _plan(cls: type) -> list[Callable[[Any], Any]]:
    getters: list[Callable[[Any], Any]] = []
    # With postponed annotations a NamedTuple keeps them as ForwardRef('Owner | None').
    hints = cls.__annotations__
    for field in cls._fields:  # type: ignore[attr-defined]
        hint = hints[field]
        kind = str(getattr(hint, "__forward_arg__", hint)).replace(" ", "")
        if kind == "bool":
            getters.append(_bool(field))
        elif kind.startswith("dict["):
            getters.append(_json(field))
        elif kind in ("Owner", "Owner|None"):
            getters.append(_owner(field, kind != "Owner"))
        else:
            getters.append(itemgetter(field))
    return getters


def record(cls: type[R], r: Any) -> R:
    """The row `r` as a `cls` (a NamedTuple whose fields name its columns)."""
    getters = _PLANS.get(cls)
    if getters is None:
        getters = _PLANS[cls] = _plan(cls)
    return cls(*[g(r) for g in getters])


def records(cls: type[R], found: list[Any]) -> list[R]:
    return [record(cls, r) for r in found]


def owner_params(o: Owner) -> tuple[str, str, int, str]:
    """An owner as the four values of `owner_host, owner_boot, owner_pid, owner_start`."""
    return (o.host, o.boot_id, o.pid, o.start_time)
