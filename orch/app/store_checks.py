"""What `orch config check` says about a PostgreSQL store (docs/postgres.md): how soon a
host that dies is noticed, and what does not span hosts."""

from __future__ import annotations

from orch.config import Config


def _finding(level: str, key: str, problem: str, fix: str) -> dict[str, str]:
    return {"level": level, "key": key, "problem": problem, "fix": fix}


def shared_store_findings(cfg: Config) -> list[dict[str, str]]:
    """A PostgreSQL store is for several hosts: how soon a dead host is noticed, and what
    does not span hosts."""
    if not cfg.store.url:
        return []
    from orch.errors import ConfigError
    from orch.store.postgres_url import check_url, keepalives

    out: list[dict[str, str]] = []
    try:
        timing = keepalives(check_url(cfg.store.url))
    except (ConfigError, ValueError):
        timing = None
    if timing is None:
        out.append(
            _finding(
                "warning",
                "[store] url",
                "TCP keepalives are off: a host that loses power keeps its leases and jobs "
                "until the operating system gives up on its connection (hours)",
                "remove keepalives=0 from the URL",
            )
        )
    else:
        idle, interval, count = timing
        out.append(
            _finding(
                "info",
                "[store] url",
                "a host that dies is noticed when its database sessions end: at once when its "
                f"processes exit, within about {idle + interval * count} s when it loses power or "
                f"its network (TCP keepalives: idle {idle} s, then {count} probes {interval} s apart)",
                "set keepalives_idle, keepalives_interval, keepalives_count in the URL to change it",
            )
        )
    if cfg.forge.kind != "local":
        return out
    return [
        *out,
        _finding(
            "warning",
            "[forge] kind",
            "the local forge is a git repository on this host: with a PostgreSQL store, "
            "runners on other hosts cannot fetch or push the tasks' branches",
            'use kind = "gitea", or run every orch process on this host',
        ),
    ]
