"""The ports the engine talks through. Adapters implement them; the engine never imports one."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, NamedTuple, Protocol

from orch.store import Task


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

    def snapshot(self) -> AbstractContextManager[None]:
        """Within it, branch heads are read once per repository (a pass over many tasks)."""
        ...


class Tracker(Protocol):
    """Where people see and move work. The local tracker is the orch DB itself."""

    def stage_changed(self, task: Task, stage: str) -> None: ...

    def effect_started(self, task: Task, effect: str) -> None:
        """An irreversible effect (a deploy) started: show it (Deploying). Optional."""
        ...


class Notifier(Protocol):
    """Tells people something. Called only with messages already committed to the outbox."""

    def send(self, text: str) -> None: ...


class ExternalTracker(Tracker, Protocol):
    """A tracker that lives outside orch (Plane): its items create and steer tasks."""

    def project_for(self, project_id: str) -> Any: ...

    def logical_of(
        self, project: Any, state_id: str | None = None, name: str | None = None, group: str | None = None
    ) -> str | None: ...

    def task_key(self, project: Any, sequence_id: int) -> str: ...

    def saw_state(self, item_id: str, state_id: str | None) -> None:
        """A webhook said the item is in `state_id`: what orch believed of it may be stale."""
        ...

    def item_status(self, task: Task) -> str | None:
        """The logical status of the task's item now (one request), "gone", or None when
        the task has no item; raises when the tracker cannot say."""
        ...
