"""The Runtime: everything an engine function needs, wired once per process."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from orch.config import Config
from orch.errors import UsageError
from orch.identity import Owner
from orch.ports import Forge, Notifier, Runner, Tracker
from orch.store import Store, Task


@dataclass
class Runtime:
    config: Config
    store: Store
    forge: Forge
    tracker: Tracker
    notifier: Notifier
    runner: Runner
    clock: Callable[[], float]
    owner: Owner
    actor: str

    def now(self) -> float:
        return self.clock()

    def task(self, key: str) -> Task:
        """The task, or a UsageError naming the key (exit 2)."""
        task = self.store.get_task(key)
        if task is None:
            raise UsageError(f"no task {key!r} (see `orch task list`)")
        return task

    def close(self) -> None:
        self.store.close()


def task_lease(task: Task) -> str:
    return f"task:{task.key}"
