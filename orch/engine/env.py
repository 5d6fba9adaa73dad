"""The environment a command sees: the task as variables, never spliced into a shell line.

Task text comes from the tracker and is untrusted: every value passes `env_text` (no NUL,
no lone surrogate, bounded), so a hostile title cannot stop a command from starting.
What a command inherits from orch's own environment is the runner's business: every
secret orch knows of is removed there (`Config.secret_env_names`); `pass_env` names the
few a command is given back, here, by name.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping

from orch.engine.runtime import Runtime
from orch.names import env_text
from orch.store import Task


def task_env(
    rt: Runtime,
    task: Task,
    *,
    pass_env: Iterable[str] = (),
    environ: Mapping[str, str] | None = None,
    **extra: str,
) -> dict[str, str]:
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
    env = {k: env_text(v) for k, v in env.items()}
    source = os.environ if environ is None else environ
    for name in pass_env:  # secrets this command is configured to receive
        if name in source:
            env[name] = source[name]
    return env
