"""`orch logs KEY [--follow]`: what a task's agents printed, job by job."""

from __future__ import annotations

import codecs
import sys
import time
from pathlib import Path

import typer

from orch.cli.context import runtime
from orch.cli.options import JSON, KEY
from orch.cli.render import emit_json
from orch.names import inert_lines, inert_text

app = typer.Typer()


class _Copier:
    """Writes a log file to stdout from an offset, as it grows.

    An agent's output is not orch's to trust: unless `raw`, escape sequences and other
    controls are shown as text (`\\x1b[2J`), never acted on by the terminal (a log could
    otherwise clear the screen, retitle the window or hide lines). A UTF-8 character split
    across two reads of a growing file is decoded whole."""

    def __init__(self, path: Path, offset: int, *, raw: bool):
        self.path, self.offset, self.raw = path, offset, raw
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def copy(self) -> None:
        try:
            with self.path.open("rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return
        self.offset += len(data)
        if self.raw:
            sys.stdout.flush()  # the header lines went through the text layer
            sys.stdout.buffer.write(data)
        elif data:
            sys.stdout.write(inert_lines(self._decoder.decode(data)))
        sys.stdout.flush()

    def end(self) -> None:
        if not self.raw:
            sys.stdout.write(inert_lines(self._decoder.decode(b"", final=True)))


@app.command("logs")
def logs(
    key: str = KEY,
    follow: bool = typer.Option(
        False, "--follow", "-f", help="Keep printing the running job's log until it ends."
    ),
    last: bool = typer.Option(False, "--last", help="Only the latest job's log."),
    raw: bool = typer.Option(
        False, "--raw", help="The logs' bytes as the agents wrote them, escape sequences included."
    ),
    json_: bool = JSON,
) -> None:
    """Print the logs of a task's agent jobs, oldest first, each under a header line.

    Control characters an agent printed (escape sequences, carriage returns) are shown as
    text, `\\x1b[31m`, so a log cannot act on your terminal; --raw prints the bytes.
    With --json, the jobs and their log paths.

    Runners started by `orch tick` / `orch work` write their own start-up errors to
    .orch/logs/runners.log; an agent's output is in its job's log, shown here.

    Example: orch logs ORCH-3 --follow
    """
    from orch.engine import status
    from orch.identity import host

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
        reason = f" ({inert_text(j['reason'])})" if j["reason"] else ""
        typer.echo(
            f"== job {j['job']} {j['agent']} at {j['stage']}, attempt {j['attempt']}: {j['state']}{reason} =="
        )
        if j["log"] and j["host"] not in (None, host()):
            # The path names a file on that host: here it is absent, or someone else's.
            typer.echo(f"(its log is on host {inert_text(j['host'])}: {inert_text(j['log'])})")
        elif j["log"]:
            whole = _Copier(Path(j["log"]), 0, raw=raw)
            whole.copy()
            whole.end()
    if not follow:
        return
    latest = jobs[-1]
    path = Path(latest["log"]) if latest["log"] else None
    copier = _Copier(path, path.stat().st_size if path.exists() else 0, raw=raw) if path else None
    try:
        while True:
            current = next((j for j in status.job_logs(rt, key) if j["job"] == latest["job"]), latest)
            if current["log"] and copier is None:
                copier = _Copier(Path(current["log"]), 0, raw=raw)
            if copier is not None:
                copier.copy()
            if current["state"] not in ("queued", "running"):
                if copier is not None:
                    copier.end()
                typer.echo(f"== job {current['job']} ended: {current['state']} ==")
                return
            time.sleep(0.5)
    except KeyboardInterrupt:
        return
