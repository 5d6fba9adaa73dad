"""Workspace lifecycle hooks, shared by every forge that keeps per-task worktrees."""

from __future__ import annotations

from pathlib import Path

from orch.names import env_text
from orch.ports import Runner
from orch.store import Task


def run_hook(
    runner: Runner,
    command: str | None,
    *,
    name: str,
    task: Task,
    branch: str,
    path: Path,
    log_path: Path,
    timeout_s: float,
) -> bool:
    """Run hook `name` in the worktree with the task's variables; True if it passed (or is unset)."""
    if not command:
        return True
    env = {
        "ORCH_HOOK": name,
        "ORCH_TASK_KEY": task.key,
        "ORCH_TASK_TITLE": env_text(task.title),
        "ORCH_TASK_REPO": task.repo,
        "ORCH_BRANCH": branch,
        "ORCH_WORKTREE": str(path),
    }
    return runner.run(command, cwd=path, env=env, log_path=log_path, timeout_s=timeout_s).state == "succeeded"
