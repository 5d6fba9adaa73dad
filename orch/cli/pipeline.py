"""Moving a task along the pipeline and reading its trail: `orch advance`, `orch history`."""

from __future__ import annotations

import typer

from orch.cli.context import config_path, runtime
from orch.cli.options import JSON, KEY
from orch.cli.render import emit_json

app = typer.Typer()


@app.command("advance")
def advance(
    key: str = KEY,
    expect: str = typer.Option(None, "--expect", help="Only act if the task is at this stage."),
    json_: bool = JSON,
) -> None:
    """Move a task one step if its gates are green (exit 3 if not, 4 if busy).

    Example: orch advance ORCH-12 --expect development
    """
    from orch.cli import machine

    raise typer.Exit(machine.advance(config_path(), key=key, expect=expect, json_=json_))


def _ts(t: float) -> str:
    import time

    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


@app.command("history")
def history(key: str = KEY, json_: bool = JSON) -> None:
    """The audit trail of a task: gates, leases, effects, CAS results, jobs.

    Example: orch history ORCH-12 --json
    """
    rt = runtime()
    task = rt.task(key)
    rows = rt.store.history(task.id)
    if json_:
        emit_json([r.as_dict() for r in rows])
        return
    from rich.console import Console
    from rich.table import Table

    from orch.cli.render import cell, plain

    table = Table("at", "actor", "event", "stage", "detail", title=cell(f"{task.key}: {task.title}"))
    for r in rows:
        move = f"{r.from_stage or ''} -> {r.to_stage}" if r.to_stage else (r.from_stage or "")
        detail = plain(r.detail)
        table.add_row(_ts(r.at), cell(r.actor), cell(r.event), cell(move), cell(detail[:120]))
    Console().print(table)
