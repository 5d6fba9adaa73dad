"""The Runtime: everything an engine function needs, wired once per process."""

from __future__ import annotations

from collections.abc import Callable

from orch.config import Config
from orch.errors import UsageError
from orch.identity import Owner
from orch.ports import ExternalTracker, Forge, Notifier, Runner, Tracker
from orch.store import Store, Task


class Runtime:
    """The wiring of one process. `forge` is built on first use: a red gate that never
    looks at git should not pay for the forge's imports.

    `tracker` is told about stage changes; `external` is the same tracker when it lives
    outside orch (Plane) and its items steer tasks, None with the local tracker: the
    engine asks `external is None`, never which kind of tracker is configured."""

    def __init__(
        self,
        *,
        config: Config,
        store: Store,
        forge: Forge | Callable[[], Forge],
        tracker: Tracker,
        external: ExternalTracker | None = None,
        notifier: Notifier,
        runner: Runner,
        clock: Callable[[], float],
        owner: Owner,
        actor: str,
    ):
        self.config = config
        self.store = store
        self._forge = forge
        self.tracker = tracker
        self.external = external
        self.notifier = notifier
        self.runner = runner
        self.clock = clock
        self.owner = owner
        self.actor = actor

    @property
    def forge(self) -> Forge:
        if callable(self._forge):
            self._forge = self._forge()
        return self._forge

    @forge.setter
    def forge(self, value: Forge) -> None:
        self._forge = value

    def now(self) -> float:
        return self.clock()

    def task(self, key: str) -> Task:
        """The task, or a UsageError naming the key (exit 2)."""
        task = self.store.get_task(key)
        if task is None:
            raise UsageError(f"no task {key!r} (see `orch task list`)")
        return task

    def close(self) -> None:
        """Send what this process queued, then close the database.

        Engine steps queue their messages in the outbox, in the transaction of the change
        they report; sending is done once, here (and by the tick), not after every step.
        """
        from orch.engine import outbox

        try:
            outbox.flush(self)
        finally:
            self.store.close()
