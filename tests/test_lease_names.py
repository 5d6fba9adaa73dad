"""Lease names are built and parsed in one module: what it builds, it can read back."""

from __future__ import annotations

from orch.engine import lease_names


def test_a_task_lease_names_its_task_and_no_other_lease_does() -> None:
    assert lease_names.task("ENG-12") == "task:ENG-12"
    assert lease_names.task_key(lease_names.task("ENG-12")) == "ENG-12"
    for other in (
        lease_names.merge("app"),
        lease_names.tick("reap"),
        lease_names.orphan_effect("ENG-1", "deploy"),
    ):
        assert lease_names.task_key(other) is None, other
    assert lease_names.merge("app") == "merge:app"
    assert lease_names.tick("reconcile") == "tick:reconcile"
