"""The local tracker: tasks and their states live in the orch DB; people act through the CLI.

It is a `Tracker` and not an `ExternalTracker`: nothing outside orch creates or steers a
task, so the runtime holds no external tracker with it (`Runtime.external is None`).
"""

from __future__ import annotations

from orch.records import Task


class LocalTracker:
    """Tasks and their states live in the DB; people act through the CLI."""

    def stage_changed(self, task: Task, stage: str) -> None:
        return None

    def effect_started(self, task: Task, effect: str) -> None:
        return None
