"""`orch event`: tell orch that something happened outside, without HTTP (a stored
webhook body, or a git hook's push)."""

from __future__ import annotations

from pathlib import Path

import typer

from orch.cli.context import runtime
from orch.cli.options import JSON
from orch.cli.render import emit_json

app = typer.Typer(
    name="event",
    help="Tell orch that something happened outside.\n\n"
    "Example: orch event gitea --body push.json --headers push.headers.json",
    no_args_is_help=True,
)


def _inject(source: str, body: Path, headers: Path | None, json_: bool) -> None:
    import json

    from orch.engine import inbox
    from orch.errors import UsageError

    try:
        raw = body.read_bytes()
        hdrs = json.loads(headers.read_text()) if headers else {}
    except (OSError, ValueError) as e:
        raise UsageError(f"cannot read the event: {e}") from None
    if not isinstance(hdrs, dict):
        raise UsageError(f"{headers}: expected a JSON object of headers")
    from orch.webhooks.payloads import MalformedPayload

    rt = runtime(actor=f"event:{source}", create=True)
    try:
        item, new = inbox.put(rt, source, raw, {str(k): str(v) for k, v in hdrs.items()})
    except MalformedPayload as e:  # refused as the relay refuses it (400): nothing stored
        raise UsageError(f"{body}: refused as a {source} delivery: {e}") from None
    counts = inbox.drain(rt)
    from orch.engine import jobs

    jobs.start_now(rt)  # what the event queued starts now, not at the next tick
    found = next((r for r in rt.store.inbox_rows(limit=1000) if r.id == item), None)
    row = found.as_dict() if found else None
    if json_:
        emit_json({"id": item, "duplicate": not new, "drained": counts, "item": row})
    else:
        from orch.cli.render import safe_text

        typer.echo(
            f"inbox {item}{' (duplicate)' if not new else ''}: {row['state'] if row else '?'} "
            + safe_text((row or {}).get("result") or (row or {}).get("error") or "")
        )


@app.command("gitea")
def event_gitea(
    body: Path = typer.Option(..., "--body", help="The raw request body (JSON)."),
    headers: Path = typer.Option(None, "--headers", help="A JSON object of its headers (X-Gitea-Event...)."),
    json_: bool = JSON,
) -> None:
    """Store a Gitea event in the inbox without HTTP (no signature check), then drain.

    Parsed as the relay parses it: the other source's headers, a body that is not a JSON
    object or a string that cannot be stored is refused (exit 2) and nothing is stored.

    Example: orch event gitea --body push.json --headers push.headers.json
    """
    _inject("gitea", body, headers, json_)


@app.command("plane")
def event_plane(
    body: Path = typer.Option(..., "--body", help="The raw request body (JSON)."),
    headers: Path = typer.Option(None, "--headers", help="A JSON object of its headers (X-Plane-Event...)."),
    json_: bool = JSON,
) -> None:
    """Store a Plane event in the inbox without HTTP (no signature check), then drain.

    Parsed as the relay parses it: the other source's headers, a body that is not a JSON
    object or a string that cannot be stored is refused (exit 2) and nothing is stored.

    Example: orch event plane --body issue.json --headers issue.headers.json
    """
    _inject("plane", body, headers, json_)


@app.command("push")
def event_push(
    repo: str = typer.Option(..., "--repo", help="Configured repository name."),
    ref: str = typer.Option(..., "--ref", help="The ref that moved, e.g. refs/heads/orch/ORCH-3."),
    sha: str = typer.Option(None, "--sha", help="Its new head (informational)."),
    json_: bool = JSON,
) -> None:
    """A branch moved (from a git hook): advance the tasks on that branch.

    Example: orch event push --repo app --ref refs/heads/orch/ORCH-3 --sha 1a2b3c
    """
    from orch.engine import events

    rows = events.push(runtime(actor="git-hook"), repo=repo, ref=ref, sha=sha)
    if json_:
        emit_json(rows)
        return
    from orch.cli.render import safe_text

    for r in rows:
        typer.echo(safe_text(f"{r['task']}: {r['outcome']} {' '.join(r.get('moved', []))}".rstrip()))
    if not rows:
        typer.echo(f"no task on {ref}")
