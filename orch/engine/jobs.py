"""Agent jobs: claim a queued job, run it in the task's worktree, record how it ended.

A job ends with one distinct state: succeeded, failed, timed_out, stalled, cancelled or
reaped. Its result feeds the gates (agent_ok); a reviewer's verdict file becomes a
verdict bound to the head it reviewed; a pushed head is handed to CI. A failure is
retried with exponential backoff up to the agent's max_attempts. Then the task gets
its advance attempts: the end of a job is the event that may turn its gates green.

`orch work` starts each job as its own detached `orch job run --next` process, which
claims one job (as its owner) and runs it: a 40-minute agent never holds the tick.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import NamedTuple

from orch import command_env, log
from orch.config import render_template
from orch.engine import advance as advance_mod
from orch.engine import outbox, tasks
from orch.engine.env import task_env
from orch.engine.runtime import Runtime
from orch.errors import ConfigError, NotReady, OrchError, UsageError
from orch.identity import process_start_time
from orch.names import inside
from orch.store import Audit, Job, Task


class JobReport(NamedTuple):
    job: int
    task: str
    agent: str
    state: str
    reason: str
    log: str | None


def claim(rt: Runtime, job_id: int | None = None) -> Job | None:
    cfg = rt.config
    return rt.store.claim_job(
        owner=rt.owner,
        now=rt.now(),
        log_dir=cfg.log_dir,
        max_running=cfg.work.max_concurrency,
        agent_limits={a.name: a.max_concurrency for a in cfg.agents.values() if a.max_concurrency},
        deps_enabled=cfg.deps.enabled,
        job_id=job_id,
        timeouts={a.name: a.timeout_s for a in cfg.agents.values()},
    )


def work(rt: Runtime, *, max_jobs: int | None = None) -> list[JobReport]:
    """Run claimable jobs in this process, one after another (demo, tests, `--inline`)."""
    reports: list[JobReport] = []
    while max_jobs is None or len(reports) < max_jobs:
        job = claim(rt)
        if job is None:
            break
        reports.append(run(rt, job))
    return reports


FAILED = ("failed", "timed_out", "stalled", "reaped")


def run_one(rt: Runtime, job_id: int | None = None) -> JobReport | None:
    """Claim one job (the next, or `job_id`) as this process and run it; None if none can start.

    A named job that does not exist or is not queued is a UsageError (exit 2); one that
    is queued but cannot start now (no free slot, a dependency, its backoff) is NotReady
    (exit 3). When the job has ended, the jobs it made ready start at once (`start_now`).
    """
    job = claim(rt, job_id)
    if job is None:
        if job_id is not None:
            _why_not(rt, job_id)
        return None
    report = run(rt, job)
    start_now(rt)
    return report


def _why_not(rt: Runtime, job_id: int) -> None:
    job = rt.store.get_job(job_id)
    if job is None:
        raise UsageError(f"no job {job_id} (see `orch queue`)")
    if job.state != "queued":
        raise UsageError(f"job {job_id} is {job.state}; only a queued job can run")
    if job.not_before > rt.now():
        wait = job.not_before - rt.now()
        raise NotReady(f"job {job_id} waits for its backoff: it can start in {wait:.0f}s")
    if rt.config.deps.enabled and not job.ready:
        raise NotReady(f"job {job_id} waits on its task's dependencies (see `orch explain`)")
    raise NotReady(f"job {job_id} cannot start now: every slot is taken (see `orch queue`)")


def spawn(rt: Runtime, *, max_new: int | None = None) -> list[int]:
    """Start detached runners for the jobs that can start now; returns their pids.

    The count is a hint (free slots, claimable jobs): each runner claims in its own
    transaction, so a runner that finds nothing to claim simply exits.
    """
    free = rt.config.work.max_concurrency - rt.store.running_count()
    n = min(free, rt.store.claimable_count(now=rt.now(), deps_enabled=rt.config.deps.enabled))
    if max_new is not None:
        n = min(n, max_new)
    argv = [sys.executable, "-m", "orch"]
    if rt.config.source is not None:
        argv += ["-c", str(rt.config.source)]
    argv += ["job", "run", "--next"]
    log = rt.config.log_dir / "runners.log"
    return [rt.runner.spawn(argv, log_path=log, env={"ORCH_ACTOR": "runner"}) for _ in range(max(n, 0))]


def demand(rt: Runtime) -> int:
    """Jobs that can start or are running. A runner's claim moves a job from one to the
    other, so this grows only when something queues a job (and shrinks when one ends)."""
    claimable = rt.store.claimable_count(now=rt.now(), deps_enabled=rt.config.deps.enabled)
    return claimable + rt.store.running_count()


def start_now(rt: Runtime, *, max_new: int | None = None) -> list[int]:
    """No dead minutes: after something queued a job (a runner ended, a webhook was
    drained, a person gave a verdict), start runners for what can start now instead of
    leaving it to the next tick. `spawn` counts free slots and each runner claims under
    max_concurrency in its own write transaction, so the limits hold exactly.
    `[work] start_immediately = false` leaves every start to the tick."""
    if not rt.config.work.start_immediately:
        return []
    try:
        return spawn(rt, max_new=max_new)
    except OSError as e:  # the tick starts them a minute later; the caller's work is done
        log.warning("start_now_failed", error=str(e), actor=rt.actor)
        return []


def render_prompt(template: str, values: dict[str, str], agent: str) -> str:
    try:
        return render_template(template, values)
    except KeyError as e:
        raise ConfigError(
            f"[agents.{agent}] prompt: unknown variable ${e.args[0]} (known: {', '.join(sorted(values))})"
        ) from None
    except ValueError as e:
        raise ConfigError(f"[agents.{agent}] prompt: {e}") from None


def prompt_text(text: str, limit: int = 2000) -> str:
    """Tracker text made safe for a prompt: no control characters, bounded length."""
    cleaned = "".join(ch if ch in "\n\t" or ch.isprintable() else " " for ch in text)
    return cleaned[:limit]


def run(rt: Runtime, job: Job) -> JobReport:
    """Run a job this process has claimed, to its end; then send what it has to say."""
    try:
        return _run(rt, job)
    except Exception as e:
        # Nothing may leave a claimed job "running" until the reaper's ceiling: it ends
        # failed with the reason (and is retried like any failure), then the error goes on.
        task = rt.store.get_task_by_id(job.task_id)
        if task is not None:
            with contextlib.suppress(Exception):
                _after(rt, job, task, "failed", None, f"orch error: {type(e).__name__}: {e}", None)
        raise
    finally:
        outbox.flush(rt)


def _run(rt: Runtime, job: Job) -> JobReport:
    task = rt.store.get_task_by_id(job.task_id)
    assert task is not None
    if task.stage != job.stage or task.version != job.task_version:
        return _finish(rt, job, task, "cancelled", None, f"task moved on to {task.stage}", None)
    agent = rt.config.agents.get(job.agent)
    if agent is None:
        return _finish(rt, job, task, "failed", None, f"agent {job.agent!r} is not configured", None)
    jobdir = rt.config.state_dir / "jobs" / str(job.id)
    jobdir.mkdir(parents=True, exist_ok=True)
    log = Path(job.log_path or jobdir / "log")
    try:
        worktree = rt.forge.ensure_worktree(task)
        if not inside(worktree, rt.config.workspace.root):
            raise OrchError(f"worktree {worktree} is outside the workspace root")
        values = {
            "agent": agent.name,
            "task_key": task.key,
            "task_title": prompt_text(task.title),
            "stage": task.stage,
            "retries": str(task.retries),
            "worktree": str(worktree),
            "branch": rt.forge.branch(task),
            "repo": task.repo,
            "attempt": str(job.attempt),
            "note": prompt_text(job.note or ""),
        }
        prompt = jobdir / "prompt.md"
        prompt.write_text(render_prompt(agent.prompt, values, agent.name), encoding="utf-8")
        verdict_file = jobdir / "verdict"
        job_vars = {
            "ORCH_PROMPT_FILE": str(prompt),
            "ORCH_VERDICT_FILE": str(verdict_file),
            "ORCH_JOB_ID": str(job.id),
            "ORCH_ATTEMPT": str(job.attempt),
            "ORCH_AGENT": agent.name,
            "ORCH_NOTE": job.note or "",
        }
        env = task_env(rt, task, pass_env=agent.pass_env, extra={"ORCH_WORKTREE": str(worktree), **job_vars})
        hook(rt, "before_run", task, worktree, log, job_vars=job_vars, withhold=agent.pass_env, required=True)
    except OrchError as e:
        return _after(rt, job, task, "failed", None, str(e), None)

    def started(pgid: int) -> None:
        rt.store.set_job_process(job.id, pgid=pgid, pgid_start=process_start_time(pgid))

    out = rt.runner.run(
        agent.command,
        cwd=worktree,
        env=env,
        log_path=log,
        timeout_s=agent.timeout_s,
        on_start=started,
        stall_timeout_s=agent.stall_timeout_s,
    )
    hook(rt, "after_run", task, worktree, log, job_vars=job_vars, withhold=agent.pass_env, required=False)
    if out.state == "succeeded":
        try:
            rt.forge.publish(task)  # a remote forge: push the branch, open the pull request
        except OrchError as e:
            return _after(rt, job, task, "failed", None, f"publishing the branch failed: {e}", None)
    head = rt.forge.branch_head(task)
    report = _after(rt, job, task, out.state, out.exit_code, out.reason, head)
    if report.state == "succeeded":
        _after_success(rt, task, agent.name, verdict_file, head)
    return report


def hook(
    rt: Runtime,
    name: str,
    task: Task,
    cwd: Path,
    log: Path,
    *,
    job_vars: dict[str, str],
    withhold: tuple[str, ...],
    required: bool,
) -> None:
    """Run a workspace hook around the agent, into the job's log, with the job's variables
    but not the names in `withhold` (the agent's `pass_env`); a required one that fails
    raises, the others are only logged."""
    out = command_env.run_hook(
        rt.runner,
        rt.config.workspace.hooks.get(name),
        name=name,
        task=task,
        branch=rt.forge.branch(task),
        cwd=cwd,
        log_path=log,
        timeout_s=rt.config.workspace.hook_timeout_s,
        extra={"ORCH_HOME": str(rt.config.state_dir), **job_vars},
        withhold=withhold,
    )
    if out is not None and out.state != "succeeded" and required:
        raise OrchError(f"workspace hook {name} {out.reason}")


def _after(
    rt: Runtime, job: Job, task: Task, state: str, code: int | None, reason: str, head: str | None
) -> JobReport:
    report = _finish(rt, job, task, state, code, reason, head)
    if report.state in ("failed", "timed_out", "stalled"):
        retry(rt, job, task, reason)
    return report


def retry(rt: Runtime, job: Job, task: Task, reason: str) -> Job | None:
    """Queue the next attempt with exponential backoff, or give up: the task is then
    blocked as escalated and a person is told (`orch retry KEY` runs the agent again)."""
    agent = rt.config.agents.get(job.agent)
    tries = attempts_in_series(rt, job)
    if agent is None or tries >= agent.max_attempts:
        why = f"{job.agent} gave up after {tries} attempt{'s' if tries != 1 else ''}: {reason}"
        rt.store.set_blocked(
            task.id,
            blocked=True,
            reason=why,
            now=rt.now(),
            escalated=True,
            audit=Audit(task.id, rt.actor, "escalated", {"job": job.id, "reason": why}, task.stage),
            notify=(
                f"job-gave-up:{job.id}",
                f"{task.key} escalated: {why}. Look at `orch logs {task.key}`, then `orch retry {task.key}`",
            ),
        )
        return None
    delay = min(rt.config.work.backoff_base_s * 2 ** (tries - 1), rt.config.work.backoff_max_s)
    return rt.store.enqueue_job(
        task_id=task.id,
        agent=job.agent,
        stage=job.stage,
        task_version=job.task_version,
        now=rt.now(),
        attempt=job.attempt + 1,
        not_before=rt.now() + delay,
        note=job.note,
        audit=Audit(
            task.id,
            rt.actor,
            "job_retry",
            {"job": job.id, "attempt": job.attempt + 1, "delay_s": delay, "reason": reason},
        ),
    )


def attempts_in_series(rt: Runtime, job: Job) -> int:
    """Attempts of this job's series: since the visit began, or since `orch retry` began
    a new series (its jobs, backoff retries included, carry that retry's note)."""
    if not (job.note or "").startswith("retried by "):
        return job.attempt
    same = {
        j.attempt
        for j in rt.store.jobs(task_id=job.task_id)
        if j.agent == job.agent and j.task_version == job.task_version and j.note == job.note
    }
    start = job.attempt
    while start - 1 in same:
        start -= 1
    return job.attempt - start + 1


def _after_success(rt: Runtime, task: Task, agent: str, verdict_file: Path, head: str | None) -> None:
    if verdict_file.exists():
        lines = verdict_file.read_text(encoding="utf-8", errors="replace").strip().splitlines() or [""]
        word = lines[0].strip().lower()
        if word in ("approve", "reject"):
            tasks.verdict(
                rt, task.key, word, reason="\n".join(lines[1:])[:2000] or None, by_agent=agent, sha=head
            )
    if head and rt.forge.branch_ahead(task):
        state, _ = rt.forge.ci_status(task, head)
        if state is None:
            _request_ci(rt, task, head)
    # The tick will try again if this fails; the job itself is recorded.
    with contextlib.suppress(OrchError):
        advance_mod.advance_chain(rt, task.key)


def _request_ci(rt: Runtime, task: Task, head: str, tries: int = 5) -> None:
    """Hand the new head to CI. Nothing else asks again (the gate only reads), so a
    repository busy with another runner's git for a moment is waited out, briefly."""
    import time

    for n in range(tries):
        try:
            rt.forge.request_ci(task, head)
            return
        except OrchError as e:
            if n == tries - 1 or "trying again later" not in str(e):
                raise
            time.sleep(0.1 * 2**n)


def _finish(
    rt: Runtime, job: Job, task: Task, state: str, code: int | None, reason: str, head: str | None
) -> JobReport:
    ended = rt.store.finish_job(
        job.id,
        state=state,
        exit_code=code,
        reason=reason,
        now=rt.now(),
        head_sha=head,
        owner=rt.owner,
        audit=Audit(
            task.id,
            rt.actor,
            f"job_{state}",
            {"job": job.id, "agent": job.agent, "exit_code": code, "reason": reason},
            task.stage,
        ),
    )
    log.info(
        "job_ended", task=task.key, job=job.id, agent=job.agent, state=state, reason=reason, actor=rt.actor
    )
    if not ended:  # cancelled or reaped under us: that verdict stands
        latest = rt.store.get_job(job.id)
        state = latest.state if latest else state
        reason = (latest.reason if latest else None) or reason
    return JobReport(job.id, task.key, job.agent, state, reason, job.log_path)
