"""Task commands: the local tracker, and what a person does to a task."""

from __future__ import annotations

import typer

from orch.cli.commands import app, emit_json, runtime
from orch.cli.complete import KEY, stages

task_app = typer.Typer(
    help="Add, list and show tasks (the local tracker).\n\nExample: orch task list",
    no_args_is_help=True,
)
app.add_typer(task_app, name="task")

JSON = typer.Option(False, "--json", help="Print JSON instead of a table.")
REASON = typer.Option(None, "--reason", "-r", help="Why, for the audit trail and the message.")


@task_app.command("add")
def task_add(
    title: str = typer.Argument(..., help="What the task is about."),
    repo: str = typer.Option(None, "--repo", help="Configured repository (default: the only one)."),
    key: str = typer.Option(None, "--key", help="Task key (default: <key_prefix>-<n>)."),
    json_: bool = JSON,
) -> None:
    """Add a task at the first stage and queue its first agent job.

    Example: orch task add "Add a health endpoint" --key APP-7
    """
    from orch.engine import jobs, tasks

    rt = runtime(create=True)  # a write that may be the first: it creates the database
    task = tasks.add(rt, title, repo=repo, key=key)
    jobs.start_now(rt)
    if json_:
        emit_json(task.as_dict())
    else:
        typer.echo(f"{task.key} added at {task.stage}")


@task_app.command("list")
def task_list(
    stage: str = typer.Option(
        None,
        "--stage",
        metavar="STAGE",
        autocompletion=stages,
        help="Only tasks at this stage (analysis, development, review, merge, deploy, monitoring, "
        "done, cancelled, or your [pipeline.stages]).",
    ),
    json_: bool = JSON,
) -> None:
    """List tasks with their stage, retries and blocks.

    Example: orch task list --stage review --json
    """
    rt = runtime()
    if stage is not None and stage not in rt.config.stages:
        from orch.errors import UsageError

        raise UsageError(f"no such stage {stage!r} (stages: {', '.join(rt.config.stages)})")
    rows = rt.store.list_tasks(stage=stage)
    if json_:
        emit_json([t.as_dict() for t in rows])
        return
    from rich.console import Console
    from rich.table import Table

    from orch.cli.render import cell

    table = Table("key", "stage", "v", "retries", "repo", "title", "blocked")
    for t in rows:
        table.add_row(
            cell(t.key),
            cell(t.stage),
            str(t.version),
            str(t.retries),
            cell(t.repo),
            cell(t.title),
            cell(("escalated: " if t.escalated else "") + (t.block_reason or "") if t.blocked else ""),
        )
    Console().print(table)


@task_app.command("show")
def task_show(key: str = KEY, json_: bool = JSON) -> None:
    """Show one task, its jobs and its lease.

    Example: orch task show ORCH-1 --json
    """
    from orch.engine.runtime import task_lease

    rt = runtime()
    task = rt.task(key)
    jobs = rt.store.jobs(task_id=task.id)
    lease = rt.store.get_lease(task_lease(task))
    data = {
        **task.as_dict(),
        "jobs": [j.as_dict() for j in jobs],
        "lease": lease.as_dict() if lease else None,
        "branch": rt.forge.branch(task),
    }
    if json_:
        emit_json(data)
        return
    from orch.cli.render import safe_text

    for k in ("key", "title", "repo", "stage", "version", "retries", "branch"):
        typer.echo(f"{k:>9}: {safe_text(data[k])}")
    if task.blocked:
        typer.echo(f"  blocked: {safe_text(task.block_reason)}")
    typer.echo(f"    lease: {safe_text(lease.actor + ' ' + lease.owner.label()) if lease else 'free'}")
    for j in jobs:
        line = f"{j.id} {j.agent}@{j.stage} v{j.task_version} {j.state} {j.reason or ''}"
        typer.echo(f"      job: {safe_text(line)}")


def _verdict_cmd(word: str) -> None:
    @app.command(word)
    def cmd(key: str = KEY, reason: str = REASON) -> None:
        from orch.cli.render import safe_text
        from orch.engine import advance, jobs, tasks

        rt = runtime()
        tasks.verdict(rt, key, word, reason=reason)
        typer.echo(safe_text(f"{key}: {word.rstrip('e')}ed at {rt.task(key).stage}"))
        result = advance.advance(rt, key)
        if result.outcome == "advanced":
            typer.echo(safe_text(f"{key}: {result.stage} -> {result.to_stage}"))
            jobs.start_now(rt)
        else:
            typer.echo(safe_text(f"{key}: stays at {result.stage}: {result.message}"))

    cmd.__doc__ = (
        f"{word.capitalize()} the task at its current stage, as a person.\n\n"
        f"At a human gate (analysis) this is the decision; at review it is a verdict on the\n"
        f"current head. The task is then advanced if its gates are green.\n\n"
        f'Example: orch {word} ORCH-3 --reason "looks right"'
    )


_verdict_cmd("approve")
_verdict_cmd("reject")


@app.command("block")
def block(key: str = KEY, reason: str = REASON) -> None:
    """Block a task: no automatic actor moves it until it is unblocked.

    Example: orch block ORCH-3 --reason "waiting for the API contract"
    """
    from orch.engine import tasks

    changed = tasks.block(runtime(), key, reason)
    typer.echo(f"{key}: {'blocked' if changed else 'was blocked already'}")


@app.command("unblock")
def unblock(key: str = KEY, reason: str = REASON) -> None:
    """Unblock a task (also clears an escalation: a person has looked).

    Example: orch unblock ORCH-3
    """
    from orch.engine import jobs, tasks

    rt = runtime()
    changed = tasks.unblock(rt, key, reason)
    typer.echo(f"{key}: {'unblocked' if changed else 'was not blocked'}")
    if changed:
        jobs.start_now(rt)


@app.command("retry")
def retry(key: str = KEY, reason: str = REASON) -> None:
    """Run the stage's agent again after its job used up its attempts (clears the escalation).

    The agent gets a fresh set of [agents.NAME] max_attempts; the reason reaches it as $note.
    Exit 2 if the task is terminal, at a stage with no agent, blocked by a person (unblock
    it instead) or has a job queued or running already.

    Example: orch retry ORCH-3 --reason "fixed the flaky test"
    """
    from orch.cli.render import safe_text
    from orch.engine import jobs, tasks

    rt = runtime()
    job = tasks.retry(rt, key, reason)
    typer.echo(safe_text(f"{key}: job {job.id} ({job.agent}) queued at {job.stage}"))
    jobs.start_now(rt)


@app.command("cancel")
def cancel(
    key: str = KEY,
    reason: str = REASON,
    wait: float = typer.Option(
        10.0, "--wait", help="Seconds to wait for an effect that cannot be stopped half-way (a deploy)."
    ),
) -> None:
    """Cancel a task: it moves to `cancelled` and its worktree is removed.

    Once this exits 0 no effect of the task starts or completes. A merge or deploy in
    flight is waited for (--wait) and reported as done before the cancel; exit 4 if it
    still runs.

    Example: orch cancel ORCH-3 --reason "duplicate of ORCH-2" --wait 60
    """
    from orch.engine import tasks

    done = tasks.cancel(runtime(), key, reason, wait_s=wait)
    typer.echo(f"{key}: {done.task.stage}")
    for line in done.before:
        typer.echo(f"{key}: {line}")
