"""The typer app: the root of orch's command-line interface, and where each command
group is mounted.

Each module below owns one command group (a typer sub-app, named or merged into the
root) and imports none of the others nor this one; they share orch.cli.context (the
root's --config, the runtime), orch.cli.options (--json, the task key) and
orch.cli.render. Only typer is imported at module level anywhere here; rich,
sqlite_utils and the adapters are imported inside the commands that use them (start-up
runs every minute from cron).

    setup     init, doctor, demo              task      task add|list|show
    config    config show|check               person    approve, reject, block, unblock,
    pipeline  advance, history                          retry, cancel
    timer     tick, work, reap, reconcile     job       job run
    views     status, queue, explain          logs      logs
    lease     lease show|release              deps      deps declare|remove|show|ingest
    effect    effect list|settle              gate      gate report ci
    event     event gitea|plane|push          inbox     inbox list|retry|drop
    relay     relay serve                     install   install systemd|cron|git-hook|ci
    store     store copy
"""

from __future__ import annotations

import typer

from orch.cli import (
    config,
    deps,
    effect,
    event,
    gate,
    inbox,
    install,
    job,
    lease,
    logs,
    person,
    pipeline,
    relay,
    setup,
    store,
    task,
    timer,
    views,
)
from orch.cli.context import set_config_path

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

# The order of `orch --help`: setting up, the task's path, the machines, then the views.
for group in (setup, config, task, person, pipeline, timer, job, deps, effect, gate, event, relay, inbox):
    app.add_typer(group.app)
for group in (views, logs, lease, install, store):
    app.add_typer(group.app)


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
    set_config_path(config)
    from orch import log

    try:
        log.configure(fmt=log_format, level=log_level, path=log_file)
    except ValueError as e:
        raise typer.BadParameter(str(e)) from None


__all__ = ["app"]
