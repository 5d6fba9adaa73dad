"""`orch inbox`: stored webhook deliveries: list, retry, drop."""

from __future__ import annotations

import typer

from orch.cli.context import runtime
from orch.cli.options import JSON
from orch.cli.render import emit_json

app = typer.Typer(
    name="inbox",
    help="Stored webhook deliveries.\n\nExample: orch inbox list --state parked",
    no_args_is_help=True,
)


@app.command("list")
def inbox_list(
    state: list[str] = typer.Option(
        None,
        "--state",
        metavar="[pending|done|failed|parked|dropped]",
        help="pending, done, failed, parked, dropped (repeatable).",
    ),
    limit: int = typer.Option(50, "--limit", min=1),
    json_: bool = JSON,
) -> None:
    """Deliveries, newest first, with their state, attempts, error and who holds a claim.

    A delivery being processed shows "claimed by HOST/pid N"; if that process is gone
    ("dead"), the next drain takes the delivery at once.

    Example: orch inbox list --state parked --json
    """
    from orch.engine import inbox

    rows = inbox.listing(runtime(), states=tuple(state) if state else None, limit=limit)
    if json_:
        emit_json(rows)
        return
    from orch.cli.render import safe_text

    for r in rows:
        held = r["claimed_by"]
        claim = (
            f"claimed by {held['host']}/pid {held['pid']} ({'alive' if held['alive'] else 'dead'}) "
            if held
            else ""
        )
        typer.echo(
            safe_text(
                f"{r['id']:>6} {r['source']:<5} {r['event']:<14} {r['state']:<7} x{r['attempts']} "
                f"{claim}{r['error'] or r['result'] or ''}"
            )
        )
    if not rows:
        typer.echo("inbox empty")


@app.command("retry")
def inbox_retry(item: int = typer.Argument(..., help="Inbox id.")) -> None:
    """Put a failed or parked delivery back in line, then drain.

    Example: orch inbox retry 42
    """
    from orch.engine import inbox
    from orch.errors import UsageError

    rt = runtime()
    if not rt.store.inbox_set(item, state="pending", now=rt.now()):
        raise UsageError(f"no inbox item {item}")
    typer.echo(f"inbox {item}: pending; drained {inbox.drain(rt)}")


@app.command("drop")
def inbox_drop(item: int = typer.Argument(..., help="Inbox id.")) -> None:
    """Drop a delivery for good (it stays listed as dropped).

    Example: orch inbox drop 42
    """
    from orch.errors import UsageError

    rt = runtime()
    if not rt.store.inbox_set(item, state="dropped", now=rt.now()):
        raise UsageError(f"no inbox item {item}")
    typer.echo(f"inbox {item}: dropped")
