"""`orch demo`: a throwaway repository, three tasks, the whole pipeline, offline.

Scripted agents make real commits; the reviewer rejects DEMO-2 once, so it goes back to
development; a person approves at the analysis gate through the same function the
`orch approve` command calls; a timer's work is done by the same `work` and `advance`
that `orch work` / `orch advance` run. Nothing here is simulated but the people.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

from orch import config as config_mod
from orch.adapters.git import git, init_repo
from orch.app.wiring import open_runtime
from orch.engine import advance, jobs, tasks
from orch.engine.runtime import Runtime
from orch.errors import UsageError

TITLES = ["Add a health endpoint", "Parse the config file", "Write the changelog"]

ANALYST = """#!/bin/sh
echo "analysing $ORCH_TASK_KEY"
cat "$ORCH_PROMPT_FILE"
"""
DEVELOPER = """#!/bin/sh
set -e
mkdir -p features
printf '%s (retry %s)\\n' "$ORCH_TASK_TITLE" "$ORCH_RETRIES" >> "features/$ORCH_TASK_KEY.txt"
git add -A
git commit -q -m "$ORCH_TASK_KEY: $ORCH_TASK_TITLE (retry $ORCH_RETRIES)"
echo "committed $(git rev-parse --short HEAD)"
"""
REVIEWER = """#!/bin/sh
# Rejects DEMO-2 the first time, so that it goes back to development once.
if [ "$ORCH_TASK_KEY" = "DEMO-2" ] && [ "$ORCH_RETRIES" = "0" ]; then
  printf 'reject\\nplease cover the empty file case\\n' > "$ORCH_VERDICT_FILE"
else
  echo approve > "$ORCH_VERDICT_FILE"
fi
"""


@dataclass
class DemoResult:
    root: Path
    seconds: float
    tasks: dict[str, str]
    main_log: list[str]
    timeline: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(stage == "done" for stage in self.tasks.values())


def write_setup(root: Path) -> Path:
    """Create the repository, the agents and orch.toml under `root`; return the config path."""
    repo = root / "repo"
    init_repo(repo)
    agents = root / "agents"
    agents.mkdir()
    for name, body in (("analyst", ANALYST), ("developer", DEVELOPER), ("reviewer", REVIEWER)):
        path = agents / f"{name}.sh"
        path.write_text(body)
        path.chmod(0o755)
    cfg = {
        "store": {"path": ".orch/orch.db"},
        "workspace": {"root": ".orch/worktrees"},
        "tracker": {"kind": "local", "key_prefix": "DEMO"},
        "repos": {"app": {"path": "repo", "default_branch": "main", "ci": "ls features/*.txt"}},
        "agents": {
            name: {"command": str(agents / f"{name}.sh"), "timeout_s": 60}
            for name in ("analyst", "developer", "reviewer")
        },
        "effects": {
            "deploy": {
                "type": "command",
                "irreversible": True,
                "command": 'echo "deployed $ORCH_TASK_KEY" >> deploys.log',
                "probe": '[ -f deploys.log ] && grep -qx "deployed $ORCH_TASK_KEY" deploys.log',
            }
        },
        "gates": {
            "monitor_healthy": {
                "type": "command",
                "command": 'grep -q "$ORCH_TASK_KEY" deploys.log',
            }
        },
    }
    path = root / "orch.toml"
    path.write_text("# Written by `orch demo`.\n" + tomli_w.dumps(cfg))
    return path


def run(root: Path, *, say: Callable[[str], None] = lambda s: None, max_rounds: int = 40) -> DemoResult:
    started = time.monotonic()
    if root.exists() and any(root.iterdir()):
        raise UsageError(f"{root} is not empty: pick a new directory for the demo")
    root.mkdir(parents=True, exist_ok=True)
    cfg_path = write_setup(root)
    cfg = config_mod.load(cfg_path, environ={})  # the demo ignores the caller's ORCH_* settings
    timer = open_runtime(cfg, actor="timer")
    person = open_runtime(cfg, actor="person:you")
    try:
        keys = []
        for title in TITLES:
            t = tasks.add(person, title)
            keys.append(t.key)
            say(f"$ orch task add {title!r}   -> {t.key} at {t.stage}")
        for _ in range(max_rounds):
            for r in jobs.work(timer):
                say(f"  job {r.job}: {r.agent} for {r.task} {r.state}")
            _approve_analysed(person, keys, say)
            for key in keys:
                res = advance.advance(timer, key)
                if res.outcome == "advanced":
                    say(f"$ orch advance {key}   -> {res.stage} -> {res.to_stage}")
            if all(timer.task(k).stage == "done" for k in keys) and not timer.store.jobs(states=("queued",)):
                break
        final = {k: timer.task(k).stage for k in keys}
        log = git("log", "--format=%s", "main", cwd=cfg.repos["app"].path).stdout.splitlines()
        timeline = _timeline(timer, keys)
    finally:
        timer.close()
        person.close()
    return DemoResult(root, time.monotonic() - started, final, log, timeline)


def _approve_analysed(person: Runtime, keys: list[str], say: Callable[[str], None]) -> None:
    """What a person does at the human gate: read the analysis, approve."""
    for key in keys:
        task = person.task(key)
        if task.stage != "analysis" or person.store.latest_verdict(task.id, task.version):
            continue
        job = person.store.latest_job(task.id, "analyst", task.version)
        if job is not None and job.state == "succeeded":
            tasks.verdict(person, key, "approve", reason="analysis reads well")
            say(f"$ orch approve {key}")
            res = advance.advance(person, key)
            if res.outcome == "advanced":
                say(f"  {key}: {res.stage} -> {res.to_stage}")


_SHOWN = {
    "created",
    "stage_changed",
    "approve",
    "reject",
    "job_succeeded",
    "job_failed",
    "effect_done",
}


def _timeline(rt: Runtime, keys: list[str]) -> list[dict[str, Any]]:
    rows = []
    for key in keys:
        task = rt.task(key)
        for r in rt.store.history(task.id):
            if r.event in _SHOWN:
                rows.append(
                    {
                        "at": r.at,
                        "task": key,
                        "actor": r.actor,
                        "event": r.event,
                        "from": r.from_stage,
                        "to": r.to_stage,
                        "detail": r.detail,
                    }
                )
    rows.sort(key=lambda r: (r["at"], r["task"]))
    return rows
