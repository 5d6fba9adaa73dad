"""One contract, two trackers: what the engine may rely on from any Tracker; then Plane's own.

The first part runs against the local tracker (the orch DB is the tracker, so telling it
about a stage change does nothing at all) and the Plane tracker (a fake Plane on
127.0.0.1 and a real SQLite store), through a `Bench` that says what "the tracker shows
the task at this stage" means for each. Then the external side: the runtime holds an
`ExternalTracker` only when the tracker lives outside orch (the local tracker has none:
the engine asks `rt.external is None`), and the Plane tracker answers every method of
that port. The last part tests what only the Plane tracker has: the status mapping and
its fallbacks, the states cache shared through the DB, and the request budget (a listing
answers for every item; no request per item).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import httpx
import pytest
from fakes.plane_workflow import ORCH_WORKFLOW, SeededProject, add_orch_project
from fakes.servers import FakePlane

from orch.adapters.http import RetryPolicy
from orch.adapters.plane import PlaneClient, State
from orch.adapters.plane_statuses import DEFAULT_NAMES, FALLBACKS, STAGE_STATUS
from orch.adapters.tracker_local import LocalTracker
from orch.adapters.tracker_plane import REFRESH_RETRY_S, PlaneProject, PlaneTracker
from orch.config import DEFAULTS, LOGICAL_STATES
from orch.errors import IntegrationError, UsageError
from orch.ports import ExternalTracker, Item, Tracker
from orch.store import Store, Task

FAST = RetryPolicy(attempts=2, base_delay=0.01, max_delay=0.02, max_wait=5.0, total_time=5.0)
PIPELINE_STAGES = list(DEFAULTS["pipeline"]["stages"])
T0 = 1_800_000_000.0

# What a work item shows at each stage of the default pipeline, in a project with every state...
SHOWN_FULL = {
    "analysis": "Analysis",
    "development": "In Progress",
    "review": "Code Review",
    "merge": "Code Review",
    "deploy": "Awaiting Deploy",  # Deploying while the deploy effect runs (effect_started)
    "monitoring": "Monitoring",
    "done": "Done",
    "cancelled": "Cancelled",
}
# ... and in one with only the basics, whose Done and Cancelled have names of their own.
LEAN_OMIT = ("analysis", "code_review", "awaiting_deploy", "deploying", "monitoring", "done", "cancelled")
SHOWN_LEAN = {
    "analysis": "In Progress",
    "development": "In Progress",
    "review": "In Progress",
    "merge": "In Progress",
    "deploy": "In Progress",
    "monitoring": "In Progress",
    "done": "Shipped",
    "cancelled": "Dropped",
}


class Clock:
    """Wall time that a test moves by hand."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Sleeps:
    def __init__(self) -> None:
        self.calls: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


@pytest.fixture(scope="module")
def http() -> Iterator[httpx.Client]:
    with httpx.Client(trust_env=False) as client:  # no proxy between us and 127.0.0.1
        yield client


@pytest.fixture
def server() -> Iterator[FakePlane]:
    with FakePlane() as fake:
        yield fake


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store.open(tmp_path / "o.db")
    yield s
    s.close()


@pytest.fixture
def clock() -> Clock:
    return Clock()


def make_client(server: FakePlane, http: httpx.Client, **kw: Any) -> PlaneClient:
    options: dict[str, Any] = {"policy": FAST, "sleep": Sleeps()}
    options.update(kw)
    return PlaneClient(
        client=http, base_url=server.url, workspace=server.workspace, api_key=server.api_key, **options
    )


def make_tracker(
    server: FakePlane,
    http: httpx.Client,
    store: Store,
    clock: Clock,
    projects: list[PlaneProject],
    *,
    ttl: float = 300.0,
    **client_kw: Any,
) -> PlaneTracker:
    return PlaneTracker(
        client=make_client(server, http, **client_kw),
        store=store,
        projects={p.key: p for p in projects},
        states_ttl_s=ttl,
        clock=clock,
    )


def project(seeded: SeededProject, key: str = "ENG", repo: str = "app", **states: str) -> PlaneProject:
    return PlaneProject(key=key, id=seeded.id, repo=repo, states=states)


def linked_task(store: Store, tracker: PlaneTracker, proj: PlaneProject, item_id: str, seq: int) -> Task:
    """The task the engine makes from a work item: keyed `<PROJ>-<seq>`, referencing the item."""
    task, created = store.ensure_task_for_ref(
        ref=item_id,
        key=tracker.task_key(proj, seq),
        title=f"item {seq}",
        repo=proj.repo,
        stage="analysis",
        now=time.time(),
        actor="test",
        agent=None,
    )
    assert created
    return task


def state_name(server: FakePlane, seeded: SeededProject, item_id: str) -> str:
    return seeded.names[server.item(seeded.id, item_id)["state"]]


def methods(server: FakePlane, since: int = 0) -> list[str]:
    return [f"{r.method} {r.path.split('/')[-2]}" for r in server.requests[since:]]


# -- the contract ------------------------------------------------------------------------------


class Bench:
    """A tracker, a task it knows, and what "the tracker shows this stage" means for it."""

    kind: str
    tracker: Tracker
    task: Task

    def __init__(self, tmp: Path, server: FakePlane, http: httpx.Client):
        self.store = Store.open(tmp / "o.db")
        self.server = server
        self.http = http

    def snapshot(self) -> tuple[Any, ...]:
        """Everything the DB says about the task."""
        task = self.store.get_task(self.task.key)
        assert task is not None
        return task, [r.as_dict() for r in self.store.history(task.id)]

    def check_shows(self, stage: str) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self.store.close()


class LocalBench(Bench):
    kind = "local"

    def __init__(self, tmp: Path, server: FakePlane, http: httpx.Client):
        super().__init__(tmp, server, http)
        self.tracker = LocalTracker()
        self.task = self.store.add_task(
            title="a task", repo="app", stage="analysis", now=T0, key="ENG-1", key_prefix="ENG", actor="test"
        )
        self.before = self.snapshot()

    def check_shows(self, stage: str) -> None:
        # The DB is the tracker: the engine already wrote the stage; the tracker adds nothing.
        assert self.snapshot() == self.before
        assert self.server.count == 0


class PlaneBench(Bench):
    kind = "plane"

    def __init__(self, tmp: Path, server: FakePlane, http: httpx.Client):
        super().__init__(tmp, server, http)
        self.seeded = add_orch_project(server, "ENG")
        self.item = server.add_work_item(self.seeded.id, "a task", state_id=self.seeded.states["to_analyse"])
        self.plane = make_tracker(server, http, self.store, Clock(), [project(self.seeded)])
        self.tracker = self.plane
        self.task = linked_task(self.store, self.plane, project(self.seeded), self.item, 1)
        self.before = self.snapshot()

    def check_shows(self, stage: str) -> None:
        assert state_name(self.server, self.seeded, self.item) == SHOWN_FULL[stage]
        assert self.snapshot() == self.before  # the tracker never writes tasks


@pytest.fixture(params=["local", "plane"])
def bench(
    request: pytest.FixtureRequest, tmp_path: Path, server: FakePlane, http: httpx.Client
) -> Iterator[Bench]:
    b: Bench = (LocalBench if request.param == "local" else PlaneBench)(tmp_path, server, http)
    yield b
    b.close()


def test_every_stage_of_the_default_pipeline_shows_in_the_tracker(bench: Bench) -> None:
    assert set(PIPELINE_STAGES) == set(SHOWN_FULL)
    for stage in PIPELINE_STAGES:
        bench.tracker.stage_changed(bench.task._replace(stage=stage), stage)
        bench.check_shows(stage)


def test_a_running_deploy_shows_deploying(bench: Bench) -> None:
    bench.tracker.stage_changed(bench.task._replace(stage="deploy"), "deploy")
    bench.check_shows("deploy")
    bench.tracker.effect_started(bench.task._replace(stage="deploy"), "deploy")
    if isinstance(bench, PlaneBench):
        assert state_name(bench.server, bench.seeded, bench.item) == "Deploying"
    else:
        bench.check_shows("deploy")  # the local tracker: nothing to show, nothing written


def test_telling_the_same_stage_twice_is_harmless(bench: Bench) -> None:
    for _ in range(2):
        bench.tracker.stage_changed(bench.task._replace(stage="review"), "review")
        bench.check_shows("review")


def test_an_unknown_stage_changes_nothing_and_costs_nothing(bench: Bench) -> None:
    before = bench.server.count
    bench.tracker.stage_changed(bench.task._replace(stage="qa"), "qa")
    assert bench.server.count == before
    assert bench.snapshot()[0] == bench.task


def test_a_task_of_no_tracker_project_is_left_alone(bench: Bench) -> None:
    other = bench.store.add_task(
        title="local", repo="app", stage="analysis", now=T0, key=None, key_prefix="OPS", actor="test"
    )
    before = bench.server.count
    bench.tracker.stage_changed(other._replace(stage="development"), "development")
    assert bench.server.count == before


# -- Plane: stage changes and their cost --------------------------------------------------------


def test_a_project_lacking_states_shows_their_fallbacks(
    server: FakePlane, http: httpx.Client, store: Store, clock: Clock
) -> None:
    seeded = add_orch_project(
        server, "ENG", omit=LEAN_OMIT, extra=[("Shipped", "completed"), ("Dropped", "cancelled")]
    )
    proj = project(seeded)
    item = server.add_work_item(seeded.id, "x", state_id=seeded.states["backlog"])
    tracker = make_tracker(server, http, store, clock, [proj])
    task = linked_task(store, tracker, proj, item, 1)
    for stage in PIPELINE_STAGES:
        tracker.stage_changed(task._replace(stage=stage), stage)
        assert state_name(server, seeded, item) == SHOWN_LEAN[stage], stage


def test_after_a_listing_a_stage_change_is_one_patch_and_nothing_when_already_there(
    server: FakePlane, http: httpx.Client, store: Store, clock: Clock
) -> None:
    seeded = add_orch_project(server, "ENG")
    proj = project(seeded)
    items = [
        server.add_work_item(seeded.id, f"i{n}", state_id=seeded.states["in_progress"]) for n in range(5)
    ]
    tracker = make_tracker(server, http, store, clock, [proj])
    tasks = [linked_task(store, tracker, proj, iid, n + 1) for n, iid in enumerate(items)]
    tracker.list_items(proj)
    tracker.states(proj)
    start = server.count

    for task in tasks:
        tracker.stage_changed(task._replace(stage="review"), "review")
    assert methods(server, start) == ["PATCH " + iid for iid in items]

    start = server.count
    tracker.stage_changed(tasks[0]._replace(stage="development"), "development")  # back to In Progress
    tracker.stage_changed(tasks[1]._replace(stage="merge"), "merge")  # shows as review does: no request
    assert methods(server, start) == ["PATCH " + items[0]]
    assert state_name(server, seeded, items[0]) == "In Progress"
    assert state_name(server, seeded, items[1]) == "Code Review"


def test_a_state_seen_long_ago_is_not_trusted_to_skip_the_patch(
    server: FakePlane, http: httpx.Client, store: Store, clock: Clock
) -> None:
    seeded = add_orch_project(server, "ENG")
    proj = project(seeded)
    item = server.add_work_item(seeded.id, "x", state_id=seeded.states["in_progress"])
    tracker = make_tracker(server, http, store, clock, [proj], ttl=0)
    task = linked_task(store, tracker, proj, item, 1)
    tracker.list_items(proj)
    server.projects[seeded.id]["items"][item]["state"] = seeded.states["blocked"]  # someone moved it
    clock.advance(tracker.item_fresh_s + 1)
    tracker.stage_changed(task._replace(stage="development"), "development")
    assert state_name(server, seeded, item) == "In Progress"


def test_without_a_listing_a_stage_change_is_one_patch_and_its_answer_is_remembered(
    server: FakePlane, http: httpx.Client, store: Store, clock: Clock
) -> None:
    seeded = add_orch_project(server, "ENG")
    proj = project(seeded)
    item = server.add_work_item(seeded.id, "x", state_id=seeded.states["to_analyse"])
    tracker = make_tracker(server, http, store, clock, [proj])
    task = linked_task(store, tracker, proj, item, 1)
    assert task.tracker_ref == item
    tracker.states(proj)
    start = server.count
    tracker.stage_changed(task._replace(stage="analysis"), "analysis")
    tracker.stage_changed(task._replace(stage="development"), "development")
    tracker.stage_changed(task._replace(stage="development"), "development")  # the PATCH said so
    assert methods(server, start) == [f"PATCH {item}", f"PATCH {item}"]
    assert state_name(server, seeded, item) == "In Progress"

    start = server.count  # another process reads the same database: nothing to send
    make_tracker(server, http, store, clock, [proj]).stage_changed(task, "development")
    assert methods(server, start) == []
    clock.advance(tracker.item_fresh_s + 1)  # an old belief is not trusted: one PATCH, no GET
    make_tracker(server, http, store, clock, [proj]).stage_changed(task, "development")
    assert methods(server, start) == [f"PATCH {item}"]


def test_a_task_not_made_from_the_item_never_moves_it(
    server: FakePlane, http: httpx.Client, store: Store, clock: Clock
) -> None:
    seeded = add_orch_project(server, "ENG")
    proj = project(seeded)
    item = server.add_work_item(seeded.id, "someone else's", state_id=seeded.states["backlog"])
    tracker = make_tracker(server, http, store, clock, [proj])
    # A local task whose key looks like the Plane item's (key_prefix = "ENG" in orch.toml).
    local = store.add_task(
        title="t", repo="app", stage="analysis", now=T0, key="ENG-1", key_prefix="ENG", actor="t"
    )
    assert local.tracker_ref is None
    tracker.list_items(proj)
    start = server.count
    tracker.stage_changed(local._replace(stage="development"), "development")
    assert server.count == start
    assert state_name(server, seeded, item) == "Backlog"


def test_a_task_of_another_repo_is_not_the_projects(
    server: FakePlane, http: httpx.Client, store: Store, clock: Clock
) -> None:
    seeded = add_orch_project(server, "ENG")
    proj = project(seeded)
    item = server.add_work_item(seeded.id, "x")
    tracker = make_tracker(server, http, store, clock, [proj])
    task = linked_task(store, tracker, proj._replace(repo="web"), item, 9)
    assert tracker.project_of_task(task) is None
    tracker.stage_changed(task._replace(stage="development"), "development")
    assert server.count == 0


def test_a_deleted_item_is_a_no_op(server: FakePlane, http: httpx.Client, store: Store, clock: Clock) -> None:
    seeded = add_orch_project(server, "ENG")
    proj = project(seeded)
    item = server.add_work_item(seeded.id, "a", state_id=seeded.states["backlog"])
    tracker = make_tracker(server, http, store, clock, [proj])
    task = linked_task(store, tracker, proj, item, 1)
    tracker.list_items(proj)
    tracker.states(proj)
    del server.projects[seeded.id]["items"][item]  # gone since the listing: the PATCH says 404
    start = server.count
    tracker.stage_changed(task._replace(stage="development"), "development")
    tracker.stage_changed(task._replace(stage="review"), "review")
    assert methods(server, start) == [f"PATCH {item}", f"PATCH {item}"]


def test_no_state_to_show_moves_nothing(
    server: FakePlane, http: httpx.Client, store: Store, clock: Clock
) -> None:
    pid = server.add_project("ENG")
    backlog = server.add_state(pid, "Backlog", "backlog")
    item = server.add_work_item(pid, "x", state_id=backlog)
    proj = PlaneProject(key="ENG", id=pid, repo="app", states={})
    tracker = make_tracker(server, http, store, clock, [proj])
    task = linked_task(store, tracker, proj, item, 1)
    for stage in PIPELINE_STAGES:
        tracker.stage_changed(task._replace(stage=stage), stage)
    assert [r.method for r in server.requests] == ["GET"]  # the states, once
    assert server.item(pid, item)["state"] == backlog


def test_plane_failing_a_stage_change_raises_for_the_caller_to_report(
    server: FakePlane, http: httpx.Client, store: Store, clock: Clock
) -> None:
    seeded = add_orch_project(server, "ENG")
    proj = project(seeded)
    item = server.add_work_item(seeded.id, "x", state_id=seeded.states["backlog"])
    tracker = make_tracker(server, http, store, clock, [proj])
    task = linked_task(store, tracker, proj, item, 1)
    tracker.list_items(proj)
    tracker.states(proj)
    server.fail_next(FAST.attempts, 503)
    with pytest.raises(IntegrationError) as info:
        tracker.stage_changed(task._replace(stage="development"), "development")
    assert info.value.status == 503
    tracker.stage_changed(task._replace(stage="development"), "development")  # the next try goes through
    assert state_name(server, seeded, item) == "In Progress"


def test_a_429_with_retry_after_is_waited_out(
    server: FakePlane, http: httpx.Client, store: Store, clock: Clock
) -> None:
    seeded = add_orch_project(server, "ENG")
    proj = project(seeded)
    item = server.add_work_item(seeded.id, "x", state_id=seeded.states["backlog"])
    sleeps = Sleeps()
    tracker = make_tracker(server, http, store, clock, [proj], sleep=sleeps)
    task = linked_task(store, tracker, proj, item, 1)
    server.fail_next(1, 429, retry_after=2)
    tracker.stage_changed(task._replace(stage="development"), "development")
    assert sleeps.calls == [2.0]
    assert state_name(server, seeded, item) == "In Progress"
    assert tracker.client.requests_made == 3  # states (429, then 200), the PATCH


# -- Plane: the status mapping -------------------------------------------------------------------


def test_the_status_model_is_the_configs() -> None:
    assert tuple(DEFAULT_NAMES) == LOGICAL_STATES == tuple(FALLBACKS)
    assert {k: name for k, (name, _group) in ORCH_WORKFLOW.items()} == DEFAULT_NAMES
    assert set(STAGE_STATUS.values()) <= set(LOGICAL_STATES)


def test_every_state_of_a_full_project_maps_both_ways(
    server: FakePlane, http: httpx.Client, store: Store, clock: Clock
) -> None:
    seeded = add_orch_project(server, "ENG")
    proj = project(seeded)
    tracker = make_tracker(server, http, store, clock, [proj])
    for logical, sid in seeded.states.items():
        state = tracker.state_for(proj, logical)
        assert state is not None and state.id == sid
        assert tracker.logical_of(proj, state_id=sid) == logical
    assert server.count == 1


@pytest.mark.parametrize(("missing", "fallback"), [(k, v) for k, v in FALLBACKS.items() if v is not None])
def test_a_missing_state_falls_back_within_the_project(
    server: FakePlane, http: httpx.Client, store: Store, clock: Clock, missing: str, fallback: str
) -> None:
    seeded = add_orch_project(server, "ENG", omit=[missing])
    proj = project(seeded)
    tracker = make_tracker(server, http, store, clock, [proj])
    state = tracker.state_for(proj, missing)
    assert state is not None and state.id == seeded.states[fallback]


@pytest.mark.parametrize("missing", ["approved", "rejected", "blocked", "needs_input"])
def test_verdicts_and_pauses_have_no_fallback(
    server: FakePlane, http: httpx.Client, store: Store, clock: Clock, missing: str
) -> None:
    seeded = add_orch_project(server, "ENG", omit=[missing])
    proj = project(seeded)
    assert FALLBACKS[missing] is None
    assert make_tracker(server, http, store, clock, [proj]).state_for(proj, missing) is None


def test_done_and_cancelled_are_found_by_group_when_their_names_are_missing(
    server: FakePlane, http: httpx.Client, store: Store, clock: Clock
) -> None:
    seeded = add_orch_project(
        server, "ENG", omit=["done", "cancelled"], extra=[("Shipped", "completed"), ("Won't Do", "cancelled")]
    )
    proj = project(seeded)
    tracker = make_tracker(server, http, store, clock, [proj])
    done, cancelled = tracker.state_for(proj, "done"), tracker.state_for(proj, "cancelled")
    assert done is not None and (done.name, done.group) == ("Shipped", "completed")
    assert cancelled is not None and (cancelled.name, cancelled.group) == ("Won't Do", "cancelled")
    assert tracker.logical_of(proj, state_id=done.id) == "done"
    assert tracker.logical_of(proj, state_id=cancelled.id) == "cancelled"


def test_a_project_renames_states_in_its_config(
    server: FakePlane, http: httpx.Client, store: Store, clock: Clock
) -> None:
    seeded = add_orch_project(server, "ENG", rename={"code_review": "Review", "in_progress": "Doing"})
    proj = project(seeded, code_review="Review", in_progress="Doing")
    tracker = make_tracker(server, http, store, clock, [proj])
    review = tracker.state_for(proj, "code_review")
    assert review is not None and review.id == seeded.states["code_review"]
    assert tracker.logical_of(proj, state_id=seeded.states["in_progress"]) == "in_progress"
    assert tracker.logical_of(proj, name="doing", group="started") == "in_progress"  # case ignored
    assert tracker.logical_of(proj, name="Code Review", group="started") is None  # not this project's name


def test_the_group_cannot_lie_a_done_state_named_approved_is_done(
    server: FakePlane, http: httpx.Client, store: Store, clock: Clock
) -> None:
    seeded = add_orch_project(server, "ENG", omit=["approved", "done"], extra=[("Approved", "completed")])
    proj = project(seeded)
    tracker = make_tracker(server, http, store, clock, [proj])
    aliased = next(sid for sid, name in seeded.names.items() if name == "Approved")
    assert tracker.logical_of(proj, state_id=aliased) == "done"
    assert tracker.logical_of(proj, state_id=aliased, name="Approved", group="completed") == "done"
    assert (
        tracker.logical_of(proj, name="Approved", group="completed") == "done"
    )  # a webhook's expanded state
    assert tracker.state_for(proj, "approved") is None  # never a terminal state for a verdict
    done = tracker.state_for(proj, "done")
    assert done is not None and done.id == aliased


def test_a_state_called_done_outside_the_completed_group_is_not_done(
    server: FakePlane, http: httpx.Client, store: Store, clock: Clock
) -> None:
    seeded = add_orch_project(
        server, "ENG", omit=["done"], extra=[("Done", "started"), ("Closed", "completed")]
    )
    proj = project(seeded)
    tracker = make_tracker(server, http, store, clock, [proj])
    fake_done = next(sid for sid, name in seeded.names.items() if name == "Done")
    assert tracker.logical_of(proj, state_id=fake_done) is None
    done = tracker.state_for(proj, "done")
    assert done is not None and done.name == "Closed"
    assert tracker.logical_of(proj, name="In Progress") is None  # no group: nothing is guessed


def test_a_state_created_after_the_cache_is_picked_up_with_one_refetch(
    server: FakePlane, http: httpx.Client, store: Store, clock: Clock
) -> None:
    seeded = add_orch_project(server, "ENG", omit=["blocked"])
    proj = project(seeded)
    tracker = make_tracker(server, http, store, clock, [proj])
    tracker.states(proj)
    blocked = server.add_state(seeded.id, "Blocked", "started")
    assert tracker.logical_of(proj, state_id=blocked) == "blocked"
    assert tracker.logical_of(proj, state_id="00000000-0000-4000-a000-000000000000") is None
    assert tracker.logical_of(proj, state_id="00000000-0000-4000-a000-000000000001") is None
    assert methods(server) == ["GET states", "GET states"]  # once per process, not per unknown id


def test_names_keys_and_groups(server: FakePlane, http: httpx.Client, store: Store, clock: Clock) -> None:
    eng = PlaneProject(key="ENG", id="p-eng", repo="app", states={})
    ops = PlaneProject(key="OPS", id="p-ops", repo="infra", states={})
    tracker = make_tracker(server, http, store, clock, [eng, ops])
    assert tracker.project_for("p-ops") is ops and tracker.project_for("nope") is None
    assert tracker.task_key(eng, 12) == "ENG-12"
    task = store.add_task(
        title="t", repo="infra", stage="analysis", now=T0, key="ops-3", key_prefix="X", actor="t"
    )
    assert tracker.project_of_task(task) is ops
    assert [tracker.is_terminal(g) for g in ("completed", "cancelled", "started", "backlog", None)] == [
        True,
        True,
        False,
        False,
        False,
    ]
    with pytest.raises(UsageError):
        tracker.state_for(eng, "shipped")
    with pytest.raises(UsageError):
        make_tracker(server, http, store, clock, [eng], ttl=-1)
    with pytest.raises(UsageError):
        make_tracker(
            server, http, store, clock, [PlaneProject(key="X", id="x", repo="a", states={"qa": "QA"})]
        )


def test_relations_are_the_blocking_item_ids(
    server: FakePlane, http: httpx.Client, store: Store, clock: Clock
) -> None:
    seeded = add_orch_project(server, "ENG")
    proj = project(seeded)
    a, b, c = (server.add_work_item(seeded.id, n) for n in "abc")
    server.set_relations(seeded.id, c, blocked_by=[a, b], relates_to=[a])
    tracker = make_tracker(server, http, store, clock, [proj])
    assert tracker.relations(proj, c) == [a, b]
    assert tracker.relations(proj, a) == []


# -- the external side: what the engine asks of a tracker that lives outside orch ------------------


@pytest.mark.parametrize("kind", ["local", "plane"])
def test_the_runtime_holds_an_external_tracker_only_when_it_lives_outside_orch(
    kind: str, setup: Any, server: FakePlane, monkeypatch: pytest.MonkeyPatch
) -> None:
    if kind == "plane":
        seeded = add_orch_project(server, "ENG")
        monkeypatch.setenv("PLANE_API_KEY", server.api_key)
        setup.update_config(
            {
                "tracker": {"kind": "plane"},
                "plane": {
                    "base_url": server.url,
                    "workspace": server.workspace,
                    "projects": {"ENG": {"id": seeded.id, "repo": "app"}},
                },
            }
        )
    rt = setup.runtime()
    try:
        if kind == "local":
            assert isinstance(rt.tracker, LocalTracker) and rt.external is None
        else:
            assert isinstance(rt.tracker, PlaneTracker) and rt.external is rt.tracker
            port = [m for m in vars(ExternalTracker) if not m.startswith("_")]
            assert {"projects", "items", "in_place", "relations", "budget_left", "item_status"} <= set(port)
            assert all(callable(getattr(rt.external, m)) for m in port)
            assert [(p.key, p.id, p.repo) for p in rt.external.projects()] == [("ENG", seeded.id, "app")]
        assert server.count == 0  # wiring asks the tracker nothing
    finally:
        rt.close()


def test_items_are_records_with_their_logical_status_and_terminal_flag(
    server: FakePlane, http: httpx.Client, store: Store, clock: Clock
) -> None:
    seeded = add_orch_project(server, "ENG", rename={"approved": "Ship it"})
    proj = project(seeded, approved="Ship it")
    ids = {
        logical: server.add_work_item(seeded.id, f"at {logical}", state_id=sid)
        for logical, sid in seeded.states.items()
    }
    tracker = make_tracker(server, http, store, clock, [proj], per_page=5)
    items = tracker.items(proj)
    assert all(isinstance(i, Item) for i in items)
    by_id = {i.id: i for i in items}
    for n, (logical, iid) in enumerate(ids.items()):
        assert by_id[iid] == Item(
            id=iid,
            sequence=n + 1,
            title=f"at {logical}",
            status=logical,
            terminal=logical in ("done", "cancelled"),
            state_id=seeded.states[logical],
        ), logical
    # Every listed item came with its state expanded: pages only, no states request.
    assert methods(server) == ["GET work-items"] * 3
    assert tracker.budget_left() is None  # no budget configured

    # An item without a state: the project's states are read (once), its status is unknown.
    bare = server.add_work_item(seeded.id, "no state")
    start = server.count
    again = {i.id: i for i in tracker.items(proj)}
    assert again[bare] == Item(bare, len(ids) + 1, "no state", None, False, None)
    assert methods(server, start) == ["GET work-items"] * 3 + ["GET states"] * 3  # 14 states, 5 a page


class Held(NamedTuple):
    """A project as the engine may hold it: the port's three fields, none of Plane's settings."""

    key: str
    id: str
    repo: str


def test_a_project_the_engine_holds_is_resolved_to_the_configured_one(
    server: FakePlane, http: httpx.Client, store: Store, clock: Clock
) -> None:
    seeded = add_orch_project(server, "ENG", rename={"approved": "Ship it"})
    configured = project(seeded, approved="Ship it")
    other = project(add_orch_project(server, "OPS"), key="OPS", repo="infra")
    tracker: ExternalTracker = make_tracker(server, http, store, clock, [configured, other])
    assert [p.key for p in tracker.projects()] == ["ENG", "OPS"]  # configuration order
    held = Held(key="ENG", id=seeded.id, repo="app")  # the same project, not its settings
    assert tracker.logical_of(held, name="Ship it", group="started") == "approved"
    item = server.add_work_item(seeded.id, "x", state_id=seeded.states["approved"])
    assert [i.status for i in tracker.items(held)] == ["approved"]
    assert tracker.relations(held, item) == []
    with pytest.raises(UsageError, match="not configured"):
        tracker.items(Held(key="WEB", id="p-web", repo="web"))


def test_in_place_says_whether_writing_the_stage_back_would_change_anything(
    server: FakePlane, http: httpx.Client, store: Store, clock: Clock
) -> None:
    seeded = add_orch_project(server, "ENG")
    proj = project(seeded)
    iid = server.add_work_item(seeded.id, "x", state_id=seeded.states["in_progress"])
    tracker = make_tracker(server, http, store, clock, [proj])
    task = linked_task(store, tracker, proj, iid, 1)
    [item] = tracker.items(proj)
    assert tracker.in_place(proj, item, "development") is True  # In Progress already
    assert tracker.in_place(proj, item, "review") is False  # Code Review: a write to do
    assert tracker.in_place(proj, item, "qa") is True  # a stage that shows as nothing
    start = server.count
    assert tracker.in_place(proj, item, "review") is False
    assert server.count == start  # the states are cached: no request to decide
    tracker.stage_changed(task._replace(stage="review"), "review")
    [moved] = tracker.items(proj)
    assert tracker.in_place(proj, moved, "review") is True and moved.state_id == seeded.states["code_review"]


def test_budget_left_counts_down_the_requests_of_the_run(
    server: FakePlane, http: httpx.Client, store: Store, clock: Clock
) -> None:
    seeded = add_orch_project(server, "ENG")
    proj = project(seeded)
    first, *_ = [
        server.add_work_item(seeded.id, f"i{n}", state_id=seeded.states["to_analyse"]) for n in range(3)
    ]
    tracker = make_tracker(server, http, store, clock, [proj], budget=5, per_page=2)
    assert tracker.budget_left() == 5
    tracker.items(proj)  # two pages
    assert tracker.budget_left() == 3
    assert tracker.relations(proj, first) == []
    assert tracker.budget_left() == 2


# -- Plane: the states cache ---------------------------------------------------------------------


def test_states_are_cached_in_the_db_for_the_next_process_until_the_ttl(
    server: FakePlane, http: httpx.Client, tmp_path: Path, clock: Clock
) -> None:
    seeded = add_orch_project(server, "ENG")
    proj = project(seeded)
    first_store = Store.open(tmp_path / "o.db")
    first = make_tracker(server, http, first_store, clock, [proj], ttl=300)
    assert len(first.states(proj)) == len(ORCH_WORKFLOW)
    first.states(proj)
    assert methods(server) == ["GET states"]

    second_store = Store.open(tmp_path / "o.db")  # another process: its own connection and tracker
    second = make_tracker(server, http, second_store, clock, [proj], ttl=300)
    clock.advance(299)
    assert {s.id for s in second.states(proj)} == set(seeded.states.values())
    assert methods(server) == ["GET states"]

    clock.advance(2)
    renamed = server.add_state(seeded.id, "Parked", "backlog")
    assert renamed in {s.id for s in second.states(proj)}
    assert methods(server) == ["GET states", "GET states"]
    assert renamed in {s.id for s in first.states(proj)}  # the first process reads the refresh from the DB
    assert server.count == 2
    first_store.close()
    second_store.close()


def test_a_failed_refresh_serves_the_stale_states_and_does_not_retry_at_once(
    server: FakePlane, http: httpx.Client, store: Store, clock: Clock
) -> None:
    seeded = add_orch_project(server, "ENG")
    proj = project(seeded)
    tracker = make_tracker(server, http, store, clock, [proj], ttl=60)
    before = tracker.states(proj)
    clock.advance(61)
    server.fail_next(FAST.attempts, 500)
    assert tracker.states(proj) == before
    assert server.count == 1 + FAST.attempts
    assert tracker.state_for(proj, "done") is not None  # no new attempt: the budget is not burnt
    assert server.count == 1 + FAST.attempts
    clock.advance(REFRESH_RETRY_S)
    tracker.states(proj)
    assert server.count == 2 + FAST.attempts


def test_a_refresh_that_times_out_serves_the_stale_states(
    server: FakePlane, http: httpx.Client, store: Store, clock: Clock
) -> None:
    seeded = add_orch_project(server, "ENG")
    proj = project(seeded)
    make_tracker(server, http, store, clock, [proj], ttl=60).states(proj)
    clock.advance(61)
    slow = make_tracker(server, http, store, clock, [proj], ttl=60, timeout=0.15)
    server.delay_next(FAST.attempts, 0.5)
    started = time.monotonic()
    states = slow.states(proj)
    assert {s.id for s in states} == set(seeded.states.values())
    assert time.monotonic() - started < 2


def test_with_no_cache_a_failed_fetch_raises(
    server: FakePlane, http: httpx.Client, store: Store, clock: Clock
) -> None:
    seeded = add_orch_project(server, "ENG")
    proj = project(seeded)
    tracker = make_tracker(server, http, store, clock, [proj])
    server.fail_next(FAST.attempts, 500)
    with pytest.raises(IntegrationError):
        tracker.states(proj)
    assert tracker.states(proj)  # and the next call tries again


def test_ttl_zero_keeps_the_states_until_reloaded(
    server: FakePlane, http: httpx.Client, store: Store, clock: Clock
) -> None:
    seeded = add_orch_project(server, "ENG")
    proj = project(seeded)
    tracker = make_tracker(server, http, store, clock, [proj], ttl=0)
    tracker.states(proj)
    clock.advance(365 * 86400)
    added = server.add_state(seeded.id, "Parked", "backlog")
    assert added not in {s.id for s in tracker.states(proj)}
    assert added not in {s.id for s in make_tracker(server, http, store, clock, [proj], ttl=0).states(proj)}
    assert server.count == 1
    assert added in {s.id for s in tracker.reload_states(proj)}
    assert server.count == 2
    again = make_tracker(server, http, store, clock, [proj], ttl=0)
    assert added in {s.id for s in again.states(proj)}
    assert server.count == 2


def test_cached_states_are_namespaced_per_project(
    server: FakePlane, http: httpx.Client, store: Store, clock: Clock
) -> None:
    eng, ops = add_orch_project(server, "ENG"), add_orch_project(server, "OPS", omit=["code_review"])
    pe, po = project(eng), project(ops, key="OPS", repo="infra")
    tracker = make_tracker(server, http, store, clock, [pe, po])
    assert {s.id for s in tracker.states(pe)} == set(eng.states.values())
    assert {s.id for s in tracker.states(po)} == set(ops.states.values())
    rows, at = store.cached_states(f"plane:{ops.id}")
    assert at == T0 and sorted(State(*r) for r in rows) == sorted(tracker.states(po))


# -- Plane: the request budget -------------------------------------------------------------------


def test_a_tick_over_3_projects_of_250_items_costs_pages_plus_one_states_fetch_each(
    server: FakePlane, http: httpx.Client, store: Store, clock: Clock
) -> None:
    projects: list[PlaneProject] = []
    expected: dict[str, str] = {}
    for n, key in enumerate(("ENG", "OPS", "WEB")):
        seeded = add_orch_project(server, key, omit=["code_review"] if n == 1 else ())
        projects.append(project(seeded, key=key, repo=f"repo{n}"))
        keys = list(seeded.states)
        for i in range(250):
            logical = keys[i % len(keys)]
            server.add_work_item(seeded.id, f"{key} {i}", state_id=seeded.states[logical])
            expected[f"{key}-{i + 1}"] = logical

    def tick(tracker: PlaneTracker) -> dict[str, str | None]:
        seen: dict[str, str | None] = {}
        for proj in projects:
            for item in tracker.list_items(proj):
                assert item.sequence_id is not None
                seen[tracker.task_key(proj, item.sequence_id)] = tracker.logical_of(
                    proj, state_id=item.state_id
                )
        return seen

    tracker = make_tracker(server, http, store, clock, projects, per_page=100)
    assert tick(tracker) == expected
    assert tracker.client.requests_made == 3 * 3 + 3
    assert methods(server).count("GET states") == 3
    assert methods(server).count("GET work-items") == 9
    assert {r.query.get("per_page") for r in server.requests} == {"100"}

    assert tick(tracker) == expected  # a second tick in the same process: pages only
    assert tracker.client.requests_made == 2 * 9 + 3

    start = server.count  # the next process, within the TTL: pages only
    nxt = make_tracker(server, http, store, clock, projects, per_page=100, budget=9)
    assert tick(nxt) == expected
    assert server.count - start == 9

    clock.advance(301)  # past the TTL: one states fetch per project again
    start = server.count
    later = make_tracker(server, http, store, clock, projects, per_page=100)
    assert tick(later) == expected
    assert server.count - start == 12


# -- a project whose two states share one UUID (issue 11) ------------------------------------------


def aliased_project(server: FakePlane) -> SeededProject:
    """orch's workflow, with Done also listed under Approved's UUID (the seed's incident)."""
    seeded = add_orch_project(server, "ENG")
    server.alias_state(seeded.id, seeded.states["approved"], "Done", "completed")
    return seeded


def test_an_aliased_uuid_is_cached_under_both_names_and_resolved_by_group_first(
    server: FakePlane, http: httpx.Client, store: Store, clock: Clock
) -> None:
    seeded = aliased_project(server)
    proj = project(seeded)
    tracker = make_tracker(server, http, store, clock, [proj])
    states = tracker.states(proj)  # was: sqlite3.IntegrityError, UNIQUE constraint failed
    shared = seeded.states["approved"]
    assert sorted((s.name, s.group) for s in states if s.id == shared) == [
        ("Approved", "started"),
        ("Done", "completed"),
    ]
    # Another process reads the same cache from the DB: both names survive the round trip.
    other = make_tracker(server, http, store, clock, [proj])
    assert len([s for s in other.states(proj) if s.id == shared]) == 2
    assert server.count == 1
    # From the id alone the terminal group wins: an item there is never read as a verdict.
    assert other.logical_of(proj, state_id=shared) == "done"
    # A webhook names the state it saw: its group decides.
    assert other.logical_of(proj, state_id=shared, name="Approved", group="started") == "approved"
    assert other.logical_of(proj, state_id=seeded.states["to_analyse"]) == "to_analyse"
    assert other.state_for(proj, "in_progress") == State(
        seeded.states["in_progress"], "In Progress", "started"
    )


def test_an_aliased_project_still_gets_its_tasks_and_advance_moves_the_item(
    setup: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    fake = FakePlane().start()
    try:
        seeded = aliased_project(fake)
        setup.update_config(
            {
                "tracker": {"kind": "plane"},
                "plane": {
                    "base_url": fake.url,
                    "workspace": fake.workspace,
                    "projects": {"ENG": {"id": seeded.id, "repo": "app"}},
                },
                "reconcile": {"grace_s": 0},
            }
        )
        env = {"PLANE_API_KEY": fake.api_key}
        item = fake.add_work_item(
            seeded.id, "Moved to To Analyse, webhook lost", state_id=seeded.states["to_analyse"]
        )
        out = setup.orch("reconcile", "--json", env=env)
        assert out.returncode == 0, out.stderr
        assert "UNIQUE" not in out.stdout + out.stderr and "Traceback" not in out.stderr
        assert json.loads(out.stdout)["counters"]["replayed"] == 1
        assert fake.item(seeded.id, item)["state"] == seeded.states["analysis"]  # written back
        assert setup.orch("work", env=env).returncode == 0  # the analyst
        assert setup.orch("approve", "ENG-1", env=env).returncode == 0
        out = setup.orch("advance", "ENG-1", env=env)
        assert "Traceback" not in out.stderr and out.returncode in (0, 3), out.stderr
        assert fake.item(seeded.id, item)["state"] == seeded.states["in_progress"], out.stderr
        # A night of reconciles over the aliased project: quiet, no error, nothing replayed.
        from orch.engine import outbox
        from orch.engine.reconcile import reconcile

        monkeypatch.setenv("PLANE_API_KEY", fake.api_key)
        rt = setup.runtime()
        outbox.flush(rt)
        sent = len(rt.notifier.sent)
        now = [rt.now()]
        rt.clock = lambda: now[0]
        for _ in range(20):  # every 2 minutes, 40 minutes
            now[0] += 120
            report = reconcile(rt)
            assert report["counters"]["errors"] == 0, report["errors"]
            assert report["counters"]["replayed"] == 0
            outbox.flush(rt)
        assert len(rt.notifier.sent) == sent
        rt.close()
    finally:
        fake.stop()
