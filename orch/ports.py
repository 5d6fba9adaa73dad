"""The ports the engine talks through. Adapters implement them; the engine never imports one.

A port is the whole conversation: whatever the engine asks of an adapter is declared
here and implemented by every adapter of that port (a no-op where it means nothing,
such as publishing a branch with the local forge), so the engine never asks an adapter
what it is (no `Any`, `getattr` or `hasattr`). The records a port speaks in are plain
named tuples (`orch.records`): a port does not depend on the store.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, NamedTuple, Protocol

from orch.records import Task


class Outcome(NamedTuple):
    """How a command ended: one distinct state and the reason in words."""

    state: str  # succeeded | failed | timed_out | stalled | cancelled | reaped
    exit_code: int | None
    reason: str


class Runner(Protocol):
    """Runs a shell command (from config, never from tracker text) in its own process group."""

    def run(
        self,
        command: str,
        *,
        cwd: Path,
        env: Mapping[str, str],
        log_path: Path,
        timeout_s: float,
        on_start: Callable[[int], None] | None = None,
        stall_timeout_s: float = 0.0,
    ) -> Outcome: ...

    def kill_group(self, pgid: int, start_time: str | None) -> bool:
        """End process group `pgid` (whose leader started at `start_time`); True once it is gone."""
        ...

    def spawn(self, argv: list[str], *, log_path: Path, env: Mapping[str, str]) -> int:
        """Start a detached process (its own session); returns its pid."""
        ...


class Forge(Protocol):
    """Git host + CI: branches, worktrees, commit statuses, rebase and merge."""

    def branch(self, task: Task) -> str: ...
    def worktree_path(self, task: Task) -> Path: ...
    def ensure_worktree(self, task: Task) -> Path: ...
    def remove_worktree(self, task: Task) -> None: ...
    def branch_head(self, task: Task) -> str | None: ...
    def branch_ahead(self, task: Task) -> bool: ...
    def ci_status(self, task: Task, sha: str) -> tuple[str | None, dict[str, Any]]: ...
    def request_ci(self, task: Task, sha: str) -> None: ...
    def rebase(self, task: Task) -> dict[str, Any]: ...
    def merge(self, task: Task, *, before_update: Callable[[], None] | None = None) -> dict[str, Any]:
        """Merge the task's branch; `before_update` is called right before the one act that
        cannot be undone (the ref update, the merge request) and may raise to prevent it."""
        ...

    def is_merged(self, task: Task) -> bool: ...

    def publish(self, task: Task) -> dict[str, Any]:
        """Make the task's branch visible where it is reviewed and merged (a remote forge:
        push it, open its pull request); called after a job that may have committed.
        Idempotent. The local forge has nothing to do: its branches are where merge reads."""
        ...

    def snapshot(self) -> AbstractContextManager[None]:
        """Within it, branch heads are read once per repository (a pass over many tasks)."""
        ...


class Tracker(Protocol):
    """Where people see and move work. The local tracker is the orch DB itself."""

    def stage_changed(self, task: Task, stage: str) -> None: ...

    def effect_started(self, task: Task, effect: str) -> None:
        """An irreversible effect (a deploy) started: show it (Deploying); a no-op where nothing shows it."""
        ...


class Notifier(Protocol):
    """Tells people something. Called only with messages already committed to the outbox."""

    def send(self, text: str) -> None: ...


class Project(Protocol):
    """A tracker project that orch mirrors: its items become tasks of one repository."""

    @property
    def key(self) -> str:
        """The prefix of its task keys: ENG in ENG-12."""
        ...

    @property
    def id(self) -> str: ...

    @property
    def repo(self) -> str: ...


class Item(NamedTuple):
    """A tracker item as the engine reads it. Its logical status is decided by the adapter,
    terminal states by their group (completed, cancelled), never by a name."""

    id: str
    sequence: int | None  # 12 in ENG-12
    title: str
    status: str | None  # logical: to_analyse, in_progress, approved, blocked, done, ...; None: unmapped
    terminal: bool  # finished in the tracker (done or cancelled)
    state_id: str | None  # the tracker's own state, opaque to the engine (see `in_place`)


class ExternalTracker(Tracker, Protocol):
    """A tracker that lives outside orch (Plane): its items create and steer tasks.

    Methods that ask the tracker may raise `RetryLater` (the run's request budget is
    spent) or `IntegrationError`; the others answer from what the adapter knows."""

    def projects(self) -> list[Project]:
        """The configured projects, in configuration order."""
        ...

    def project_for(self, project_id: str) -> Project | None:
        """The configured project with this tracker id, or None."""
        ...

    def project_of_task(self, task: Task) -> Project | None:
        """The project a task belongs to (by its key and repo), or None; no request."""
        ...

    def task_key(self, project: Project, sequence: int) -> str:
        """The key of the task made from item `sequence` of `project`: ENG-12."""
        ...

    def items(self, project: Project) -> list[Item]:
        """Every item of the project (one listing, paginated), with its logical status."""
        ...

    def logical_of(
        self, project: Project, state_id: str | None = None, name: str | None = None, group: str | None = None
    ) -> str | None:
        """The logical status of a state a webhook names (by id, or its name and group)."""
        ...

    def in_place(self, project: Project, item: Item, stage: str) -> bool:
        """True when `item` already shows a task at `stage` (or the stage shows as nothing):
        then writing the stage back would change nothing."""
        ...

    def saw_state(self, item_id: str, state_id: str | None) -> None:
        """A webhook said the item is in `state_id`: what orch believed of it may be stale."""
        ...

    def item_status(self, task: Task) -> str | None:
        """The logical status of the task's item now (one request), "gone", or None when
        the task has no item; raises when the tracker cannot say."""
        ...

    def relations(self, project: Project, item_id: str) -> list[str]:
        """The ids of the items that block `item_id` (one request)."""
        ...

    def budget_left(self) -> int | None:
        """Requests this run may still make; None when the run has no budget."""
        ...
