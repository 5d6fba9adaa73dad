"""Many real `orch advance` processes entering the same transition at the same moment,
with the store on SQLite and on PostgreSQL."""

from __future__ import annotations

import os
import subprocess

import pytest
from conftest import Setup, drive_to
from racers import Racers

from orch.engine import tasks
from orch.engine.runtime import Runtime

RACERS = 16


@pytest.fixture
def setup(store_setup: Setup) -> Setup:
    """Every test here runs on SQLite and on PostgreSQL (conftest.store_setup)."""
    return store_setup


def _race(
    setup: Setup, key: str, env: dict[str, str] | None = None
) -> list[subprocess.CompletedProcess[str]]:
    """RACERS `orch advance KEY --expect merge` processes, forked at the same instant
    (tests/racers.py: each a real process running orch's main, without 0.15-0.35 s of
    imports each that would stagger their arrival on 2 cores)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("ORCH_")}
    base.update(env or {})
    racers = Racers(setup.root.parent / f"racers-{key}", base)
    try:
        argv = ["-c", str(setup.config_path), "advance", key, "--expect", "merge"]
        return racers.race(RACERS, argv, base, setup.root)
    finally:
        racers.close()


def _task_leases(rt: Runtime, key: str) -> int:
    history = rt.store.history(rt.task(key).id)
    return sum(1 for r in history if r.event == "lease_acquired" and r.detail["lease"] == f"task:{key}")


def _main_updates(setup: Setup) -> int:
    """How many times the default branch moved (its reflog), the initial commit included."""
    return len(setup.git("reflog", "show", "--format=%H", "refs/heads/main").split())


def _check_one_winner(
    setup: Setup, key: str, results: list[subprocess.CompletedProcess[str]], updates_before: int
) -> None:
    codes = sorted(r.returncode for r in results)
    assert set(codes) <= {0, 4}, [(r.returncode, r.stderr) for r in results if r.returncode not in (0, 4)]
    winners = [r for r in results if f"{key}: merge -> deploy" in r.stdout]
    assert len(winners) == 1, [(r.returncode, r.stdout, r.stderr) for r in results]
    rt = setup.runtime()
    task = rt.task(key)
    assert task.stage == "deploy"
    changes = [r for r in rt.store.history(task.id) if r.event == "stage_changed" and r.from_stage == "merge"]
    assert len(changes) == 1
    merge_rows = [e for e in rt.store.effects_of(task.id) if e.effect == "merge"]
    assert [(e.state, e.attempts) for e in merge_rows] == [("done", 1)]
    assert rt.store.count_events(task.id, "effect_done") == 2  # rebase + merge, once each
    assert _main_updates(setup) == updates_before + 1  # the merge moved main exactly once
    assert rt.store.list_leases() == []
    rt.close()


# Tasks raced, each by RACERS processes, on each backend: 10 keep the suite inside its time
# budget on 2 cores; ORCH_TEST_RACE_TASKS=20 (or more) runs the longer race.
RACE_TASKS = int(os.environ.get("ORCH_TEST_RACE_TASKS", "10"))


@pytest.mark.slow
def test_sixteen_processes_one_merge_on_each_of_many_tasks(setup: Setup) -> None:
    rt = setup.runtime()
    keys = [tasks.add(rt, f"race {i}").key for i in range(RACE_TASKS)]
    for key in keys:
        drive_to(rt, key, "merge")
    rt.close()
    setup.open_merge_window()
    for key in keys:
        before = _main_updates(setup)
        _check_one_winner(setup, key, _race(setup, key), before)
    # Every task's work is on main, in a linear history.
    log = setup.git("log", "--format=%s", "--first-parent", "main")
    for key in keys:
        assert f"{key}: race" in log
    assert setup.git("rev-list", "--merges", "--count", "main").strip() == "0"


@pytest.mark.slow
def test_with_the_lease_switched_off_the_ledger_and_cas_still_allow_one_merge(setup: Setup) -> None:
    rt = setup.runtime()
    keys = [tasks.add(rt, f"nolease {i}").key for i in range(3)]
    for key in keys:
        drive_to(rt, key, "merge")
    rt.close()
    setup.open_merge_window()
    for key in keys:
        rt = setup.runtime()
        leases_before = _task_leases(rt, key)
        rt.close()
        before = _main_updates(setup)
        results = _race(setup, key, env={"ORCH_TRANSITION_LEASE_ENABLED": "false"})
        _check_one_winner(setup, key, results, before)
        rt = setup.runtime()
        # No transition lease was taken (the repository's merge lease still serializes merges).
        assert _task_leases(rt, key) == leases_before
        rt.close()
