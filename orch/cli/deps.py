"""`orch deps`: declare, remove, show and ingest task dependencies."""

from __future__ import annotations

import typer

from orch.cli.context import runtime
from orch.cli.options import JSON
from orch.cli.render import emit_json

app = typer.Typer(
    name="deps", help="Declare and show task dependencies.\n\nExample: orch deps show", no_args_is_help=True
)


@app.command("declare")
def deps_declare(
    key: str = typer.Argument(..., help="The task that waits."),
    on: str = typer.Option(..., "--on", help="The task it waits on."),
) -> None:
    """Make a task wait until another is merged; a cycle is refused and printed.

    Example: orch deps declare ORCH-7 --on ORCH-5
    """
    from orch.engine import deps

    deps.declare(runtime(), key, on)
    typer.echo(f"{key} waits on {on}")


@app.command("remove")
def deps_remove(
    key: str = typer.Argument(..., help="The task that waits."),
    on: str = typer.Option(..., "--on", help="The task it waits on."),
) -> None:
    """Remove a dependency.

    Example: orch deps remove ORCH-7 --on ORCH-5
    """
    from orch.engine import deps

    removed = deps.remove(runtime(), key, on)
    typer.echo(f"{key} {'no longer waits' if removed else 'did not wait'} on {on}")


@app.command("show")
def deps_show(
    key: str = typer.Argument(None, help="One task (default: every task with dependencies)."),
    json_: bool = JSON,
) -> None:
    """Who waits on whom, and why.

    Example: orch deps show ORCH-7 --json
    """
    from orch.engine import deps

    rows = deps.show(runtime(), key)
    if json_:
        emit_json(rows)
        return
    from orch.cli.render import safe_text

    if not rows:
        typer.echo("no dependencies")
    for r in rows:
        line = ", ".join(f"{d['task']} ({d['why']})" for d in r["deps"]) or "nothing"
        typer.echo(safe_text(f"{r['task']} [{r['stage']}] waits on {r['waiting_on']}: {line}"))


@app.command("ingest")
def deps_ingest(
    source: str = typer.Option("plane", "--from", help="Where the relations come from (plane)."),
    json_: bool = JSON,
) -> None:
    """Make the tracker's "blocked by" relations orch dependencies (cycles refused, unknown items reported).

    Example: orch deps ingest --from plane
    """
    from orch.cli.render import terminal_progress
    from orch.engine import deps
    from orch.errors import UsageError

    if source != "plane":
        raise UsageError(f"--from {source!r}: only plane is supported")
    with terminal_progress() as progress:
        report = deps.ingest(runtime(), progress=progress)
    if json_:
        emit_json(report)
        return
    typer.echo(
        f"declared {len(report['declared'])}, already known {report['known']}, "
        f"unknown blockers {len(report['unknown'])}, refused {len(report['refused'])}, "
        f"errors {len(report['errors'])}"
    )
    from orch.cli.render import safe_text

    for line in report["declared"]:
        typer.echo(f"  {safe_text(line)}")
    for u in report["unknown"]:
        typer.echo(
            safe_text(f"  {u['task']} is blocked by item {u['blocked_by_item']}, which has no task: ignored")
        )
    for r in [*report["refused"], *report["errors"]]:
        typer.echo(f"  {safe_text(r)}", err=True)
