"""`orch effect`: the effect ledger of a task, and settling an interrupted effect by hand."""

from __future__ import annotations

import typer

from orch.cli.context import runtime
from orch.cli.options import JSON, KEY
from orch.cli.render import emit_json

app = typer.Typer(
    name="effect",
    help="Inspect and settle the effect ledger.\n\nExample: orch effect list ORCH-3",
    no_args_is_help=True,
)


@app.command("list")
def effect_list(key: str = KEY, json_: bool = JSON) -> None:
    """The ledger rows of a task: which effect ran, for which transition, how it ended.

    Example: orch effect list ORCH-3 --json
    """
    from orch.engine import effects

    rows = effects.ledger(runtime(), key)
    if json_:
        emit_json(rows)
        return
    from orch.cli.render import safe_text

    for r in rows:
        proc = r["process"]
        pid = f", pid {proc['pid']} {'running' if proc['alive'] else 'ended'}" if proc else ""
        line = f"{r['transition']} {r['effect']}: {r['state']} (attempts {r['attempts']}{pid})"
        typer.echo(safe_text(line))


@app.command("settle")
def effect_settle(
    key: str = KEY,
    effect: str = typer.Argument(..., help="Effect name (see `orch effect list`)."),
    done: bool = typer.Option(None, "--done/--redo", help="It happened / run it again."),
    host_gone: bool = typer.Option(
        False,
        "--host-gone",
        help="It ran on another host that is gone for good: settle it from here "
        "(you vouch that nothing of it still runs).",
    ),
) -> None:
    """Settle an interrupted effect that has no probe, after checking by hand; then unblock.

    Example: orch effect settle ORCH-3 deploy --done && orch unblock ORCH-3
    """
    from orch.engine import effects
    from orch.errors import UsageError

    if done is None:
        raise UsageError("say --done (it happened) or --redo (run it again)")
    typer.echo(effects.settle(runtime(), key, effect, done=done, host_gone=host_gone))
