"""The store contract (tests/store_contract.py) run against the SQLite store, on a real
file under tmp_path."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from store_contract import StoreContract

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
