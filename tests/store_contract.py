"""The store contract: what every store backend must do, written against `Store` alone.

In the style of huey's `StorageTests` and River's driver tests: a backend's test module
subclasses `StoreContract` and provides three fixtures, and every test here runs on it.

    store        a freshly migrated, empty Store
    reopen       a function returning another Store on the same database (a second
                 connection, as a second process would have); closed by the fixture
    age_schema   a function that marks the database as written by a newer orch

Nothing here touches SQL, a file or a server: time is passed in (`now=`), liveness is
passed in (`alive=`) or made with identities that cannot be alive (a start time no
process has), so a backend's own clock and hosts never decide a result.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from orch import identity
from orch.errors import KeyTaken, SchemaTooNew
from orch.identity import Owner, me
from orch.store import Audit, EffectRow, Message, NextJob, StageChange, Store, Task, Verdict
from orch.store.schema import LATEST

NOW = 1_700_000_000.0
FINISHED = ("done",)
RELEASED = Message("released:{waiter}:{key}", "{waiter} waits no more on {key}")


def owner(pid: int = 1, host: str = "h1") -> Owner:
    """An owner on another host: judged only by the `alive` a test passes."""
    return Owner(host, "boot-1", pid, f"start-{pid}")


def dead_here() -> Owner:
    """An owner on this host and boot whose process cannot be alive (no such start time)."""
    return me()._replace(pid=2**22 + 17, start_time="not-a-start-time")


def alive(*owners: Owner) -> Callable[[Owner], bool]:
    return lambda o: o in owners


def audit(task: Task | int, event: str = "test", **detail: Any) -> Audit:
    return Audit(task if isinstance(task, int) else task.id, "tester", event, detail)


def commit(
    store: Store,
    task: Task,
    new_stage: str,
    *,
    expected_stage: str | None = None,
    expected_version: int | None = None,
    now: float = NOW + 1,
    unless_in_flight: Callable[[EffectRow], bool] | None = None,
    **follow_ups: Any,
) -> bool:
    """A stage change by compare-and-swap on what `task` says (the one write path);
    `follow_ups` are StageChange's: retry, message, job, escalation, release."""
    stage = expected_stage or task.stage
    change = StageChange(
        task_id=task.id,
        from_stage=stage,
        to_stage=new_stage,
        expected_version=expected_version or task.version,
        retry=follow_ups.pop("retry", False),
        audit=Audit(task.id, "tester", "stage_changed", {}, stage, new_stage),
        **follow_ups,
    )
    return store.commit_transition(change, now=now, unless_in_flight=unless_in_flight)


class StoreContract:
    """Every test a store backend must pass. Subclass it and provide the fixtures."""

    @pytest.fixture
    def store(self) -> Store:
        raise NotImplementedError("a backend's test module provides `store`")

    @pytest.fixture
    def reopen(self) -> Callable[[], Store]:
        raise NotImplementedError("a backend's test module provides `reopen`")

    @pytest.fixture
    def age_schema(self) -> Callable[[], None]:
        raise NotImplementedError("a backend's test module provides `age_schema`")

    # -- helpers -----------------------------------------------------------------------

    @staticmethod
    def task(store: Store, key: str | None = None, *, stage: str = "dev", agent: str | None = None) -> Task:
        return store.add_task(
            title=f"title of {key}",
            repo="app",
            stage=stage,
            now=NOW,
            key=key,
            key_prefix="T",
            actor="tester",
            agent=agent,
        )

    @staticmethod
    def fresh(store: Store, task: Task) -> Task:
        got = store.get_task_by_id(task.id)
        assert got is not None
        return got

    # -- schema ------------------------------------------------------------------------

    def test_a_new_store_is_at_the_latest_schema_and_sound(self, store: Store) -> None:
        assert store.schema_version() == LATEST
        assert store.integrity() == "ok"
        assert store.list_tasks() == [] and store.jobs() == [] and store.list_leases() == []

    def test_a_store_from_a_newer_orch_is_refused(
        self, store: Store, reopen: Callable[[], Store], age_schema: Callable[[], None]
    ) -> None:
        age_schema()
        with pytest.raises(SchemaTooNew) as e:
            reopen()
        assert e.value.exit_code == 2

    def test_reopening_keeps_what_was_written(self, store: Store, reopen: Callable[[], Store]) -> None:
        t = self.task(store, "K-1")
        again = reopen()
        assert again.schema_version() == LATEST
        assert again.get_task("K-1") == t

    # -- tasks -------------------------------------------------------------------------

    def test_add_task_returns_it_at_version_one(self, store: Store) -> None:
        t = self.task(store, "K-1", stage="analysis")
        assert (t.key, t.title, t.repo, t.stage, t.version, t.retries) == (
            "K-1",
            "title of K-1",
            "app",
            "analysis",
            1,
            0,
        )
        assert (t.blocked, t.escalated, t.block_reason, t.waiting_on, t.tracker_ref) == (
            False,
            False,
            None,
            0,
            None,
        )
        assert t.created_at == t.updated_at == NOW
        assert store.get_task("K-1") == t == store.get_task_by_id(t.id)

    def test_a_task_without_a_key_is_named_after_its_id(self, store: Store) -> None:
        t = self.task(store)
        assert t.key == f"T-{t.id}"

    def test_a_taken_key_is_refused_and_nothing_is_written(self, store: Store) -> None:
        self.task(store, "K-1")
        with pytest.raises(KeyTaken) as e:
            self.task(store, "K-1", agent="dev")
        assert e.value.key == "K-1" and e.value.exit_code == 2
        assert len(store.list_tasks()) == 1 and store.jobs() == []

    def test_a_generated_key_that_is_taken_is_refused(self, store: Store) -> None:
        first = self.task(store, "K-1")
        self.task(store, f"T-{first.id + 2}")  # the key the task after this one would get
        with pytest.raises(KeyTaken) as e:
            self.task(store)
        assert e.value.key == f"T-{first.id + 2}"
        assert len(store.list_tasks()) == 2

    def test_add_task_with_an_agent_queues_its_first_job_with_it(self, store: Store) -> None:
        t = self.task(store, "K-1", agent="analyst")
        (j,) = store.jobs(task_id=t.id)
        assert (j.agent, j.stage, j.task_version, j.attempt, j.state, j.ready) == (
            "analyst",
            "dev",
            1,
            1,
            "queued",
            True,
        )
        assert [r.event for r in store.history(t.id)] == ["created"]

    def test_missing_tasks_are_none(self, store: Store) -> None:
        assert store.get_task("nope") is None and store.get_task_by_id(12345) is None

    def test_list_tasks_by_stage_in_id_order_with_a_limit(self, store: Store) -> None:
        a, b, c = (self.task(store, f"K-{i}", stage=s) for i, s in enumerate(("x", "y", "x")))
        assert store.list_tasks() == [a, b, c]
        assert store.list_tasks(stage="x") == [a, c]
        assert store.list_tasks(limit=2) == [a, b]

    def test_quiet_tasks_are_old_enough_and_have_no_open_job(self, store: Store) -> None:
        busy = self.task(store, "K-1", agent="dev")
        idle = self.task(store, "K-2")
        other = self.task(store, "K-3", stage="review")
        assert store.quiet_tasks(("dev", "review"), older_than=NOW) == [idle, other]
        assert store.quiet_tasks(("dev",), older_than=NOW - 1) == []
        assert store.quiet_tasks((), older_than=NOW) == []
        assert store.quiet_count("dev", older_than=NOW) == 1
        assert busy not in store.quiet_tasks(("dev",), older_than=NOW + 100)

    def test_counts_show_jobs_stages_outbox_and_blocks(self, store: Store) -> None:
        t = self.task(store, "K-1", agent="dev")
        self.task(store, "K-2", stage="review")
        store.set_blocked(t.id, blocked=True, reason="r", now=NOW, audit=audit(t), escalated=True)
        store.notify("n1", None, "hello", now=NOW)
        c = store.counts()
        assert c["jobs"] == {"queued": 1}
        assert c["stages"] == {"dev": 1, "review": 1}
        assert (c["outbox_pending"], c["blocked"], c["escalated"]) == (1, 1, 1)

    def test_block_and_unblock_each_happen_once(self, store: Store) -> None:
        t = self.task(store, "K-1")
        note = ("blocked:K-1", "K-1 is blocked")
        assert store.set_blocked(
            t.id, blocked=True, reason="why", now=NOW + 1, audit=audit(t, "b"), notify=note
        )
        assert not store.set_blocked(t.id, blocked=True, reason="again", now=NOW + 2, audit=audit(t, "b"))
        got = self.fresh(store, t)
        assert (got.blocked, got.block_reason, got.updated_at) == (True, "why", NOW + 1)
        assert store.count_events(t.id, "b") == 1
        assert [n.key for n in store.pending_notifications(now=NOW + 3)] == ["blocked:K-1"]
        assert store.set_blocked(t.id, blocked=False, reason=None, now=NOW + 3, audit=audit(t, "u"))
        assert not self.fresh(store, t).blocked

    def test_unblocking_can_clear_escalation_and_retries(self, store: Store) -> None:
        t = self.task(store, "K-1")
        assert commit(store, t, "dev2", retry=True)
        store.set_blocked(t.id, blocked=True, reason="x", now=NOW, audit=audit(t), escalated=True)
        store.set_blocked(
            t.id, blocked=False, reason=None, now=NOW, audit=audit(t), escalated=False, reset_retries=True
        )
        got = self.fresh(store, t)
        assert (got.blocked, got.escalated, got.retries) == (False, False, 0)

    def test_a_tracker_item_gets_one_task_however_often_it_is_seen(
        self, store: Store, reopen: Callable[[], Store]
    ) -> None:
        kw = dict(key="P-7", title="item", repo="app", stage="analysis", now=NOW, actor="w", agent="analyst")
        t, created = store.ensure_task_for_ref(ref="item-7", **kw)  # type: ignore[arg-type]
        again, created_again = reopen().ensure_task_for_ref(ref="item-7", **kw)  # type: ignore[arg-type]
        assert created and not created_again and again == t and t.tracker_ref == "item-7"
        assert store.task_for_ref("item-7") == t and store.task_for_ref("item-8") is None
        assert len(store.jobs(task_id=t.id)) == 1
        assert store.history(t.id)[0].detail["ref"] == "item-7"

    def test_a_tracker_item_whose_key_is_taken_is_refused(self, store: Store) -> None:
        self.task(store, "P-7")
        with pytest.raises(KeyTaken) as e:
            store.ensure_task_for_ref(
                ref="item-7", key="P-7", title="t", repo="app", stage="a", now=NOW, actor="w", agent=None
            )
        assert e.value.key == "P-7" and store.task_for_ref("item-7") is None

    # -- the compare-and-swap of a stage ------------------------------------------------

    def test_a_transition_bumps_the_version_and_writes_its_audit_row(self, store: Store) -> None:
        t = self.task(store, "K-1")
        assert commit(store, t, "review", now=NOW + 5)
        got = self.fresh(store, t)
        assert (got.stage, got.version, got.retries, got.updated_at) == ("review", 2, 0, NOW + 5)
        last = store.history(t.id)[-1]
        assert (last.event, last.from_stage, last.to_stage, last.at) == (
            "stage_changed",
            "dev",
            "review",
            NOW + 5,
        )

    def test_a_stale_transition_changes_nothing(self, store: Store) -> None:
        t = self.task(store, "K-1")
        kw: dict[str, Any] = {"job": NextJob("rev"), "message": Message("task:K-1:v2", "moved")}
        assert commit(store, t, "review", **kw)
        before = (store.history(t.id), store.jobs(), store.outbox_rows(pending_only=False))
        assert not commit(store, t, "review", **kw)  # the same version again
        assert not commit(store, t, "merge", expected_version=2, expected_stage="dev")  # the wrong stage
        assert (store.history(t.id), store.jobs(), store.outbox_rows(pending_only=False)) == before
        assert (self.fresh(store, t).stage, self.fresh(store, t).version) == ("review", 2)

    def test_two_connections_racing_on_one_version_one_wins(
        self, store: Store, reopen: Callable[[], Store]
    ) -> None:
        t = self.task(store, "K-1")
        other = reopen()
        results = [commit(store, t, "review"), commit(other, t, "merge")]
        assert results == [True, False]
        assert self.fresh(other, t).stage == "review"

    def test_a_transition_queues_the_next_job_for_the_new_version(self, store: Store) -> None:
        t = self.task(store, "K-1")
        assert commit(store, t, "review", job=NextJob("reviewer", "look"))
        (j,) = store.jobs(task_id=t.id)
        assert (j.agent, j.stage, j.task_version, j.note, j.queued_at) == (
            "reviewer",
            "review",
            2,
            "look",
            NOW + 1,
        )

    def test_a_transition_queues_its_message_once_by_key(self, store: Store) -> None:
        a, b = self.task(store, "K-1"), self.task(store, "K-2")
        assert commit(store, a, "review", message=Message("same-key", "first"))
        assert commit(store, b, "review", message=Message("same-key", "second"))
        (n,) = store.pending_notifications(now=NOW + 2)
        assert (n.key, n.text, n.task_id) == ("same-key", "first", a.id)

    def test_a_retry_counts_and_an_escalation_blocks(self, store: Store) -> None:
        t = self.task(store, "K-1")
        assert commit(store, t, "dev", retry=True, escalation="too many retries", job=NextJob("dev"))
        got = self.fresh(store, t)
        assert (got.retries, got.version, got.blocked, got.escalated, got.block_reason) == (
            1,
            2,
            True,
            True,
            "too many retries",
        )
        assert store.jobs(task_id=t.id) == []  # escalated: nobody is given the task

    def test_no_transition_while_an_acting_effect_is_in_flight(self, store: Store) -> None:
        t = self.task(store, "K-1")
        me_ = owner(1)
        store.start_effect(t.id, "dev->merge", "merge", owner=me_, now=NOW, seen=None, stage="dev", version=1)
        assert store.mark_effect_acting(t.id, "dev->merge", "merge", owner=me_, stage="dev", version=1)
        assert not commit(store, t, "cancelled", unless_in_flight=lambda e: e.owner == me_)
        assert self.fresh(store, t).stage == "dev"
        assert commit(store, t, "cancelled", unless_in_flight=lambda e: False)

    def test_finishing_a_task_releases_the_tasks_waiting_on_it(self, store: Store) -> None:
        base, waiter = self.task(store, "K-1"), self.task(store, "K-2", agent="dev")
        store.add_dep(waiter.id, base.id, unfinished=True, now=NOW, audit=audit(waiter), notification=None)
        assert store.jobs(task_id=waiter.id)[0].ready is False
        assert commit(store, base, "done", release=RELEASED)
        assert self.fresh(store, waiter).waiting_on == 0
        assert store.jobs(task_id=waiter.id)[0].ready is True
        assert store.count_events(waiter.id, "released") == 1
        told = [(n.key, n.text) for n in store.pending_notifications(now=NOW + 2)]
        assert ("released:K-2:K-1", "K-2 waits no more on K-1") in told

    def test_a_task_waiting_on_two_is_released_by_the_second(self, store: Store) -> None:
        a, b, w = self.task(store, "K-1"), self.task(store, "K-2"), self.task(store, "K-3", agent="dev")
        for on in (a, b):
            store.add_dep(w.id, on.id, unfinished=True, now=NOW, audit=audit(w), notification=None)
        assert self.fresh(store, w).waiting_on == 2
        commit(store, a, "done", release=RELEASED)
        assert self.fresh(store, w).waiting_on == 1 and not store.jobs(task_id=w.id)[0].ready
        commit(store, b, "done", release=RELEASED)
        assert self.fresh(store, w).waiting_on == 0 and store.jobs(task_id=w.id)[0].ready

    # -- audit -------------------------------------------------------------------------

    def test_audit_rows_come_back_in_order_with_their_detail(self, store: Store) -> None:
        t = self.task(store, "K-1")
        store.audit(Audit(t.id, "me", "note", {"n": 1, "nested": {"a": [1, 2]}}, "x", "y"), now=NOW + 1)
        store.audit(audit(t, "note", n=2), now=NOW + 2)
        rows = store.history(t.id)
        assert [r.event for r in rows] == ["created", "note", "note"]
        assert (rows[1].actor, rows[1].from_stage, rows[1].to_stage, rows[1].at) == ("me", "x", "y", NOW + 1)
        assert rows[1].detail == {"n": 1, "nested": {"a": [1, 2]}}
        assert rows[1].id < rows[2].id
        assert store.count_events(t.id, "note") == 2 and store.count_events(t.id, "other") == 0

    # -- leases ------------------------------------------------------------------------

    def test_a_free_lease_is_taken_and_audited(self, store: Store) -> None:
        t = self.task(store, "K-1")
        me_ = owner(1)
        assert store.acquire_lease(
            "task:K-1", owner=me_, actor="a", purpose="advance", now=NOW, audit_task=t.id, detail={"x": 1}
        ) == (True, None)
        lease = store.get_lease("task:K-1")
        assert lease is not None
        assert (lease.owner, lease.actor, lease.purpose, lease.acquired_at) == (me_, "a", "advance", NOW)
        assert store.history(t.id)[-1].detail == {"lease": "task:K-1", "x": 1}
        assert store.list_leases() == [lease]

    def test_the_same_owner_takes_its_lease_again(self, store: Store) -> None:
        me_ = owner(1)
        store.acquire_lease("L", owner=me_, actor="a", purpose="p", now=NOW)
        assert store.acquire_lease("L", owner=me_, actor="a", purpose="p", now=NOW + 1, alive=alive(me_)) == (
            True,
            None,
        )
        assert store.get_lease("L").acquired_at == NOW  # type: ignore[union-attr]

    def test_a_live_owner_keeps_its_lease(self, store: Store, reopen: Callable[[], Store]) -> None:
        a, b = owner(1), owner(2)
        store.acquire_lease("L", owner=a, actor="a", purpose="p", now=NOW)
        ok, holder = reopen().acquire_lease("L", owner=b, actor="b", purpose="p", now=NOW, alive=alive(a, b))
        assert not ok and holder is not None and holder.owner == a
        assert store.get_lease("L").owner == a  # type: ignore[union-attr]

    def test_a_dead_owners_lease_is_reclaimed_and_audited(self, store: Store) -> None:
        t = self.task(store, "K-1")
        a, b = owner(1), owner(2)
        store.acquire_lease("L", owner=a, actor="old", purpose="p", now=NOW)
        ok, dead = store.acquire_lease(
            "L", owner=b, actor="new", purpose="p", now=NOW + 1, audit_task=t.id, alive=alive(b)
        )
        assert ok and dead is not None and dead.owner == a
        assert store.get_lease("L").owner == b  # type: ignore[union-attr]
        reclaimed = [r for r in store.history(t.id) if r.event == "lease_reclaimed"]
        assert reclaimed[0].detail["dead_owner"] == a.as_dict() and reclaimed[0].detail["dead_actor"] == "old"

    def test_a_lease_is_released_only_by_its_owner_unless_forced(self, store: Store) -> None:
        t = self.task(store, "K-1")
        a, b = owner(1), owner(2)
        store.acquire_lease("L", owner=a, actor="a", purpose="p", now=NOW)
        assert not store.release_lease("L", owner=b, now=NOW)
        assert store.release_lease("L", owner=a, now=NOW, audit=audit(t, "released"))
        assert store.get_lease("L") is None and store.count_events(t.id, "released") == 1
        assert not store.release_lease("L", owner=a, now=NOW, audit=audit(t, "released"))
        assert store.count_events(t.id, "released") == 1  # nothing released: nothing audited
        store.acquire_lease("L", owner=a, actor="a", purpose="p", now=NOW)
        assert store.release_lease("L", owner=None, now=NOW)
        assert store.get_lease("L") is None

    def test_dead_leases_and_clearing_them(self, store: Store) -> None:
        t = self.task(store, "K-1")
        a, b = owner(1), owner(2)
        store.acquire_lease("L1", owner=a, actor="a", purpose="p", now=NOW)
        store.acquire_lease("L2", owner=b, actor="b", purpose="p", now=NOW)
        assert [x.name for x in store.dead_leases(("L1", "L2", "L3"), alive=alive(b))] == ["L1"]
        assert store.clear_dead_lease("L2", actor="r", now=NOW, audit_task=t.id, alive=alive(b)) is None
        cleared = store.clear_dead_lease("L1", actor="r", now=NOW, audit_task=t.id, alive=alive(b))
        assert cleared is not None and cleared.owner == a
        assert store.get_lease("L1") is None and store.count_events(t.id, "lease_reclaimed") == 1
        assert store.clear_dead_lease("L1", actor="r", now=NOW, audit_task=t.id, alive=alive()) is None

    def test_a_lease_whose_owner_died_on_this_host_is_reclaimed_by_default(self, store: Store) -> None:
        store.acquire_lease("L", owner=dead_here(), actor="a", purpose="p", now=NOW)
        ok, dead = store.acquire_lease("L", owner=me(), actor="b", purpose="p", now=NOW)
        assert ok and dead is not None and dead.owner == dead_here()

    # -- the merge line ------------------------------------------------------------------

    def test_the_merge_line_is_held_by_one_visit(self, store: Store) -> None:
        a, b = self.task(store, "K-1", stage="merge"), self.task(store, "K-2", stage="merge")
        line = dict(stage="merge", now=NOW, max_age_s=600.0)
        assert store.take_merge_line("app", task_id=a.id, version=1, **line) is None  # type: ignore[arg-type]
        assert store.take_merge_line("app", task_id=a.id, version=1, **line) is None  # type: ignore[arg-type]
        assert store.take_merge_line("app", task_id=b.id, version=1, **line) == a.id  # type: ignore[arg-type]
        assert store.take_merge_line("lib", task_id=b.id, version=1, **line) is None  # type: ignore[arg-type]
        assert store.merge_line_holder("app") == (a.id, 1, NOW)

    def test_the_merge_line_passes_on_when_its_holder_leaves_blocks_or_ages(self, store: Store) -> None:
        a, b = self.task(store, "K-1", stage="merge"), self.task(store, "K-2", stage="merge")

        def take(t: Task, now: float = NOW) -> int | None:
            return store.take_merge_line(
                "app", task_id=t.id, stage="merge", version=1, now=now, max_age_s=600
            )

        assert take(a) is None and take(b) == a.id
        assert take(b, NOW + 600) is None  # aged out
        assert take(a, NOW + 601) == b.id
        store.set_blocked(b.id, blocked=True, reason="x", now=NOW, audit=audit(b))
        assert take(a, NOW + 602) is None  # its holder is blocked
        c = self.task(store, "K-3", stage="merge")
        assert commit(store, a, "deploy")
        assert take(c, NOW + 603) is None  # its holder moved on
        assert store.merge_line_holder("app") == (c.id, 1, NOW + 603)
        assert store.merge_line_holder("nope") is None

    # -- the effect ledger -----------------------------------------------------------------

    def test_an_effect_starts_once_durably_recorded(self, store: Store) -> None:
        t = self.task(store, "K-1")
        a = owner(1)
        assert store.start_effect(
            t.id, "tr", "merge", owner=a, now=NOW, seen=None, stage="dev", version=1
        ) == (
            "started",
            None,
        )
        row = store.get_effect(t.id, "tr", "merge")
        assert row is not None
        assert (row.state, row.attempts, row.owner, row.started_at, row.acting, row.ended_at) == (
            "started",
            1,
            a,
            NOW,
            False,
            None,
        )
        assert store.started_effects() == [row] and store.effects_of(t.id) == [row]

    def test_a_second_first_start_sees_the_row(self, store: Store, reopen: Callable[[], Store]) -> None:
        t = self.task(store, "K-1")
        a, b = owner(1), owner(2)
        store.start_effect(t.id, "tr", "merge", owner=a, now=NOW, seen=None, stage="dev", version=1)
        outcome, row = reopen().start_effect(
            t.id, "tr", "merge", owner=b, now=NOW, seen=None, stage="dev", version=1
        )
        assert outcome == "changed" and row is not None and row.owner == a

    def test_taking_over_an_effect_is_a_compare_and_swap_on_the_row_seen(self, store: Store) -> None:
        t = self.task(store, "K-1")
        a, b, c = owner(1), owner(2), owner(3)
        at = {"stage": "dev", "version": 1}
        store.start_effect(t.id, "tr", "merge", owner=a, now=NOW, seen=None, **at)
        seen = store.get_effect(t.id, "tr", "merge")
        assert store.start_effect(t.id, "tr", "merge", owner=b, now=NOW + 1, seen=seen, **at) == (
            "started",
            seen,
        )
        outcome, current = store.start_effect(t.id, "tr", "merge", owner=c, now=NOW + 2, seen=seen, **at)
        assert outcome == "changed" and current is not None and (current.owner, current.attempts) == (b, 2)

    def test_an_effect_of_a_task_that_moved_does_not_start(self, store: Store) -> None:
        t = self.task(store, "K-1")
        assert store.start_effect(
            t.id, "tr", "deploy", owner=owner(1), now=NOW, seen=None, stage="dev", version=2
        ) == ("moved", None)
        assert store.get_effect(t.id, "tr", "deploy") is None

    def test_an_effects_process_is_recorded_only_by_its_owner(self, store: Store) -> None:
        t = self.task(store, "K-1")
        a = owner(1)
        store.start_effect(t.id, "tr", "deploy", owner=a, now=NOW, seen=None, stage="dev", version=1)
        assert not store.set_effect_process(t.id, "tr", "deploy", owner=owner(2), pid=10, pgid=10, start="s")
        assert store.set_effect_process(t.id, "tr", "deploy", owner=a, pid=10, pgid=11, start="s")
        row = store.get_effect(t.id, "tr", "deploy")
        assert row is not None and (row.proc_pid, row.proc_pgid, row.proc_start) == (10, 11, "s")

    def test_an_effect_acts_only_while_its_task_stays_put(self, store: Store) -> None:
        t = self.task(store, "K-1")
        a = owner(1)
        store.start_effect(t.id, "tr", "merge", owner=a, now=NOW, seen=None, stage="dev", version=1)
        assert not store.mark_effect_acting(t.id, "tr", "merge", owner=owner(2), stage="dev", version=1)
        commit(store, t, "cancelled")
        assert not store.mark_effect_acting(t.id, "tr", "merge", owner=a, stage="dev", version=1)
        assert store.get_effect(t.id, "tr", "merge").acting is False  # type: ignore[union-attr]

    def test_ending_an_effect_is_conditional_and_audited(self, store: Store) -> None:
        t = self.task(store, "K-1")
        a = owner(1)
        store.start_effect(t.id, "tr", "merge", owner=a, now=NOW, seen=None, stage="dev", version=1)
        end = dict(state="done", result={"sha": "abc"}, now=NOW + 9, audit=audit(t, "effect_done"))
        assert not store.end_effect(t.id, "tr", "merge", owner=owner(2), **end)  # type: ignore[arg-type]
        assert store.end_effect(t.id, "tr", "merge", owner=a, **end)  # type: ignore[arg-type]
        row = store.get_effect(t.id, "tr", "merge")
        assert row is not None and (row.state, row.ended_at) == ("done", NOW + 9)
        assert row.result is not None and '"sha"' in row.result
        assert store.count_events(t.id, "effect_done") == 1 and store.started_effects() == []

    def test_ending_on_a_probes_verdict_needs_the_row_probed(self, store: Store) -> None:
        t = self.task(store, "K-1")
        store.start_effect(t.id, "tr", "merge", owner=owner(1), now=NOW, seen=None, stage="dev", version=1)
        seen = store.get_effect(t.id, "tr", "merge")
        assert seen is not None
        store.start_effect(t.id, "tr", "merge", owner=owner(2), now=NOW, seen=seen, stage="dev", version=1)
        end = dict(state="done", result={}, now=NOW, audit=audit(t))
        assert not store.end_effect(t.id, "tr", "merge", seen=seen, **end)  # type: ignore[arg-type]
        assert store.end_effect(t.id, "tr", "merge", seen=store.get_effect(t.id, "tr", "merge"), **end)  # type: ignore[arg-type]

    # -- jobs --------------------------------------------------------------------------

    def test_enqueue_is_idempotent_per_visit_and_attempt(self, store: Store) -> None:
        t = self.task(store, "K-1")
        kw = dict(task_id=t.id, agent="dev", stage="dev", task_version=1, now=NOW)
        j = store.enqueue_job(**kw, audit=audit(t, "queued"))  # type: ignore[arg-type]
        assert j is not None and (j.state, j.attempt, j.ready, j.owner, j.queued_at) == (
            "queued",
            1,
            True,
            None,
            NOW,
        )
        assert store.enqueue_job(**kw, audit=audit(t, "queued")) is None  # type: ignore[arg-type]
        assert store.count_events(t.id, "queued") == 1
        assert store.enqueue_job(**kw, attempt=2, not_before=NOW + 60, note="again") is not None  # type: ignore[arg-type]
        assert [(x.attempt, x.not_before, x.note) for x in store.jobs(task_id=t.id)] == [
            (1, 0.0, None),
            (2, NOW + 60, "again"),
        ]

    def test_a_claim_takes_the_highest_priority_then_the_oldest(self, store: Store, tmp_path: Path) -> None:
        first = self.task(store, "K-1", agent="dev")
        self.task(store, "K-2", agent="dev")
        j = store.claim_job(
            owner=owner(1), now=NOW + 1, log_dir=tmp_path, max_running=5, timeouts={"dev": 60}
        )
        assert j is not None and j.task_id == first.id
        assert (j.state, j.owner, j.started_at, j.deadline) == ("running", owner(1), NOW + 1, NOW + 61)
        assert j.log_path == str(tmp_path / f"job-{j.id}.log")
        assert store.count_events(first.id, "job_claimed") == 1
        assert store.running_count() == 1 and store.active_job(first.id) == j

    def test_a_claims_audit_row_and_deadline_do_not_depend_on_the_backend(
        self, store: Store, tmp_path: Path
    ) -> None:
        # PostgreSQL claims through a server-side function, SQLite through jobs.py's
        # statement: the same row, audit detail and deadlines (none for an agent without
        # one, whatever its name holds).
        name = 'rév "x" \\ [b]'
        t = self.task(store, "K-1", agent=name)
        self.task(store, "K-2", agent=name)
        j = store.claim_job(
            owner=owner(1), now=NOW, log_dir=tmp_path, max_running=5, agent_limits={name: 1},
            timeouts={name: None, "dev": 60},
        )  # fmt: skip
        assert j is not None and (j.agent, j.deadline, j.attempt) == (name, None, 1)
        (row,) = [r for r in store.history(t.id) if r.event == "job_claimed"]
        assert (row.actor, row.at, row.detail) == (
            owner(1).label(),
            NOW,
            {"job": j.id, "agent": name, "attempt": 1},
        )
        again = dict(owner=owner(2), now=NOW, log_dir=tmp_path, max_running=5)
        assert store.claim_job(**again, agent_limits={name: 1}) is None  # type: ignore[arg-type]
        assert store.claim_job(**again, agent_limits={name: 2}) is not None  # type: ignore[arg-type]

    def test_a_claim_respects_the_global_limit(self, store: Store, tmp_path: Path) -> None:
        for i in range(3):
            self.task(store, f"K-{i}", agent="dev")
        claim = dict(now=NOW, log_dir=tmp_path, max_running=2)
        assert store.claim_job(owner=owner(1), **claim) is not None  # type: ignore[arg-type]
        assert store.claim_job(owner=owner(2), **claim) is not None  # type: ignore[arg-type]
        assert store.claim_job(owner=owner(3), **claim) is None  # type: ignore[arg-type]
        assert store.claimable_count(now=NOW) == 1

    def test_a_claim_respects_each_agents_limit(self, store: Store, tmp_path: Path) -> None:
        self.task(store, "K-1", agent="dev")
        self.task(store, "K-2", agent="dev")
        rev = self.task(store, "K-3", agent="reviewer")
        claim = dict(now=NOW, log_dir=tmp_path, max_running=10, agent_limits={"dev": 1, "reviewer": 0})
        assert store.claim_job(owner=owner(1), **claim).agent == "dev"  # type: ignore[arg-type, union-attr]
        got = store.claim_job(owner=owner(2), **claim)  # type: ignore[arg-type]
        assert got is not None and got.task_id == rev.id  # dev is full; 0 means no limit
        assert store.claim_job(owner=owner(3), **claim) is None  # type: ignore[arg-type]

    def test_a_claim_skips_jobs_not_ready_or_not_yet_due(self, store: Store, tmp_path: Path) -> None:
        base, waiter = self.task(store, "K-1"), self.task(store, "K-2", agent="dev")
        store.add_dep(waiter.id, base.id, unfinished=True, now=NOW, audit=audit(waiter), notification=None)
        later = self.task(store, "K-3")
        store.enqueue_job(
            task_id=later.id, agent="dev", stage="dev", task_version=1, now=NOW, not_before=NOW + 60
        )
        claim = dict(owner=owner(1), log_dir=tmp_path, max_running=10)
        assert store.claim_job(now=NOW, **claim) is None  # type: ignore[arg-type]
        assert store.claimable_count(now=NOW) == 0 and store.claimable_count(now=NOW, deps_enabled=False) == 1
        assert store.claim_job(now=NOW + 60, **claim).task_id == later.id  # type: ignore[arg-type, union-attr]
        got = store.claim_job(now=NOW + 60, deps_enabled=False, **claim)  # type: ignore[arg-type]
        assert got is not None and got.task_id == waiter.id

    def test_a_claim_by_id_takes_that_job_or_nothing(self, store: Store, tmp_path: Path) -> None:
        self.task(store, "K-1", agent="dev")
        second = self.task(store, "K-2", agent="dev")
        (j,) = store.jobs(task_id=second.id)
        claim = dict(owner=owner(1), now=NOW, log_dir=tmp_path, max_running=10)
        assert store.claim_job(job_id=j.id, **claim).id == j.id  # type: ignore[arg-type, union-attr]
        assert store.claim_job(job_id=j.id, **claim) is None  # type: ignore[arg-type]

    def test_concurrent_claims_never_pass_the_limit(
        self, store: Store, reopen: Callable[[], Store], tmp_path: Path
    ) -> None:
        seed = random.randrange(2**32)
        print(f"seed {seed}")
        rng = random.Random(seed)
        for i in range(12):
            self.task(store, f"K-{i}", agent=rng.choice(("dev", "rev")))
        stores = [reopen() for _ in range(4)]
        claimed: list[int] = []
        lock = threading.Lock()

        def claimer(s: Store, n: int) -> None:
            for _ in range(4):
                j = s.claim_job(owner=owner(n), now=NOW, log_dir=tmp_path, max_running=5)
                if j is not None:
                    with lock:
                        claimed.append(j.id)

        threads = [threading.Thread(target=claimer, args=(s, n)) for n, s in enumerate(stores)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(timeout=60)
        assert len(claimed) == len(set(claimed)) == 5
        assert store.running_count() == 5

    def test_claims_keep_both_limits_while_other_writers_end_jobs_and_change_readiness(
        self, store: Store, reopen: Callable[[], Store], tmp_path: Path
    ) -> None:
        # Claimers race finishers (which free slots) and a writer toggling a task's
        # readiness (a dependency added and removed): at no commit may more than 3 jobs
        # run, nor more than 1 of agent "rev"; every job is claimed at most once.
        seed = random.randrange(2**32)
        print(f"seed {seed}")
        rng = random.Random(seed)
        base = self.task(store, "BASE")
        tasks = [self.task(store, f"K-{i}", agent=rng.choice(("dev", "rev"))) for i in range(16)]
        gate = tasks[0]
        stores = [reopen() for _ in range(5)]
        claimed: list[int] = []
        peaks: list[tuple[int, int]] = []
        lock = threading.Lock()
        stop = threading.Event()

        def counts(s: Store) -> tuple[int, int]:
            r = s.db.one(
                "SELECT count(*), sum(CASE WHEN agent = 'rev' THEN 1 ELSE 0 END) "
                "FROM jobs WHERE state = 'running'"
            )
            return int(r[0]), int(r[1] or 0)

        def claimer(s: Store, n: int) -> None:
            deadline = time.monotonic() + 60
            while len(claimed) < 10 and time.monotonic() < deadline:  # slots free as jobs end
                j = s.claim_job(
                    owner=owner(n), now=NOW, log_dir=tmp_path, max_running=3, agent_limits={"rev": 1}
                )
                if j is not None:
                    with lock:
                        claimed.append(j.id)
                peaks.append(counts(s))

        def finisher(s: Store) -> None:
            while not stop.is_set():
                for j in s.jobs(states=("running",))[:1]:
                    s.finish_job(
                        j.id, state="succeeded", exit_code=0, reason="ok", now=NOW, head_sha=None,
                        audit=audit(j.task_id, "end"),
                    )  # fmt: skip
                peaks.append(counts(s))

        def toggler(s: Store) -> None:
            while not stop.is_set():
                s.add_dep(gate.id, base.id, unfinished=True, now=NOW, audit=audit(gate), notification=None)
                peaks.append(counts(s))
                s.remove_dep(gate.id, base.id, unfinished=True, now=NOW, audit=audit(gate))

        claimers = [threading.Thread(target=claimer, args=(s, n)) for n, s in enumerate(stores[:3])]
        others = [
            threading.Thread(target=finisher, args=(stores[3],)),
            threading.Thread(target=toggler, args=(stores[4],)),
        ]
        for th in claimers + others:
            th.start()
        for th in claimers:
            th.join(timeout=120)
        stop.set()
        for th in others:
            th.join(timeout=60)
        assert len(claimed) == len(set(claimed)) >= 10
        assert max(p[0] for p in peaks) <= 3 and max(p[1] for p in peaks) <= 1, seed
        for j in store.jobs():
            assert (j.state == "queued") == (j.id not in claimed)
        assert store.running_count() <= 3

    def test_finishing_a_job_is_conditional_on_its_state_and_owner(
        self, store: Store, tmp_path: Path
    ) -> None:
        t = self.task(store, "K-1", agent="dev")
        j = store.claim_job(owner=owner(1), now=NOW, log_dir=tmp_path, max_running=1)
        assert j is not None
        end = dict(
            state="succeeded", exit_code=0, reason="ok", now=NOW + 5, head_sha="abc", audit=audit(t, "end")
        )
        assert not store.finish_job(j.id, owner=owner(2), **end)  # type: ignore[arg-type]
        assert store.finish_job(j.id, owner=owner(1), **end)  # type: ignore[arg-type]
        assert not store.finish_job(j.id, **end)  # type: ignore[arg-type]
        got = store.get_job(j.id)
        assert got is not None
        assert (got.state, got.exit_code, got.reason, got.ended_at, got.head_sha) == (
            "succeeded",
            0,
            "ok",
            NOW + 5,
            "abc",
        )
        assert store.count_events(t.id, "end") == 1 and store.active_job(t.id) is None
        assert store.running_count() == 0

    def test_a_queued_job_can_be_finished_without_running(self, store: Store) -> None:
        t = self.task(store, "K-1", agent="dev")
        (j,) = store.jobs(task_id=t.id)
        assert store.finish_job(
            j.id, state="cancelled", exit_code=None, reason="c", now=NOW, head_sha=None, audit=audit(t)
        )
        assert store.jobs(task_id=t.id, states=("cancelled",))[0].id == j.id

    def test_job_lookups(self, store: Store, tmp_path: Path) -> None:
        t = self.task(store, "K-1", agent="dev")
        j2 = store.enqueue_job(task_id=t.id, agent="dev", stage="dev", task_version=1, now=NOW, attempt=2)
        assert j2 is not None
        assert store.latest_job(t.id, "dev", 1) == j2 and store.latest_job(t.id, "dev", 2) is None
        store.set_job_process(j2.id, pgid=4242, pgid_start="77")
        got = store.get_job(j2.id)
        assert got is not None and (got.pgid, got.pgid_start) == (4242, "77")
        assert [j.attempt for j in store.jobs(states=("queued",))] == [1, 2]
        assert store.jobs(task_id=t.id + 1) == [] and store.get_job(99_999) is None

    # -- dependencies ------------------------------------------------------------------

    def test_a_dependency_counts_and_is_declared_once(self, store: Store) -> None:
        a, b = self.task(store, "K-1"), self.task(store, "K-2", agent="dev")
        note = ("waits:K-2:K-1", "K-2 waits on K-1")
        assert (
            store.add_dep(b.id, a.id, unfinished=True, now=NOW, audit=audit(b, "dep"), notification=note)
            is None
        )
        assert (
            store.add_dep(b.id, a.id, unfinished=True, now=NOW, audit=audit(b, "dep"), notification=note)
            is None
        )
        assert self.fresh(store, b).waiting_on == 1 and store.count_events(b.id, "dep") == 1
        assert store.deps_of(b.id) == [self.fresh(store, a)] and store.dependents_of(a.id) == [
            self.fresh(store, b)
        ]
        assert store.deps_edges() == [(b.id, a.id)] and store.waiting_tasks() == [self.fresh(store, b)]
        assert [n.key for n in store.pending_notifications(now=NOW)] == ["waits:K-2:K-1"]

    def test_a_dependency_on_a_finished_task_does_not_wait(self, store: Store) -> None:
        a, b = self.task(store, "K-1", stage="done"), self.task(store, "K-2", agent="dev")
        store.add_dep(b.id, a.id, unfinished=False, now=NOW, audit=audit(b), notification=("n", "t"))
        assert self.fresh(store, b).waiting_on == 0 and store.jobs(task_id=b.id)[0].ready
        assert store.pending_notifications(now=NOW) == []

    def test_a_dependency_that_closes_a_cycle_is_refused(self, store: Store) -> None:
        a, b, c = (self.task(store, f"K-{i}") for i in range(3))
        for x, y in ((a, b), (b, c)):
            store.add_dep(x.id, y.id, unfinished=True, now=NOW, audit=audit(x), notification=None)
        assert store.add_dep(c.id, a.id, unfinished=True, now=NOW, audit=audit(c), notification=None) == [
            a.id,
            b.id,
            c.id,
        ]
        assert store.add_dep(a.id, a.id, unfinished=True, now=NOW, audit=audit(a), notification=None) == [
            a.id
        ]
        assert len(store.deps_edges()) == 2 and self.fresh(store, c).waiting_on == 0

    def test_removing_a_dependency_frees_the_waiter(self, store: Store) -> None:
        a, b = self.task(store, "K-1"), self.task(store, "K-2", agent="dev")
        store.add_dep(b.id, a.id, unfinished=True, now=NOW, audit=audit(b), notification=None)
        assert store.remove_dep(b.id, a.id, unfinished=True, now=NOW, audit=audit(b, "undep"))
        assert not store.remove_dep(b.id, a.id, unfinished=True, now=NOW, audit=audit(b, "undep"))
        assert self.fresh(store, b).waiting_on == 0 and store.jobs(task_id=b.id)[0].ready
        assert store.count_events(b.id, "undep") == 1 and store.deps_edges() == []

    def test_recount_repairs_wrong_counts_and_readiness(self, store: Store) -> None:
        a, b = self.task(store, "K-1"), self.task(store, "K-2", agent="dev")
        c = self.task(store, "K-3", stage="done")
        store.add_dep(
            b.id, a.id, unfinished=False, now=NOW, audit=audit(b), notification=None
        )  # a wrong count
        store.add_dep(a.id, c.id, unfinished=True, now=NOW, audit=audit(a), notification=None)  # another
        assert store.recount_waiting(FINISHED, NOW) == 2
        assert (self.fresh(store, a).waiting_on, self.fresh(store, b).waiting_on) == (0, 1)
        assert not store.jobs(task_id=b.id)[0].ready
        assert store.recount_waiting(FINISHED, NOW) == 0

    def test_unfinished_edges_leave_out_finished_and_cancelled_tasks(self, store: Store) -> None:
        a, b = self.task(store, "K-1"), self.task(store, "K-2")
        done, gone = self.task(store, "K-3", stage="done"), self.task(store, "K-4", stage="cancelled")
        for x, y in ((a, b), (a, done), (b, gone)):
            store.add_dep(x.id, y.id, unfinished=False, now=NOW, audit=audit(x), notification=None)
        assert store.unfinished_edges(FINISHED) == [(a.id, b.id)]

    # -- verdicts and commit statuses ----------------------------------------------------

    def test_the_latest_verdict_of_a_visit(self, store: Store) -> None:
        t = self.task(store, "K-1")
        for i, word in enumerate(("reject", "approve")):
            store.add_verdict(
                Verdict(t.id, 1, "review", "sha", word, "rev", f"r{i}", NOW + i), audit=audit(t, "v")
            )
        assert store.latest_verdict(t.id, 1) == Verdict(
            t.id, 1, "review", "sha", "approve", "rev", "r1", NOW + 1
        )
        assert store.latest_verdict(t.id, 2) is None and store.count_events(t.id, "v") == 2

    def test_a_commit_status_is_replaced_per_context(self, store: Store) -> None:
        st = dict(repo="app", sha="abc", now=NOW)
        store.set_commit_status(context="ci", state="pending", description=None, **st)  # type: ignore[arg-type]
        store.set_commit_status(context="ci", state="success", description="ok", **st)  # type: ignore[arg-type]
        store.set_commit_status(context="lint", state="failure", description=None, **st)  # type: ignore[arg-type]
        assert store.commit_statuses("app", "abc") == [("ci", "success", "ok"), ("lint", "failure", None)]
        assert store.commit_statuses("app", "def") == []

    # -- caches, budgets, holds, facts -------------------------------------------------------

    def test_tracker_states_are_replaced_and_keep_aliases(self, store: Store) -> None:
        assert store.cached_states("p") == ([], None)
        store.cache_states("p", [("s1", "Todo", "unstarted"), ("s2", "Done", "completed")], now=NOW)
        store.cache_states(
            "p",
            [("s1", "Todo", "unstarted"), ("s1", "To do", "unstarted"), ("s1", "Todo", "unstarted")],
            now=NOW + 1,
        )
        assert store.cached_states("p") == (
            [("s1", "To do", "unstarted"), ("s1", "Todo", "unstarted")],
            NOW + 1,
        )
        assert store.cached_states("q") == ([], None)

    def test_a_rate_bucket_counts_up_to_its_limit(self, store: Store, reopen: Callable[[], Store]) -> None:
        other = reopen()
        taken = [s.rate_take("plane:key", 100, 3) for s in (store, other, store, other)]
        assert taken == [True, True, True, False] and store.rate_used("plane:key", 100) == 3
        assert store.rate_take("plane:key", 101, 3) and store.rate_used("plane:key", 101) == 1
        assert store.rate_used("other", 100) == 0

    def test_a_rate_bucket_weighs_the_previous_window_and_forgets_older_ones(self, store: Store) -> None:
        for _ in range(4):
            store.rate_take("b", 10, 4)
        assert store.rate_take("b", 11, 4, prev_weight=0.5)  # 0 + 0.5 * 4 + 1 <= 4
        assert store.rate_take("b", 11, 4, prev_weight=0.5)  # 1 + 2 + 1 <= 4
        assert not store.rate_take("b", 11, 4, prev_weight=0.5)  # 2 + 2 + 1 > 4
        assert store.rate_take("b", 12, 4, prev_weight=0.0)
        assert store.rate_used("b", 10) == 0  # two windows back: dropped

    def test_a_hold_keeps_the_later_until_and_the_last_value(self, store: Store) -> None:
        assert store.hold_get("telegram") is None
        store.hold_set("telegram", until=NOW + 30, value="chat-1", reason="flood")
        store.hold_set("telegram", until=NOW + 10)
        assert store.hold_get("telegram") == (NOW + 30, "chat-1")
        store.hold_set("telegram", until=NOW + 60, value="chat-2")
        assert store.hold_get("telegram") == (NOW + 60, "chat-2")

    def test_facts_round_trip_as_json_and_by_prefix(self, store: Store) -> None:
        assert store.fact("x") is None
        store.set_fact("plane:item:1", {"state": "s1", "n": [1, 2]}, now=NOW)
        store.set_fact("plane:item:2", "two", now=NOW + 5)
        store.set_fact("gitea:x", 3, now=NOW + 5)
        store.set_fact("plane:item:1", {"state": "s2"}, now=NOW + 6)
        assert store.fact("plane:item:1") == ({"state": "s2"}, NOW + 6)
        assert store.facts_since("plane:item:", NOW + 5) == {"plane:item:1": ({"state": "s2"}, NOW + 6)}
        assert set(store.facts_since("plane:", 0)) == {"plane:item:1", "plane:item:2"}

    # -- the outbox --------------------------------------------------------------------

    def test_a_message_is_queued_once_by_key(self, store: Store) -> None:
        t = self.task(store, "K-1")
        store.notify("k1", t.id, "first", now=NOW)
        store.notify("k1", t.id, "second", now=NOW + 1)
        store.notify("k2", None, "other", now=NOW + 2)
        assert [
            (n.key, n.task_id, n.text, n.created_at) for n in store.pending_notifications(now=NOW + 3)
        ] == [
            ("k1", t.id, "first", NOW),
            ("k2", None, "other", NOW + 2),
        ]
        assert store.pending_notifications(1, now=NOW + 3)[0].key == "k1"

    def test_a_claimed_message_is_not_due_until_its_claim_lapses(
        self, store: Store, reopen: Callable[[], Store]
    ) -> None:
        store.notify("k", None, "hi", now=NOW)
        assert store.claim_notification("k", now=NOW)
        assert not reopen().claim_notification("k", now=NOW + 1)
        assert store.pending_notifications(now=NOW + 1) == []
        later = NOW + 10_000
        assert [n.key for n in store.pending_notifications(now=later)] == ["k"]
        assert store.claim_notification("k", now=later) and store.notification_attempts("k") == 2

    def test_a_failed_message_waits_for_its_retry_then_is_sent_once(self, store: Store) -> None:
        store.notify("k", None, "hi", now=NOW)
        store.claim_notification("k", now=NOW)
        store.notification_failed("k", now=NOW, retry_at=NOW + 30, error="502 " + "x" * 1000)
        assert store.pending_notifications(now=NOW + 29) == []
        (row,) = store.outbox_rows()
        assert row.last_error is not None and len(row.last_error) == 500 and row.next_at == NOW + 30
        assert store.claim_notification("k", now=NOW + 30)
        store.notification_sent("k", now=NOW + 31)
        assert store.pending_notifications(now=NOW + 10_000) == [] and store.outbox_rows() == []
        (sent,) = store.outbox_rows(pending_only=False)
        assert (sent.sent_at, sent.attempts, sent.last_error) == (NOW + 31, 2, None)
        assert not store.claim_notification("k", now=NOW + 10_000)
        assert store.notification_attempts("nope") == 0

    # -- the inbox ---------------------------------------------------------------------

    @staticmethod
    def put(
        store: Store, n: int = 1, *, delivery: str | None = None, source: str = "gitea"
    ) -> tuple[int, bool]:
        return store.inbox_put(
            source=source,
            event="push",
            delivery=delivery if delivery is not None else f"d-{n}",
            digest=f"digest-{n}",
            headers={"X-Gitea-Event": "push"},
            body=b'{"n": %d}' % n,
            now=NOW,
        )

    def test_a_delivery_is_stored_once_by_digest_or_delivery_id(self, store: Store) -> None:
        first, new = self.put(store, 1)
        assert new and first > 0
        assert self.put(store, 1) == (first, False)  # same digest
        same_id = store.inbox_put(
            source="gitea", event="push", delivery="d-1", digest="other", headers={}, body=b"{}", now=NOW
        )
        assert same_id == (first, False)
        assert self.put(store, 1, source="plane")[1]  # another source's delivery is its own
        assert store.inbox_count() == {"pending": 2}

    def test_a_claim_hands_out_the_oldest_delivery_with_its_body(self, store: Store) -> None:
        a, _ = self.put(store, 1)
        b, _ = self.put(store, 2)
        item = store.inbox_claim(now=NOW, owner=me())
        assert item is not None
        assert (item.id, item.source, item.event, item.body, item.attempts) == (
            a,
            "gitea",
            "push",
            b'{"n": 1}',
            1,
        )
        assert item.headers == {"X-Gitea-Event": "push"}
        nxt = store.inbox_claim(now=NOW, owner=me())
        assert nxt is not None and nxt.id == b
        assert store.inbox_claim(now=NOW, owner=me()) is None

    def test_a_live_claim_holds_and_a_dead_claimers_is_taken_at_once(self, store: Store) -> None:
        item, _ = self.put(store, 1)
        assert store.inbox_claim(now=NOW, owner=me()).id == item  # type: ignore[union-attr]
        assert store.inbox_claim(now=NOW + 60, owner=me()) is None  # we are alive: held
        other, _ = self.put(store, 2)
        assert store.inbox_claim(now=NOW, owner=dead_here()).id == other  # type: ignore[union-attr]
        taken = store.inbox_claim(now=NOW + 1, owner=me())
        assert taken is not None and taken.id == other and taken.attempts == 2

    def test_a_claim_from_another_host_lapses_after_claim_s_and_any_after_the_ceiling(
        self, store: Store
    ) -> None:
        item, _ = self.put(store, 1)
        assert store.inbox_claim(now=NOW, owner=owner(1, host="elsewhere")) is not None
        assert store.inbox_claim(now=NOW + 299, owner=me()) is None
        assert store.inbox_claim(now=NOW + 300, owner=me()).id == item  # type: ignore[union-attr]
        assert store.inbox_claim(now=NOW + 400, owner=me(), ceiling_s=1000) is None
        assert store.inbox_claim(now=NOW + 1300, owner=me(), ceiling_s=1000).id == item  # type: ignore[union-attr]

    def test_a_claim_from_another_host_follows_its_sessions_where_a_shared_store_judges_them(
        self, store: Store, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # On PostgreSQL a relay on another host is judged by its database sessions: once
        # they have all ended its claim is taken at once; while one is open the claim
        # holds past claim_s, up to the ceiling.
        gone, there = owner(1, host="elsewhere"), owner(2, host="elsewhere")
        monkeypatch.setattr(identity, "_session_check", lambda o: o == there)
        first, _ = self.put(store, 1)
        second, _ = self.put(store, 2)
        assert store.inbox_claim(now=NOW, owner=there).id == first  # type: ignore[union-attr]
        assert store.inbox_claim(now=NOW, owner=gone).id == second  # type: ignore[union-attr]
        assert store.inbox_claim(now=NOW + 1, owner=me()).id == second  # type: ignore[union-attr]
        assert store.inbox_claim(now=NOW + 900, owner=me()) is None
        assert store.inbox_claim(now=NOW + 1300, owner=me(), ceiling_s=1000).id == first  # type: ignore[union-attr]

    def test_released_claims_are_due_again(self, store: Store) -> None:
        item, _ = self.put(store, 1)
        store.inbox_claim(now=NOW, owner=me())
        assert store.inbox_release_claims(owner(1)) == 0
        assert store.inbox_release_claims(me()) == 1
        assert store.inbox_claim(now=NOW, owner=me()).id == item  # type: ignore[union-attr]

    def test_done_failed_and_parked_deliveries(self, store: Store) -> None:
        a, _ = self.put(store, 1)
        b, _ = self.put(store, 2)
        c, _ = self.put(store, 3)
        for _ in range(3):
            store.inbox_claim(now=NOW, owner=me())
        store.inbox_done(a, now=NOW + 1, result="moved K-1")
        store.inbox_failed(b, now=NOW + 1, error="boom", retry_at=NOW + 60)
        store.inbox_failed(c, now=NOW + 1, error="bad \ud800 and \x00", retry_at=None)
        assert store.inbox_count() == {"done": 1, "failed": 1, "parked": 1}
        assert store.inbox_claim(now=NOW + 59, owner=me()) is None
        again = store.inbox_claim(now=NOW + 60, owner=me())
        assert again is not None and (again.id, again.attempts, again.error) == (b, 2, "boom")
        rows = {r.id: r for r in store.inbox_rows()}
        assert (rows[a].state, rows[a].result, rows[a].processed_at) == ("done", "moved K-1", NOW + 1)
        assert rows[c].state == "parked" and rows[c].error == "bad \\ud800 and \\x00"
        assert [r.id for r in store.inbox_rows(states=("parked",))] == [c]

    def test_a_person_retries_or_drops_a_delivery(self, store: Store) -> None:
        a, _ = self.put(store, 1)
        store.inbox_claim(now=NOW, owner=me())
        store.inbox_failed(a, now=NOW, error="x", retry_at=None)
        assert store.inbox_set(a, state="pending", now=NOW)
        item = store.inbox_claim(now=NOW, owner=me())
        assert item is not None and item.id == a and item.attempts == 1
        assert store.inbox_set(a, state="dropped", now=NOW) and store.inbox_claim(now=NOW, owner=me()) is None
        assert not store.inbox_set(a + 100, state="pending", now=NOW)

    def test_the_listing_says_who_holds_a_claim(self, store: Store) -> None:
        a, _ = self.put(store, 1)
        b, _ = self.put(store, 2)
        store.inbox_claim(now=NOW, owner=owner(7, host="elsewhere"))
        rows = store.inbox_rows()
        assert [r.id for r in rows] == [b, a]  # newest first
        assert rows[1].claim == owner(7, host="elsewhere") and rows[0].claim is None
        assert rows[1].claimed_at == NOW and len(store.inbox_rows(limit=1)) == 1
