"""`orch logs KEY [--follow]`: what a task's agents printed, job by job."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import typer

from orch.cli.context import runtime
from orch.cli.options import JSON, KEY
from orch.cli.render import emit_json

app = typer.Typer()


def _copy(path: Path, offset: int) -> int:
    """Write the file from `offset` to stdout; returns the new offset."""
    try:
        with path.open("rb") as f:
            f.seek(offset)
            data = f.read()
    except FileNotFoundError:
        return offset
    if data:
        sys.stdout.write(data.decode("utf-8", errors="replace"))
        sys.stdout.flush()
    return offset + len(data)


@app.command("logs")
def logs(
    key: str = KEY,
    follow: bool = typer.Option(
        False, "--follow", "-f", help="Keep printing the running job's log until it ends."
    ),
    last: bool = typer.Option(False, "--last", help="Only the latest job's log."),
    json_: bool = JSON,
) -> None:
    """Print the logs of a task's agent jobs, oldest first, each under a header line.

    With --json, the jobs and their log paths.

    Runners started by `orch tick` / `orch work` write their own start-up errors to
    .orch/logs/runners.log; an agent's output is in its job's log, shown here.

    Example: orch logs ORCH-3 --follow
    """
    from orch.engine import status

    rt = runtime()
    jobs = status.job_logs(rt, key)
    if json_:
        emit_json(jobs)
        return
    if last:
        jobs = jobs[-1:]
    if not jobs:
        typer.echo(f"{key}: no job yet")
        return
    for j in jobs:
        typer.echo(
            f"== job {j['job']} {j['agent']} at {j['stage']}, attempt {j['attempt']}: {j['state']}"
            + (f" ({j['reason']})" if j["reason"] else "")
            + " =="
        )
        if j["log"]:
            _copy(Path(j["log"]), 0)
    if not follow:
        return
    latest = jobs[-1]
    path = Path(latest["log"]) if latest["log"] else None
    offset = path.stat().st_size if path and path.exists() else 0
    try:
        while True:
            current = next((j for j in status.job_logs(rt, key) if j["job"] == latest["job"]), latest)
            if current["log"] and path is None:
                path, offset = Path(current["log"]), 0
            if path is not None:
                offset = _copy(path, offset)
            if current["state"] not in ("queued", "running"):
                typer.echo(f"== job {current['job']} ended: {current['state']} ==")
                return
            time.sleep(0.5)
    except KeyboardInterrupt:
        return
