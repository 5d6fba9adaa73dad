"""The store contract (tests/store_contract.py) run against the SQLite store, on a real
file under tmp_path."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from store_contract import StoreContract

from orch.identity import Owner
from orch.store import Store
from orch.store.schema import LATEST


class TestSqliteStore(StoreContract):
    @pytest.fixture
    def path(self, tmp_path: Path) -> Path:
        return tmp_path / "orch.db"

    @pytest.fixture
    def store(self, path: Path) -> Iterator[Store]:
        s = Store.open(path)
        yield s
        s.close()

    @pytest.fixture
    def reopen(self, store: Store, path: Path) -> Iterator[Callable[[], Store]]:
        opened: list[Store] = []

        def again() -> Store:
            opened.append(Store.open(path))
            return opened[-1]

        yield again
        for s in opened:
            s.close()

    @pytest.fixture
    def age_schema(self, store: Store, path: Path) -> Callable[[], None]:
        def age() -> None:
            c = sqlite3.connect(path)
            c.execute(f"PRAGMA user_version = {LATEST + 1}")
            c.close()

        return age


def test_every_claim_finds_its_job_through_an_index_in_claim_order(tmp_path: Path) -> None:
    # With dependencies off, SQLite's planner (no statistics) searched jobs_claim by state
    # and sorted every queued job: 66 ms with 100,000 queued, under the write lock. Each
    # form of the claim must read its job in order from an index, never sort.
    store = Store.open(tmp_path / "orch.db")
    seen: list[str] = []
    store.conn.set_trace_callback(seen.append)
    try:
        for deps in (True, False):
            store.claim_job(owner=_OWNER, now=1.0, log_dir=tmp_path, max_running=4, deps_enabled=deps)
        store.claim_job(owner=_OWNER, now=1.0, log_dir=tmp_path, max_running=4, deps_enabled=False, job_id=7)
    finally:
        store.conn.set_trace_callback(None)
    claims = [sql for sql in seen if sql.startswith("UPDATE jobs SET state = 'running'")]
    assert len(claims) == 3
    for sql in claims:
        plan = " | ".join(r[3] for r in store.conn.execute("EXPLAIN QUERY PLAN " + sql))
        assert "TEMP B-TREE" not in plan and not re.search(r"SCAN jobs(?! USING)", plan), plan
    store.close()


_OWNER = Owner("h", "b", 1, "s")
