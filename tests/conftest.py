"""Shared fixtures: a real git repository, real agents, a real SQLite file per test."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pg
import pytest

from orch import config as config_mod
from orch.app import demo
from orch.app.wiring import open_runtime
from orch.engine import advance, jobs, tasks
from orch.engine.runtime import Runtime

# The files that take longest, longest first (seconds each on 2 busy cores): started first,
# one per worker, while the many short files fill in around them. ./scripts/test keeps this
# order (--no-loadscope-reorder); xdist would otherwise start the files with the most tests.
LONGEST_FIRST = ("test_race.py", "test_many.py", "test_hosts_postgres.py", "test_exactly_once.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The longest files, then slow tests, then the rest (stable otherwise): with two
    workers the longest files start at once instead of forming a tail at the end."""

    def weight(item: pytest.Item) -> tuple[int, bool]:
        name = item.path.name
        rank = LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)
        return rank, item.get_closest_marker("slow") is None

    items.sort(key=weight)


class Quiet:
    """A notifier that keeps messages for assertions instead of printing them."""

    def __init__(self) -> None:
        self.sent: list[str] = []

    def send(self, text: str) -> None:
        self.sent.append(text)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in list(os.environ):
        # ORCH_TEST_SEED stays: it is how a seeded test's failure is reproduced.
        if var.startswith("ORCH_") and var != "ORCH_TEST_SEED":
            monkeypatch.delenv(var)


class Setup:
    """The demo's repository, agents and orch.toml under tmp_path, plus helpers.

    The merge transition waits on a `merge_window` gate (a file), so that a test can
    park tasks at merge and then let many processes race for it.
    """

    def __init__(self, root: Path):
        self.root = root
        self.config_path = demo.write_setup(root)
        self.repo = root / "repo"
        transitions = [dict(t) for t in config_mod.DEFAULTS["pipeline"]["transitions"]]
        for t in transitions:
            if t["from"] == "merge":
                t["gates"] = ["merge_window"]
        self.update_config(
            {
                "pipeline": {"transitions": transitions},
                "gates": {"merge_window": {"type": "command", "command": "test -f merge-window.open"}},
                # Tests drive jobs themselves; tests/test_newcomer.py covers immediate starts.
                "work": {"start_immediately": False},
            }
        )
        # As `orch init` does: the database exists before any command reads it.
        open_runtime(self.config()).close()

    def open_merge_window(self) -> None:
        (self.root / "merge-window.open").touch()

    def config(self, **env: str) -> config_mod.Config:
        return config_mod.load(self.config_path, environ=dict(env))

    def runtime(self, actor: str = "test", **env: str) -> Runtime:
        rt = open_runtime(self.config(**env), actor=actor)
        rt.notifier = Quiet()
        return rt

    def update_config(self, changes: dict[str, Any]) -> None:
        """Lay `changes` over orch.toml (tables merge, values replace, None deletes) and rewrite it."""
        import tomllib

        import tomli_w

        data = tomllib.loads(self.config_path.read_text())

        def lay(dst: dict[str, Any], src: dict[str, Any]) -> None:
            for k, v in src.items():
                if v is None:
                    dst.pop(k, None)
                elif isinstance(v, dict) and isinstance(dst.get(k), dict):
                    lay(dst[k], v)
                else:
                    dst[k] = v

        lay(data, changes)
        self.config_path.write_text(tomli_w.dumps(data))

    def orch(
        self, *args: str, env: dict[str, str] | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        return run_orch("-c", str(self.config_path), *args, env=env, cwd=self.root, timeout=timeout)

    def orch_popen(
        self, *args: str, env: dict[str, str] | None = None, group: bool = False
    ) -> subprocess.Popen[str]:
        """`orch` running in the background; `group`: in a process group of its own (setsid),
        output discarded, so a test can kill the whole group."""
        full = {k: v for k, v in os.environ.items() if not k.startswith("ORCH_")}
        full.update(env or {})
        out = subprocess.DEVNULL if group else subprocess.PIPE
        return subprocess.Popen(
            [sys.executable, "-m", "orch", "-c", str(self.config_path), *args],
            stdout=out,
            stderr=out,
            text=True,
            env=full,
            cwd=self.root,
            start_new_session=group,
        )

    def relay(self, env: dict[str, str] | None = None) -> tuple[subprocess.Popen[str], int]:
        """`orch relay serve` on a port the system picks, and that port, read from the line
        it prints when it listens (no port picked here that another process could take)."""
        proc = self.orch_popen("relay", "serve", "--host", "127.0.0.1", "--port", "0", env=env)
        assert proc.stderr is not None
        line = proc.stderr.readline()
        match = re.search(r"listening on http://127\.0\.0\.1:(\d+)", line)
        assert match, line + (proc.stderr.read() if proc.poll() is not None else "")
        return proc, int(match.group(1))

    def git(self, *args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=self.repo, capture_output=True, text=True, check=True
        ).stdout


def run_orch(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("ORCH_")}
    full.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "orch", *args],
        capture_output=True,
        text=True,
        env=full,
        cwd=cwd,
        timeout=timeout,
    )


def drive_to(rt: Runtime, key: str, stage: str, *, rounds: int = 40) -> None:
    """Run jobs one at a time, approve at the human gate and advance until `key` is at `stage`."""
    for _ in range(rounds):
        task = rt.task(key)
        if task.stage == stage:
            return
        if jobs.work(rt, max_jobs=1):
            continue
        if task.stage == "analysis" and rt.store.latest_verdict(task.id, task.version) is None:
            tasks.verdict(rt, key, "approve")
        advance.advance(rt, key, expect=task.stage)
    raise AssertionError(f"{key} stuck at {rt.task(key).stage}, wanted {stage}")


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Setup]:
    yield Setup(tmp_path / "demo")


@pytest.fixture(params=["sqlite", "postgres"])
def store_setup(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Setup:
    """The demo `Setup` once per backend: the embedded SQLite file, then a fresh database on
    the PostgreSQL test server (its password in the environment every `orch` inherits). A
    test module runs its tests on both by defining `setup` as this fixture."""
    s = Setup(tmp_path / "demo")
    if request.param == "postgres":
        db: pg.Database = request.getfixturevalue("pg_db")
        monkeypatch.setenv(db.password_env, db.password)
        s.update_config({"store": {"url": db.url}})
    return s


@pytest.fixture
def rt(setup: Setup) -> Iterator[Runtime]:
    r = setup.runtime()
    yield r
    r.close()


def stage_changes(rt: Runtime, key: str) -> list[tuple[Any, Any]]:
    task = rt.task(key)
    return [(r.from_stage, r.to_stage) for r in rt.store.history(task.id) if r.event == "stage_changed"]


@pytest.fixture(scope="session")
def pg_server() -> Iterator[pg.Server]:
    """One real PostgreSQL server per session and xdist worker (tests/pg.py); never skipped."""
    server = pg.start()
    print(f"\nPostgreSQL test server up in {server.start_s:.2f} s on 127.0.0.1:{server.port}")
    yield server
    server.stop()


@pytest.fixture
def pg_db(pg_server: pg.Server) -> Iterator[pg.Database]:
    """A fresh, empty database on the test server, owned by an unprivileged role."""
    db = pg_server.create_database()
    yield db
    pg_server.drop_database(db)
