"""Run a command with the task's environment and a log: gates, effects and probes.

The variables are orch/command_env.py's (the task, never spliced into a shell line).
What a command inherits from orch's own environment is the runner's business: every
secret orch knows of is removed there (`Config.secret_env_names`); `pass_env` names the
few a command is given back, here, by name.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from orch import command_env
from orch.engine.runtime import Runtime
from orch.ports import Outcome
from orch.store import Task


def task_env(
    rt: Runtime,
    task: Task,
    *,
    pass_env: Iterable[str] = (),
    environ: Mapping[str, str] | None = None,
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The task's variables, ORCH_HOME and `extra`, then the `pass_env` names found in
    `environ` (orch's own environment unless given)."""
    env = command_env.variables(
        task, branch=rt.forge.branch(task), ORCH_HOME=str(rt.config.state_dir), **(extra or {})
    )
    source = os.environ if environ is None else environ
    for name in pass_env:  # secrets this command is configured to receive
        if name in source:
            env[name] = source[name]
    return env


def run(
    rt: Runtime,
    task: Task,
    command: str,
    *,
    log_path: Path,
    timeout_s: float,
    pass_env: Iterable[str] = (),
    on_start: Callable[[int], None] | None = None,
) -> Outcome:
    """Run a configured command for `task` in orch's base directory (beside orch.toml),
    with the task's variables and its `pass_env`, appending its output to `log_path`."""
    return rt.runner.run(
        command,
        cwd=rt.config.base_dir,
        env=task_env(rt, task, pass_env=pass_env),
        log_path=log_path,
        timeout_s=timeout_s,
        on_start=on_start,
    )
