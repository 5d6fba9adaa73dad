"""The crash matrix: `ORCH_FAULT=<point>` SIGKILLs a real `orch advance` there; the next
`orch advance` must reclaim the stale lease (audited), run every effect exactly once,
leave the task at the right stage and hold no lease. Every point runs with the store on
SQLite and on PostgreSQL."""

from __future__ import annotations

import signal

import pytest
from conftest import Setup, drive_to

from orch.engine import tasks

MERGE_POINTS = [
    "after_lease",
    "after_effect_started",  # the first effect: the pre-merge rebase
    "after_effect_started:merge",
    "before_effect_done:merge",  # merged in git, not yet in the ledger: the probe settles it
    "after_effect_done",
    "after_effect_done:merge",
    "before_cas",
    "after_cas",
    "before_release",
]


def _reflog(setup: Setup) -> int:
    return len(setup.git("reflog", "show", "--format=%H", "refs/heads/main").split())


@pytest.fixture
def setup(store_setup: Setup) -> Setup:
    """Every test here runs on SQLite and on PostgreSQL (conftest.store_setup)."""
    return store_setup


@pytest.fixture
def at_merge(setup: Setup) -> tuple[Setup, str]:
    rt = setup.runtime()
    key = tasks.add(rt, "crash me").key
    drive_to(rt, key, "merge")
    rt.close()
    setup.open_merge_window()
    return setup, key


@pytest.mark.slow
@pytest.mark.parametrize("point", MERGE_POINTS)
def test_crash_at_merge_then_recover(at_merge: tuple[Setup, str], point: str) -> None:
    setup, key = at_merge
    before = _reflog(setup)
    died = setup.orch("advance", key, "--expect", "merge", env={"ORCH_FAULT": point})
    assert died.returncode == -signal.SIGKILL, (died.returncode, died.stderr)

    again = setup.orch("advance", key, "--expect", "merge")
    assert again.returncode == 0, again.stderr

    rt = setup.runtime()
    task = rt.task(key)
    assert task.stage == "deploy"
    assert rt.store.list_leases() == []
    history = rt.store.history(task.id)
    # Every crash here happens while the task lease is held, and between the effects and
    # the CAS also the repository's merge lease: the next run reclaims each, audited.
    held = 1 if point in ("after_lease", "before_release") else 2
    assert [r.event for r in history].count("lease_reclaimed") == held
    assert sum(1 for r in history if r.event == "stage_changed" and r.from_stage == "merge") == 1
    merge = next(e for e in rt.store.effects_of(task.id) if e.effect == "merge")
    assert merge.state == "done"
    assert _reflog(setup) == before + 1, "main moved more (or less) than once"
    assert f"{key}: crash me" in setup.git("log", "--format=%s", "main")
    rt.close()


@pytest.fixture
def at_deploy(at_merge: tuple[Setup, str]) -> tuple[Setup, str]:
    setup, key = at_merge
    assert setup.orch("advance", key, "--expect", "merge").returncode == 0
    return setup, key


def _deploys(setup: Setup, key: str) -> int:
    log = setup.root / "deploys.log"
    return log.read_text().splitlines().count(f"deployed {key}") if log.exists() else 0


@pytest.mark.slow
@pytest.mark.parametrize(
    "point",
    ["after_effect_started:deploy", "before_effect_done:deploy", "after_effect_done:deploy", "before_cas"],
)
def test_crash_in_deploy_runs_the_deploy_once(at_deploy: tuple[Setup, str], point: str) -> None:
    setup, key = at_deploy
    died = setup.orch("advance", key, "--expect", "deploy", env={"ORCH_FAULT": point})
    assert died.returncode == -signal.SIGKILL
    again = setup.orch("advance", key, "--expect", "deploy")
    assert again.returncode == 0, again.stderr
    assert _deploys(setup, key) == 1
    rt = setup.runtime()
    assert rt.task(key).stage == "monitoring"
    assert rt.store.list_leases() == []
    rt.close()


def test_interrupted_irreversible_effect_without_probe_blocks_the_task(at_deploy: tuple[Setup, str]) -> None:
    setup, key = at_deploy
    setup.update_config({"effects": {"deploy": {"probe": None}}})
    died = setup.orch("advance", key, "--expect", "deploy", env={"ORCH_FAULT": "before_effect_done:deploy"})
    assert died.returncode == -signal.SIGKILL
    again = setup.orch("advance", key, "--expect", "deploy")
    assert again.returncode == 1
    assert "may have run" in again.stderr
    assert _deploys(setup, key) == 1
    rt = setup.runtime()
    task = rt.task(key)
    assert task.blocked and task.stage == "deploy" and "no probe" in (task.block_reason or "")
    # Blocked: nothing automatic runs the deploy again.
    assert setup.orch("advance", key).returncode == 3
    assert _deploys(setup, key) == 1
    rt.close()
