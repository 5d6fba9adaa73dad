"""`orch task`: add, list and show tasks (the local tracker)."""

from __future__ import annotations

import typer

from orch.cli.complete import stages
from orch.cli.context import runtime
from orch.cli.options import JSON, KEY
from orch.cli.render import emit_json

app = typer.Typer(
    name="task",
    help="Add, list and show tasks (the local tracker).\n\nExample: orch task list",
    no_args_is_help=True,
)


@app.command("add")
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


@app.command("list")
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
    if stage is not None and stage not in rt.config.pipeline.stages:
        from orch.errors import UsageError

        raise UsageError(f"no such stage {stage!r} (stages: {', '.join(rt.config.pipeline.stages)})")
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


@app.command("show")
def task_show(key: str = KEY, json_: bool = JSON) -> None:
    """Show one task, its jobs and its lease.

    Example: orch task show ORCH-1 --json
    """
    from orch.engine import lease_names

    rt = runtime()
    task = rt.task(key)
    jobs = rt.store.jobs(task_id=task.id)
    lease = rt.store.get_lease(lease_names.task(task.key))
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
