"""A PostgreSQL store URL: recognised, checked, shown without its password, and the TCP
keepalives it leaves in effect (imported by `orch config check` without a connection)."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict

from orch.errors import ConfigError

SCHEMES = ("postgresql://", "postgres://")
# Unless the URL says otherwise: a silent peer is dropped after 10 + 3 * 5 s.
KEEPALIVES = {"keepalives": "1", "keepalives_idle": "10", "keepalives_interval": "5", "keepalives_count": "3"}


def keepalives(params: dict[str, Any]) -> tuple[int, int, int] | None:
    """(idle, interval, count) in effect for a connection with these URL parameters, or
    None when the URL turns keepalives off. The same values are set on the server's side of
    the session (tcp_keepalives_*): it is the server that must notice a client host gone
    silent (power lost, network cut) to end that host's sessions."""
    merged = {**KEEPALIVES, **{k: str(v) for k, v in params.items() if k in KEEPALIVES}}
    if merged["keepalives"] == "0":
        return None
    return int(merged["keepalives_idle"]), int(merged["keepalives_interval"]), int(merged["keepalives_count"])


CONNECT_TIMEOUT_S = 10


def is_url(location: str) -> bool:
    """Is `location` a PostgreSQL URL (rather than a SQLite path)?"""
    return location.startswith(SCHEMES)


def redacted(url: str) -> str:
    """`url` as it may be shown: scheme, user, host, port and database; never a password."""
    try:
        p = conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "postgresql://(unparseable URL)"
    user = f"{p['user']}@" if p.get("user") else ""
    port = f":{p['port']}" if p.get("port") else ""
    return f"postgresql://{user}{p.get('host', '')}{port}/{p.get('dbname', '')}"


def check_url(url: str) -> dict[str, Any]:
    """The URL's connection parameters; ConfigError for a URL that is not usable as is."""
    if not is_url(url):
        raise ConfigError(f"store URL must start with postgresql://, got {redacted(url)}")
    try:
        params = conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        raise ConfigError("store URL cannot be parsed (it is not shown: it may hold a password)") from None
    if params.get("password"):
        raise ConfigError(
            f"store URL {redacted(url)} contains a password: remove it from the URL and set it "
            "in the environment instead (the variable [store] password_env names, or PGPASSWORD)"
        )
    return params
