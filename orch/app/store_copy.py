"""`orch store copy`: move this orch's state into an empty PostgreSQL database."""

from __future__ import annotations

import os
from typing import Any

from orch.config import Config
from orch.errors import UsageError


def copy(cfg: Config, *, to: str) -> dict[str, Any]:
    """Copy the configured store into the empty PostgreSQL database at `to`, then compare
    every table's row count on both sides and check the destination's integrity. The
    password is read from the variable [store] password_env names."""
    from orch.app.wiring import open_store
    from orch.store import Store
    from orch.store.postgres import PostgresDatabase
    from orch.store.postgres_copy import copy_rows, row_counts
    from orch.store.postgres_url import redacted

    if cfg.store.url and redacted(cfg.store.url) == redacted(to):
        raise UsageError(f"{redacted(to)} is this orch's own store: copy to another database")
    src = open_store(cfg, create=False)
    try:
        password = os.environ.get(cfg.store.password_env) if cfg.store.password_env else None
        dst = Store(PostgresDatabase.open(to, password=password, busy_timeout_ms=cfg.store.busy_timeout_ms))
        try:
            taken = {t: n for t, n in row_counts(dst).items() if n}
            if taken:
                listed = ", ".join(f"{t} ({n})" for t, n in sorted(taken.items()))
                raise UsageError(
                    f"{redacted(to)} holds orch rows already: {listed}; copy only into an empty database"
                )
            before = row_counts(src)
            copy_rows(src, dst)
            after = row_counts(dst)
            integrity = dst.integrity()
        finally:
            dst.close()
    finally:
        src.close()
    tables = {t: {"source": before[t], "copied": after[t]} for t in before}
    ok = integrity == "ok" and all(v["source"] == v["copied"] for v in tables.values())
    return {"to": redacted(to), "ok": ok, "integrity": integrity, "tables": tables}
