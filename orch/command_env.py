"""What a command orch starts for a task is given, and the one runner of workspace hooks.

Every such command (an agent, a gate or effect command, a probe, a workspace hook) gets
the task as `ORCH_*` variables, built by `variables`, never spliced into a shell line.
Task text comes from the tracker and is untrusted: every value passes `env_text` (no
NUL, no lone surrogate, bounded), so a hostile title cannot stop a command from
starting. What a command inherits from orch's own environment is the runner's business:
every secret orch knows of is removed there; an agent's, gate's or effect's `pass_env`
gives a few back by name (engine/env.py), and never to a hook (docs/security.md).

The four workspace hooks run through `run_hook`: `after_create` and `before_remove` by
the forge that keeps the worktree, `before_run` and `after_run` by the job around its
agent (with the job's variables too). It sits below the engine and the adapters so
both use this one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

from orch.names import env_text
from orch.ports import Outcome, Runner
from orch.records import Task


def variables(task: Task, *, branch: str, **extra: str) -> dict[str, str]:
    """The task's variables (and `extra`), each made safe for the environment."""
    env = {
        "ORCH_TASK_KEY": task.key,
        "ORCH_TASK_TITLE": task.title,
        "ORCH_TASK_REPO": task.repo,
        "ORCH_STAGE": task.stage,
        "ORCH_RETRIES": str(task.retries),
        "ORCH_BRANCH": branch,
    }
    env.update(extra)
    return {k: env_text(v) for k, v in env.items()}


def run_hook(
    runner: Runner,
    command: str | None,
    *,
    name: str,
    task: Task,
    branch: str,
    cwd: Path,
    log_path: Path,
    timeout_s: float,
    extra: Mapping[str, str] | None = None,
    withhold: Iterable[str] = (),
) -> Outcome | None:
    """Run workspace hook `name` (its `command`, if one is configured; else None) in the
    worktree `cwd`, appending to `log_path`.

    It sees the task's variables, `ORCH_WORKTREE`, `extra` (a job's own variables) and
    `ORCH_HOOK`, minus the names in `withhold` (the agent's `pass_env`: a hook that runs
    around an agent is not given the secrets the agent is). What a failure means is the
    caller's to say: a failed `after_create` or `before_run` is an error, a failed
    `before_remove` is only logged.
    """
    if not command:
        return None
    env = variables(task, branch=branch, ORCH_WORKTREE=str(cwd), **(extra or {}))
    held = set(withhold)
    env = {k: v for k, v in env.items() if k not in held}
    env["ORCH_HOOK"] = name
    return runner.run(command, cwd=cwd, env=env, log_path=log_path, timeout_s=timeout_s)
