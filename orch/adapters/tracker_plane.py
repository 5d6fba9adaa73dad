"""The Plane tracker: orch's tasks mirrored on the work items of Plane projects.

orch speaks of logical statuses (`code_review`, `done`, ...), a Plane project of states
with names, UUIDs and a group. The tables that relate them (names per project, fallbacks,
terminal by group) are in `plane_statuses`; `state_for` and `logical_of` apply them to
a project's states.

Plane allows 60 requests a minute per API key, and every orch run is a short process, so
the states of a project are cached in the DB (`Store.cache_states`) for `states_ttl_s`
and shared by every process; a failed refresh serves the stale copy. A reconciler lists
each project once per tick (`list_items`, paginated) and reads everything else from that
listing: no request per work item.

`stage_changed` moves the work item a task mirrors: `task.tracker_ref` is the item's
UUID (set when the task was made from the item) and the key's prefix names the project,
so the PATCH needs no look-up first. A task without a reference was not made from Plane
and is left alone, even when its key looks like a Plane key. Reading the item to see
whether it is already in place would cost a request to save one, so the PATCH is skipped
only when the database says the item is there already: every PATCH answer is written
to it (a fact per item, `plane:item:<id>`, trusted for `item_fresh_s`), whichever
process sent it. A listing that contradicts a fresh fact (a person moved the item, its
webhook lost) corrects it, and a webhook that contradicts it clears it. Nothing kept in
a process's memory stands in for the database: a long-lived relay that wrote Code Review
sends the PATCH again after another process moved the item back to In Progress.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import NamedTuple

from orch import log
from orch.adapters.plane import TERMINAL_GROUPS, PlaneClient, State, WorkItem
from orch.adapters.plane_statuses import (
    DEFAULT_NAMES,
    FALLBACKS,
    GROUP_OF,
    STAGE_STATUS,
    by_name,
    group_of,
)
from orch.config import LOGICAL_STATES, PlaneProject
from orch.errors import IntegrationError, RetryLater, UsageError
from orch.names import safe_name
from orch.ports import Item, Project
from orch.records import Task
from orch.store import Store

__all__ = ["PlaneProject", "PlaneTracker"]

REFRESH_RETRY_S = 60.0  # after a failed states refresh, serve the stale copy this long before trying again
ITEM_FACT = "plane:item:"  # + item id: the state orch last wrote to (or saw of) a work item


class _Seen(NamedTuple):
    """What orch last wrote to (or saw of) a work item, and when: a fact in the database."""

    project_id: str | None
    state_id: str | None
    at: float


class _Cached(NamedTuple):
    states: list[State]
    fetched_at: float


class PlaneTracker:
    """The Tracker port over Plane, plus what a reconciler and the webhook handler need.

    `projects` are keyed by their work-item identifier (`ENG`). `clock` must be wall time
    (`time.time`): the states cache is shared with other processes through the DB.
    `item_fresh_s` is how long the state orch wrote to an item is trusted to skip a PATCH.
    """

    def __init__(
        self,
        *,
        client: PlaneClient,
        store: Store,
        projects: Mapping[str, PlaneProject],
        states_ttl_s: float = 300.0,
        clock: Callable[[], float] = time.time,
        item_fresh_s: float = 60.0,
    ):
        if states_ttl_s < 0:
            raise UsageError(f"states_ttl_s must be 0 (keep until reloaded) or more, not {states_ttl_s}")
        for project in projects.values():
            unknown = set(project.states) - set(DEFAULT_NAMES)
            if unknown:
                raise UsageError(f"Plane project {project.key}: unknown status keys {sorted(unknown)}")
        self.client = client
        self.store = store
        self._projects = dict(projects)
        self.states_ttl_s = states_ttl_s
        self.clock = clock
        self.item_fresh_s = item_fresh_s
        self._by_key = {p.key.upper(): p for p in self._projects.values()}
        self._by_id = {p.id: p for p in self._projects.values()}
        self._memo: dict[str, _Cached] = {}  # project id -> states, as last read or fetched
        self._stale_until: dict[str, float] = {}  # project id -> no refresh before (after a failure)
        self._rechecked: set[str] = set()  # project ids refetched for a state id we did not know

    def __repr__(self) -> str:
        return f"PlaneTracker(client={self.client!r}, projects={sorted(self._projects)})"

    # -- projects and names ------------------------------------------------------------------

    def projects(self) -> list[Project]:
        """The configured projects, in configuration order."""
        return list(self._projects.values())

    def _plane(self, project: Project) -> PlaneProject:
        """The configured project (with its state names) behind a project the engine holds."""
        found = self._by_id.get(project.id)
        if found is not None:
            return found
        if isinstance(project, PlaneProject):
            return project  # settings of its own (a check of a project not configured yet)
        raise UsageError(f"Plane project {project.key} ({project.id}) is not configured")

    def project_for(self, project_id: str) -> PlaneProject | None:
        """The configured project with this Plane UUID, or None."""
        return self._by_id.get(project_id)

    def project_of_task(self, task: Task) -> PlaneProject | None:
        """The project a task's key (`ENG-12`) and repo point to, or None: no request made."""
        prefix, _, seq = task.key.rpartition("-")
        project = self._by_key.get(prefix.upper())
        if project is None or not seq.isdigit() or project.repo != task.repo:
            return None
        return project

    def task_key(self, project: Project, sequence_id: int) -> str:
        """The orch task key of a work item: `ENG-12`."""
        return safe_name(f"{project.key}-{sequence_id}")

    @staticmethod
    def is_terminal(group: str | None) -> bool:
        return group in TERMINAL_GROUPS

    @staticmethod
    def name_of(project: PlaneProject, logical: str) -> str:
        """The state name a logical key has in `project` (before any fallback)."""
        return project.states.get(logical) or DEFAULT_NAMES[logical]

    # -- states ------------------------------------------------------------------------------

    def _cache_name(self, project: PlaneProject) -> str:
        return f"plane:{project.id}"

    def _fresh(self, fetched_at: float, now: float) -> bool:
        return self.states_ttl_s == 0 or fetched_at + self.states_ttl_s > now

    def states(self, project: PlaneProject) -> list[State]:
        """The project's states: from the DB cache while fresh, else fetched (one request) and
        cached. A failed refresh serves the stale copy when there is one, else raises."""
        now = self.clock()
        memo = self._memo.get(project.id)
        if memo is None or not self._fresh(memo.fetched_at, now):
            rows, fetched_at = self.store.cached_states(self._cache_name(project))
            if fetched_at is not None and (memo is None or fetched_at > memo.fetched_at):
                memo = _Cached([State(*r) for r in rows], fetched_at)  # another process refreshed it
                self._memo[project.id] = memo
        if memo is not None and (
            self._fresh(memo.fetched_at, now) or now < self._stale_until.get(project.id, 0.0)
        ):
            return memo.states
        try:
            return self._fetch(project)
        except (IntegrationError, RetryLater) as e:
            if memo is None:
                raise
            self._stale_until[project.id] = now + REFRESH_RETRY_S
            log.warning(
                "plane_states_stale",
                project=project.key,
                age_s=round(now - memo.fetched_at),
                error=str(e),
            )
            return memo.states

    def reload_states(self, project: PlaneProject) -> list[State]:
        """Fetch the project's states now, whatever the cache says; raises when that fails."""
        return self._fetch(project)

    def _fetch(self, project: PlaneProject) -> list[State]:
        states = self.client.list_states(project.id)
        now = self.clock()
        self.store.cache_states(self._cache_name(project), [(s.id, s.name, s.group) for s in states], now=now)
        self._memo[project.id] = _Cached(states, now)
        self._stale_until.pop(project.id, None)
        return states

    def state_for(self, project: PlaneProject, logical: str) -> State | None:
        """The state that shows `logical` in `project`, fallbacks applied; None when there is none."""
        if logical not in DEFAULT_NAMES:
            raise UsageError(f"unknown status key {logical!r} (expected one of {', '.join(LOGICAL_STATES)})")
        states = self.states(project)
        key: str | None = logical
        tried: set[str] = set()
        while key is not None and key not in tried:
            tried.add(key)
            found = by_name(states, self.name_of(project, key), GROUP_OF.get(key))
            if found is None and key in GROUP_OF:
                in_group = [s for s in states if s.group == GROUP_OF[key]]
                found = min(in_group, key=lambda s: (s.name, s.id)) if in_group else None
            if found is not None:
                return found
            key = FALLBACKS.get(key)
        return None

    def state_for_stage(self, project: PlaneProject, stage: str) -> State | None:
        """The state a task at `stage` shows as; None for a stage that moves nothing."""
        logical = STAGE_STATUS.get(stage)
        return None if logical is None else self.state_for(project, logical)

    def logical_of(
        self,
        project: Project,
        state_id: str | None = None,
        name: str | None = None,
        group: str | None = None,
    ) -> str | None:
        """Which logical key a state is, from its id (through the cached states) or from the
        `name` and `group` a webhook carries. The group decides first: `completed` is done and
        `cancelled` is cancelled whatever the name; without a group nothing is guessed. A
        UUID listed under several names takes the terminal group among them (`group_of`),
        then the first of its names that is a logical key."""
        project = self._plane(project)
        names: list[str] = [] if name is None else [name]
        if state_id and (name is None or group is None):
            found = self._states_by_id(project, state_id)
            if group is None and found:
                group = group_of(found)
            if name is None:
                names = [s.name for s in found if s.group == group]
        if group in GROUP_OF.values():
            return "done" if group == "completed" else "cancelled"
        if not group or not names:
            return None
        for candidate in names:
            wanted = candidate.strip().casefold()
            for logical in DEFAULT_NAMES:
                if logical not in GROUP_OF and self.name_of(project, logical).strip().casefold() == wanted:
                    return logical
        return None

    def _states_by_id(self, project: PlaneProject, state_id: str) -> list[State]:
        """Every state listed under `state_id`: one, or several names aliasing one UUID."""
        found = [s for s in self.states(project) if s.id == state_id]
        if found or project.id in self._rechecked:
            return found
        # A state created since the cache was filled: refetch once per process, not per item.
        self._rechecked.add(project.id)
        try:
            states = self._fetch(project)
        except (IntegrationError, RetryLater) as e:
            log.warning("plane_states_recheck_failed", project=project.key, error=str(e))
            return []
        return [s for s in states if s.id == state_id]

    # -- work items --------------------------------------------------------------------------

    def _remember(
        self, item_id: str, project_id: str, state_id: str | None, *, at: float | None = None
    ) -> None:
        at = self.clock() if at is None else at
        self.store.set_fact(ITEM_FACT + item_id, {"project": project_id, "state": state_id}, now=at)

    def _recalled(self, item_id: str) -> _Seen | None:
        row = self.store.fact(ITEM_FACT + item_id)
        if row is None or not isinstance(row[0], dict):
            return None
        return _Seen(row[0].get("project"), row[0].get("state"), row[1])

    def list_items(self, project: PlaneProject) -> list[WorkItem]:
        """Every work item of the project: one request per page, whatever the number of items.

        Where the database holds a fresh belief about an item that the listing contradicts
        (someone moved it since orch wrote it, and the webhook was lost), the listing wins:
        the next write-back then sends its PATCH. Only those few facts are written."""
        started = self.clock()
        items = self.client.list_work_items(project.id)
        fresh = self.store.facts_since(ITEM_FACT, started - self.item_fresh_s)
        for item in items:
            known = fresh.get(ITEM_FACT + item.id)
            if known is not None and known[1] < started and known[0].get("state") != item.state_id:
                self._remember(item.id, item.project_id, item.state_id, at=started)
        return items

    def items(self, project: Project) -> list[Item]:
        """Every work item of the project with its logical status (`list_items`: one request
        per page). The listing expands each item's state, its group inline: the project's
        states are read (cached) only when an item came without it."""
        conf = self._plane(project)
        listed = self.list_items(conf)
        groups: dict[str, str] = {}
        for s in self.states(conf) if any(i.state is None for i in listed) else ():
            # One UUID under several names (a badly configured project): a terminal group
            # wins, as in the tracker's own resolution.
            if groups.get(s.id) not in TERMINAL_GROUPS:
                groups[s.id] = s.group
        out = []
        for item in listed:
            seen = item.state  # the state Plane resolved for this item: its group cannot alias
            group = seen.group if seen is not None else groups.get(item.state_id or "")
            name = seen.name if seen is not None else None
            out.append(
                Item(
                    id=item.id,
                    sequence=item.sequence_id,
                    title=item.name,
                    status=self.logical_of(conf, state_id=item.state_id, name=name, group=group),
                    terminal=group in TERMINAL_GROUPS,
                    state_id=item.state_id,
                )
            )
        return out

    def in_place(self, project: Project, item: Item, stage: str) -> bool:
        """True when the item is in the state `stage` shows as, or `stage` shows as none
        (reads the project's states, cached; no request for the item)."""
        target = self.state_for_stage(self._plane(project), stage)
        return target is None or target.id == item.state_id

    def saw_state(self, item_id: str, state_id: str | None) -> None:
        """A webhook said where the item is. Deliveries can come late and out of order, so
        a contradiction only clears what the database believes (the next stage change then
        sends its PATCH: at worst one request too many, never one too few)."""
        known = self._recalled(item_id)
        if known is not None and known.state_id is not None and known.state_id != state_id:
            self._remember(item_id, known.project_id or "", None)

    def relations(self, project: Project, item_id: str) -> list[str]:
        """The ids of the work items that block `item_id` (one request)."""
        found = self.client.list_relations(self._plane(project).id, item_id)
        return [r.issue_id for r in found.get("blocked_by", [])]

    def item_status(self, task: Task) -> str | None:
        """Where the task's work item is now, read from Plane (one GET, state expanded): a
        logical status ("cancelled", "done", "blocked", "in_progress", ...), "gone" when
        Plane no longer shows the item (404, or `archived_at` / `deleted_at` set), or
        None for a task not made from a configured project (no request). Raises
        IntegrationError / RetryLater when Plane cannot say: never read that as gone."""
        item_id = task.tracker_ref
        project = self.project_of_task(task) if item_id else None
        if item_id is None or project is None:
            return None
        item = self.client.get_work_item(project.id, item_id, expand_state=True)
        if item is None or item.archived_at or item.deleted_at:
            return "gone"
        state = item.state
        return self.logical_of(
            project,
            state_id=item.state_id,
            name=state.name if state else None,
            group=state.group if state else None,
        )

    # -- the Tracker port --------------------------------------------------------------------

    def budget_left(self) -> int | None:
        """Requests this run may still make (None: no budget)."""
        if self.client.budget is None:
            return None
        return max(0, self.client.budget - self.client.requests_made)

    def effect_started(self, task: Task, effect: str) -> None:
        """An irreversible effect (the deploy) is running: the item shows Deploying."""
        self._show(task, "deploying")

    def stage_changed(self, task: Task, stage: str) -> None:
        """Move the task's work item to the state its new stage shows as.

        No request for a stage that maps to no status, a task not made from a configured
        project, or an item the database says is in that state (written within
        `item_fresh_s`); else one
        PATCH (plus the project's states when their cache is stale). An item deleted in
        Plane is a no-op. Raises IntegrationError / RetryLater when Plane fails: the caller
        reports it, the stage stays.
        """
        logical = STAGE_STATUS.get(stage)
        if logical is not None:
            self._show(task, logical)

    def _show(self, task: Task, logical: str) -> None:
        item_id = task.tracker_ref
        project = self.project_of_task(task) if item_id else None
        if item_id is None or project is None:
            return
        target = self.state_for(project, logical)
        if target is None:
            log.warning("plane_no_state", task=task.key, project=project.key, status=logical)
            return
        seen = self._recalled(item_id)
        if (
            seen is not None
            and seen.project_id == project.id
            and seen.state_id == target.id
            and self.clock() - seen.at < self.item_fresh_s
        ):
            return
        try:
            item = self.client.set_state(project.id, item_id, target.id)
        except IntegrationError as e:
            if e.status != 404:
                raise
            self._remember(item_id, project.id, None)
            log.warning("plane_item_missing", task=task.key, project=project.key)
            return
        self._remember(item.id, item.project_id, item.state_id)
        log.info("plane_state_set", task=task.key, status=logical, state=target.name)
