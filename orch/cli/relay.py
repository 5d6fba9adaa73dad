"""`orch relay serve`: the webhook relay."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

import typer

from orch.cli.context import config_path

if TYPE_CHECKING:
    from orch.config import Config

app = typer.Typer(
    name="relay", help="The webhook relay.\n\nExample: orch relay serve --port 8787", no_args_is_help=True
)


@app.command("serve")
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

    cfg = config_mod.load(config_path())
    _check_address(cfg, host, port)
    relay = Relay(cfg, host=host, port=port)
    typer.echo(f"orch relay listening on {relay.url}", err=True)
    with contextlib.suppress(KeyboardInterrupt):  # SIGTERM and SIGINT stop the server cleanly
        relay.serve_forever()


def _check_address(cfg: Config, host: str | None, port: int | None) -> None:
    """An unresolvable host or a port out of range: exit 2 naming the key, not a traceback."""
    from orch.app.checks import relay_address_problem
    from orch.errors import ConfigError

    h = host if host is not None else cfg.relay.host
    p = port if port is not None else cfg.relay.port
    problem = relay_address_problem(h, p)
    if problem:
        if "port" in problem.split(" ", 1)[0]:
            key = "--port" if port is not None else "[relay] port"
        else:
            key = "--host" if host is not None else "[relay] host"
        raise ConfigError(f"{cfg.source or 'embedded defaults'}: {key}: {problem}")
