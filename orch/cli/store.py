"""`orch store`: move the state between stores."""

from __future__ import annotations

import typer

from orch.cli.context import config_path
from orch.cli.options import JSON
from orch.cli.render import emit_json

app = typer.Typer(
    name="store",
    help="Move orch's state between stores.\n\nExample: orch store copy --to postgresql://orch@db:5432/orch",
    no_args_is_help=True,
)


@app.command("copy")
def store_copy(
    to: str = typer.Option(..., "--to", help="postgresql:// URL of an empty database (no password in it)."),
    json_: bool = JSON,
) -> None:
    """Copy this orch's state into an empty PostgreSQL database, then compare the row
    counts of every table and check the copy's integrity; exit 1 if they differ.

    The password comes from the variable [store] password_env names (PGPASSWORD).
    Then set [store] url to the same URL.

    Example: PGPASSWORD=... orch store copy --to postgresql://orch@db.internal:5432/orch
    """
    from orch import config as config_mod
    from orch.app.store_copy import copy

    report = copy(config_mod.load(config_path()), to=to)
    if json_:
        emit_json(report)
    else:
        for table, n in report["tables"].items():
            typer.echo(f"{table}: {n['copied']} of {n['source']} rows")
        typer.echo(f"integrity: {report['integrity']}")
        typer.echo(f"{'copied' if report['ok'] else 'NOT COPIED WHOLE'} to {report['to']}")
    if not report["ok"]:
        raise typer.Exit(1)
