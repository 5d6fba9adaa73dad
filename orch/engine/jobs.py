"""Agent jobs: claim one queued job, run it in the task's worktree, record how it ended.

The job's result feeds the gates (agent_ok), a reviewer's verdict file becomes a verdict
bound to the head it reviewed, and a pushed head is handed to CI. Then the task gets
one advance attempt: the end of a job is the event that may turn its gates green.
"""

from __future__ import annotations

import contextlib
import string
from pathlib import Path
from typing import NamedTuple

from orch.engine import advance as advance_mod
from orch.engine import tasks
from orch.engine.env import task_env
from orch.engine.runtime import Runtime
from orch.errors import ConfigError, OrchError
from orch.names import inside
from orch.store import Audit, Job, Task


class JobReport(NamedTuple):
    job: int
    task: str
    agent: str
    state: str
    reason: str
    log: str | None


def work(rt: Runtime, *, max_jobs: int | None = None) -> list[JobReport]:
    """Run queued jobs one after another until none is left (or max_jobs ran)."""
    reports: list[JobReport] = []
    while max_jobs is None or len(reports) < max_jobs:
        job = rt.store.claim_job(owner=rt.owner, now=rt.now(), log_dir=rt.config.log_dir)
        if job is None:
            break
        reports.append(run(rt, job))
    return reports


def render_prompt(template: str, values: dict[str, str], agent: str) -> str:
    try:
        return string.Template(template).substitute(values)
    except KeyError as e:
        raise ConfigError(
            f"[agents.{agent}] prompt: unknown variable ${e.args[0]} (known: {', '.join(sorted(values))})"
        ) from None
    except ValueError as e:
        raise ConfigError(f"[agents.{agent}] prompt: {e}") from None


def run(rt: Runtime, job: Job) -> JobReport:
    task = rt.store.get_task_by_id(job.task_id)
    assert task is not None
    if task.stage != job.stage or task.version != job.task_version:
        return _finish(rt, job, task, "cancelled", None, f"task moved on to {task.stage}", None)
    agent = rt.config.agents.get(job.agent)
    if agent is None:
        return _finish(rt, job, task, "failed", None, f"agent {job.agent!r} is not configured", None)
    jobdir = rt.config.state_dir / "jobs" / str(job.id)
    jobdir.mkdir(parents=True, exist_ok=True)
    try:
        worktree = rt.forge.ensure_worktree(task)
        if not inside(worktree, rt.config.workspace_root):
            raise OrchError(f"worktree {worktree} is outside the workspace root")
        values = {
            "agent": agent.name,
            "task_key": task.key,
            "task_title": task.title,
            "stage": task.stage,
            "retries": str(task.retries),
            "worktree": str(worktree),
            "branch": rt.forge.branch(task),
            "repo": task.repo,
            "attempt": str(job.attempt),
        }
        prompt = jobdir / "prompt.md"
        prompt.write_text(render_prompt(agent.prompt, values, agent.name), encoding="utf-8")
    except OrchError as e:
        return _finish(rt, job, task, "failed", None, str(e), None)
    verdict_file = jobdir / "verdict"
    env = task_env(
        rt,
        task,
        ORCH_WORKTREE=str(worktree),
        ORCH_PROMPT_FILE=str(prompt),
        ORCH_VERDICT_FILE=str(verdict_file),
        ORCH_JOB_ID=str(job.id),
        ORCH_ATTEMPT=str(job.attempt),
        ORCH_AGENT=agent.name,
    )
    log = Path(job.log_path or jobdir / "log")
    log.parent.mkdir(parents=True, exist_ok=True)
    deadline = rt.now() + agent.timeout_s
    out = rt.runner.run(
        agent.command,
        cwd=worktree,
        env=env,
        log_path=log,
        timeout_s=agent.timeout_s,
        on_start=lambda pgid: rt.store.set_job_process(job.id, pgid=pgid, deadline=deadline),
    )
    head = rt.forge.branch_head(task)
    report = _finish(rt, job, task, out.state, out.exit_code, out.reason, head)
    if out.state == "succeeded":
        _after_success(rt, task, agent.name, verdict_file, head)
    return report


def _after_success(rt: Runtime, task: Task, agent: str, verdict_file: Path, head: str | None) -> None:
    if verdict_file.exists():
        lines = verdict_file.read_text(encoding="utf-8", errors="replace").strip().splitlines() or [""]
        word = lines[0].strip().lower()
        if word in ("approve", "reject"):
            tasks.verdict(
                rt,
                task.key,
                word,
                reason="\n".join(lines[1:])[:2000] or None,
                by_agent=agent,
                sha=head,
            )
    if head and rt.forge.branch_ahead(task):
        state, _ = rt.forge.ci_status(task, head)
        if state is None:
            rt.forge.request_ci(task, head)
    # The tick or a person will try again if this fails; the job itself is recorded.
    with contextlib.suppress(OrchError):
        advance_mod.advance(rt, task.key)


def _finish(
    rt: Runtime, job: Job, task: Task, state: str, code: int | None, reason: str, head: str | None
) -> JobReport:
    rt.store.finish_job(
        job.id,
        state=state,
        exit_code=code,
        reason=reason,
        now=rt.now(),
        head_sha=head,
        audit=Audit(
            task.id,
            rt.actor,
            f"job_{state}",
            {"job": job.id, "agent": job.agent, "exit_code": code, "reason": reason},
            task.stage,
        ),
    )
    return JobReport(job.id, task.key, job.agent, state, reason, job.log_path)
