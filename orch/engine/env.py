"""The environment a command sees: the task as variables, never spliced into a shell line."""

from __future__ import annotations

from orch.engine.runtime import Runtime
from orch.store import Task


def task_env(rt: Runtime, task: Task, **extra: str) -> dict[str, str]:
    env = {
        "ORCH_TASK_KEY": task.key,
        "ORCH_TASK_TITLE": task.title,
        "ORCH_TASK_REPO": task.repo,
        "ORCH_STAGE": task.stage,
        "ORCH_RETRIES": str(task.retries),
        "ORCH_BRANCH": rt.forge.branch(task),
        "ORCH_HOME": str(rt.config.state_dir),
    }
    env.update(extra)
    return env
