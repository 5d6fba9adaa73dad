"""Webhooks: the relay, injecting events without HTTP, the inbox."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from orch.cli.commands import _state, app, emit_json, runtime

if TYPE_CHECKING:
    from orch.config import Config

JSON = typer.Option(False, "--json", help="Print JSON.")

relay_app = typer.Typer(
    help="The webhook relay.\n\nExample: orch relay serve --port 8787", no_args_is_help=True
)
app.add_typer(relay_app, name="relay")


@relay_app.command("serve")
def relay_serve(
    host: str = typer.Option(None, "--host", help="Address to listen on (default [relay] host, 127.0.0.1)."),
    port: int = typer.Option(None, "--port", help="Port (default [relay] port, 8787)."),
) -> None:
    """Serve POST /hooks/plane and /hooks/gitea: verify, store in the inbox, answer 202, drain.

    Secrets come from the variables named by [relay] plane_secret_env and gitea_secret_env.

    Example: ORCH_GITEA_WEBHOOK_SECRET=... orch relay serve --host 127.0.0.1 --port 8787
    """
    from orch import config as config_mod
    from orch.app.relay import Relay

    cfg = config_mod.load(_state["config"])
    _check_address(cfg, host, port)
    relay = Relay(cfg, host=host, port=port)
    typer.echo(f"orch relay listening on {relay.url}", err=True)
    with contextlib.suppress(KeyboardInterrupt):  # SIGTERM and SIGINT stop the server cleanly
        relay.serve_forever()


def _check_address(cfg: Config, host: str | None, port: int | None) -> None:
    """An unresolvable host or a port out of range: exit 2 naming the key, not a traceback."""
    from orch.app.checks import relay_address_problem
    from orch.errors import ConfigError

    h = host if host is not None else cfg.relay_host
    p = port if port is not None else cfg.relay_port
    problem = relay_address_problem(h, p)
    if problem:
        if "port" in problem.split(" ", 1)[0]:
            key = "--port" if port is not None else "[relay] port"
        else:
            key = "--host" if host is not None else "[relay] host"
        raise ConfigError(f"{cfg.source or 'embedded defaults'}: {key}: {problem}")


event_app = typer.Typer(
    help="Tell orch that something happened outside.\n\n"
    "Example: orch event gitea --body push.json --headers push.headers.json",
    no_args_is_help=True,
)
app.add_typer(event_app, name="event")


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
    from orch.relay.payloads import MalformedPayload

    rt = runtime(actor=f"event:{source}", create=True)
    try:
        item, new = inbox.put(rt, source, raw, {str(k): str(v) for k, v in hdrs.items()})
    except MalformedPayload as e:  # refused as the relay refuses it (400): nothing stored
        raise UsageError(f"{body}: refused as a {source} delivery: {e}") from None
    counts = inbox.drain(rt)
    from orch.engine import jobs

    jobs.start_now(rt)  # what the event queued starts now, not at the next tick
    row = next((r for r in rt.store.inbox_rows(limit=1000) if r["id"] == item), None)
    if json_:
        emit_json({"id": item, "duplicate": not new, "drained": counts, "item": row})
    else:
        from orch.cli.render import safe_text

        typer.echo(
            f"inbox {item}{' (duplicate)' if not new else ''}: {row['state'] if row else '?'} "
            + safe_text((row or {}).get("result") or (row or {}).get("error") or "")
        )


@event_app.command("gitea")
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


@event_app.command("plane")
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


inbox_app = typer.Typer(
    help="Stored webhook deliveries.\n\nExample: orch inbox list --state parked", no_args_is_help=True
)
app.add_typer(inbox_app, name="inbox")


@inbox_app.command("list")
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


@inbox_app.command("retry")
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


@inbox_app.command("drop")
def inbox_drop(item: int = typer.Argument(..., help="Inbox id.")) -> None:
    """Drop a delivery for good (it stays listed as dropped).

    Example: orch inbox drop 42
    """
    from orch.errors import UsageError

    rt = runtime()
    if not rt.store.inbox_set(item, state="dropped", now=rt.now()):
        raise UsageError(f"no inbox item {item}")
    typer.echo(f"inbox {item}: dropped")
