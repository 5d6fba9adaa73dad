"""`orch gate report`: gate inputs reported from outside (a CI step)."""

from __future__ import annotations

import typer

from orch.cli.context import runtime
from orch.cli.options import JSON
from orch.cli.render import emit_json

app = typer.Typer(
    name="gate",
    help="Report gate inputs from outside (CI).\n\nExample: orch gate report ci --task ORCH-3 "
    "--state success",
    no_args_is_help=True,
)
report_app = typer.Typer(
    name="report",
    help="Report a result.\n\nExample: orch gate report ci --task ORCH-3 --state success",
    no_args_is_help=True,
)
app.add_typer(report_app)


@report_app.command("ci")
def gate_report_ci(
    task: str = typer.Option(..., "--task", help="Task key."),
    state: str = typer.Option(
        ..., "--state", metavar="[pending|success|failure|error]", help="pending, success, failure or error."
    ),
    sha: str = typer.Option(None, "--sha", help="The commit tested (default: the branch head)."),
    context: str = typer.Option("ci", "--context", help="The status context (one per CI job)."),
    description: str = typer.Option(None, "--description", help="A short note (a URL to the run)."),
    json_: bool = JSON,
) -> None:
    """Record a CI result for a task's head (a CI step runs this), then advance the task.

    Example: orch gate report ci --task ORCH-12 --state success --sha "$GITHUB_SHA"
    """
    from orch.engine import events

    row = events.ci_report(
        runtime(actor="ci"), task, state=state, sha=sha, context=context, description=description
    )
    if json_:
        emit_json(row)
    else:
        typer.echo(
            f"{task}: ci {state} at {row['sha'][:10]}; {row['outcome']} {' '.join(row.get('moved', []))}"
        )
