"""The typer app: the one definition of orch's command-line interface.

Only typer is imported at module level; rich, sqlite_utils and the adapters are
imported inside the commands that use them (start-up runs every minute from cron).
"""

from __future__ import annotations

import sys
from typing import Any

import typer

from orch.cli.render import emit_json

app = typer.Typer(
    name="orch",
    help="Move tracker issues through analysis, development, review, merge, deploy and "
    "monitoring, with agents as jobs and all coordination in SQLite.\n\n"
    "Example: orch demo",
    no_args_is_help=True,
    add_completion=True,
    # Plain help: rich-formatted help costs ~100 ms of imports on every `--help`.
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

_state: dict[str, Any] = {"config": None}


def _version(value: bool) -> None:
    if value:
        from orch import __version__

        typer.echo(f"orch {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    config: str = typer.Option(
        None,
        "--config",
        "-c",
        envvar="ORCH_CONFIG",
        help="Path to orch.toml (default: ./orch.toml or the nearest parent's, then $ORCH_HOME).",
    ),
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
    log_format: str = typer.Option(
        None,
        "--log-format",
        envvar="ORCH_LOG_FORMAT",
        metavar="[text|json]",
        help="Decision log lines as text or json (default text).",
    ),
    log_level: str = typer.Option(
        None,
        "--log-level",
        envvar="ORCH_LOG_LEVEL",
        metavar="[debug|info|warning|error]",
        help="debug, info, warning (default) or error.",
    ),
    log_file: str = typer.Option(
        None,
        "--log-file",
        envvar="ORCH_LOG_FILE",
        help="Append decision logs here instead of stderr (its directory is created).",
    ),
) -> None:
    _state["config"] = config
    from orch import log

    try:
        log.configure(fmt=log_format, level=log_level, path=log_file)
    except ValueError as e:
        raise typer.BadParameter(str(e)) from None


def runtime(actor: str | None = None, *, create: bool = False) -> Any:
    """This command's runtime; closed (and its outbox flushed) when the process exits.

    Reading commands never create the database: on a missing one they fail naming the
    path and `orch init` (an unmounted volume must not fork the state in two). Only the
    writes that can come first (`init`, `task add`, `tick`, `event`, `relay serve`)
    pass `create=True`."""
    import atexit

    from orch.app import open_runtime

    rt = open_runtime(config_path=_state["config"], actor=actor, create=create)
    atexit.register(rt.close)
    return rt


def fail(message: str, code: int) -> None:
    sys.stderr.write(f"orch: {message}\n")
    raise typer.Exit(code)


# Register the command modules (they only import typer at module level).
from orch.cli import install, logs, pipeline, queue, relay, setup, status, tasks  # noqa: E402, F401

__all__ = ["app", "emit_json", "fail", "runtime"]
