"""`orch job run`: one job, claimed by this process and run to its end."""

from __future__ import annotations

import typer

from orch.cli.context import config_path
from orch.cli.options import JSON

app = typer.Typer(name="job", help="Run one job.\n\nExample: orch job run --next", no_args_is_help=True)


@app.command("run")
def job_run(
    job_id: int = typer.Argument(None, help="The job to run (it must be queued)."),
    next_: bool = typer.Option(False, "--next", help="Claim the next job that can start."),
    json_: bool = JSON,
) -> None:
    """Claim one job as this process and run it to its end (what `orch work` starts).

    Exit 1 if the job failed; 2 if the job does not exist or is not queued; 3 if it is
    queued but cannot start now. Its runner then starts what became ready.

    Example: orch job run 42
    """
    from orch.cli import machine

    raise typer.Exit(machine.job_run(config_path(), job_id=job_id, next_=next_, json_=json_))
