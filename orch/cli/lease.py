"""`orch lease`: show and release leases."""

from __future__ import annotations

import typer

from orch.cli.context import runtime
from orch.cli.options import JSON, KEY
from orch.cli.render import emit_json

app = typer.Typer(
    name="lease", help="Show and release leases.\n\nExample: orch lease show", no_args_is_help=True
)


@app.command("show")
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


@app.command("release")
def lease_release(
    key: str = KEY,
    force: bool = typer.Option(False, "--force", help="Release even if the owner is alive."),
) -> None:
    """Release a task's transition lease (a live owner's needs --force); audited.

    Example: orch lease release ORCH-12 --force
    """
    from orch.engine import leases

    typer.echo(leases.release(runtime(), key, force=force))
