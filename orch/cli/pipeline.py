"""Pipeline commands: advance, work, history, lease."""

from __future__ import annotations

import typer

from orch.cli.commands import app, emit_json, runtime
from orch.cli.complete import KEY

JSON = typer.Option(False, "--json", help="Print JSON.")


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
    from orch.cli.commands import _state

    raise typer.Exit(machine.advance(_state["config"], key=key, expect=expect, json_=json_))


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


lease_app = typer.Typer(help="Show and release leases.\n\nExample: orch lease show", no_args_is_help=True)
app.add_typer(lease_app, name="lease")


@lease_app.command("show")
def lease_show(
    key: str = typer.Argument(None, help="Task key (default: every lease)."), json_: bool = JSON
) -> None:
    """Show leases with their owner, age and whether the owner is alive.

    Example: orch lease show ORCH-12
    """
    from orch.engine import leases

    rows = leases.show(runtime(), key)
    if json_:
        emit_json(rows)
        return
    if not rows:
        typer.echo("no leases held")
    for r in rows:
        typer.echo(
            f"{r['name']}: {r['actor']} on {r['owner']['host']} pid {r['owner']['pid']}, "
            f"{r['age_s']:.0f}s, {'alive' if r['alive'] else 'DEAD'} ({r['purpose']})"
        )
        for e in r.get("effects", []):
            typer.echo(f"  effect {e['effect']} running, pid {e['pid']}")


@lease_app.command("release")
def lease_release(
    key: str = KEY,
    force: bool = typer.Option(False, "--force", help="Release even if the owner is alive."),
) -> None:
    """Release a task's transition lease (a live owner's needs --force); audited.

    Example: orch lease release ORCH-12 --force
    """
    from orch.engine import leases

    typer.echo(leases.release(runtime(), key, force=force))
