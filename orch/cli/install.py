"""Install recipes: print what runs orch on a host (systemd, cron, git hook, CI)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import typer

from orch.cli.context import config_path

if TYPE_CHECKING:
    from orch.config import Config

app = typer.Typer(
    name="install",
    help="Print the recipes that run orch on a host, filled in for this config: systemd units, a "
    "crontab line, a git hook, a CI workflow. orch never writes them in place itself.\n\n"
    "Example: orch -c /srv/orch/orch.toml install systemd --print --user orch",
    no_args_is_help=True,
)

PRINT = typer.Option(False, "--print", help="Print the recipe (the only mode).")
REPO = typer.Option(None, "--repo", help="Configured repository (default: the only one).")


def _context(print_: bool) -> tuple[Config, tuple[str, ...]]:
    import sys

    from orch import config as config_mod
    from orch.app import install

    if not print_:
        from orch.errors import UsageError

        raise UsageError("say --print: orch prints the recipe and never installs it itself")
    return config_mod.load(config_path()), install.find_orch(sys.argv[0], executable=sys.executable)


def _warn_no_state(cfg: Any) -> None:
    if not cfg.state_dir.is_dir():
        typer.echo(f"note: {cfg.state_dir} does not exist yet; `orch init` creates it", err=True)


@app.command("systemd")
def install_systemd(
    print_: bool = PRINT,
    user: str = typer.Option(None, "--user", help="The user the units run as (User=)."),
    unit_prefix: str = typer.Option("orch", "--unit-prefix", help="Unit names: PREFIX-tick.service, ..."),
) -> None:
    """Print a tick service, its every-minute timer and a relay service, for /etc/systemd/system.

    Example: orch -c /srv/orch/orch.toml install systemd --print --user orch
    """
    from orch.app import install

    cfg, orch = _context(print_)
    _warn_no_state(cfg)
    typer.echo(install.systemd(cfg, orch=orch, user=user, prefix=unit_prefix), nl=False)


@app.command("cron")
def install_cron(print_: bool = PRINT) -> None:
    """Print a crontab line that runs `orch tick` every minute under flock, logging to the state dir.

    Example: (crontab -l; orch -c /srv/orch/orch.toml install cron --print) | crontab -
    """
    from orch.app import install

    cfg, orch = _context(print_)
    _warn_no_state(cfg)
    typer.echo(install.cron(cfg, orch=orch), nl=False)


@app.command("git-hook")
def install_git_hook(print_: bool = PRINT, repo: str = REPO) -> None:
    """Print a post-receive hook that runs `orch event push` for every branch a push moved.

    Example: orch install git-hook --print --repo app > /srv/git/app.git/hooks/post-receive
    """
    from orch.app import install

    cfg, orch = _context(print_)
    typer.echo(install.git_hook(cfg, orch=orch, repo=repo), nl=False)


@app.command("ci")
def install_ci(print_: bool = PRINT, repo: str = REPO) -> None:
    """Print a Gitea Actions workflow: test orch/<KEY> branches, `orch gate report ci`, advance.

    Example: orch install ci --print --repo app > .gitea/workflows/orch.yaml
    """
    from orch.app import install

    cfg, orch = _context(print_)
    typer.echo(install.ci_workflow(cfg, orch=orch, repo=repo), nl=False)
