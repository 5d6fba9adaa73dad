"""Setting up: `orch init`, `orch doctor`, `orch demo`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from orch.cli.context import config_path
from orch.cli.options import JSON
from orch.cli.render import emit_json, host_lines, print_findings, store_location

if TYPE_CHECKING:
    from orch.app import demo as demo_mod

app = typer.Typer()


@app.command("init")
def init(
    force: bool = typer.Option(False, "--force", help="Overwrite an existing orch.toml."),
    repo: Path = typer.Option(Path("."), "--repo", help="The git repository orch manages (default: here)."),
) -> None:
    """Write a starter orch.toml here from what the repository says, and create the database.

    The repository's name and default branch are read from git; a directory that is not
    a git repository is refused (exit 2). orch's state directory (.orch/) is added to the
    repository's .git/info/exclude.

    Example: orch init --repo ../app
    """
    import tomli_w

    from orch.app import starter as starter_mod
    from orch.errors import UsageError

    target = Path(config_path() or "orch.toml")
    if target.exists() and not force:
        raise UsageError(f"{target} exists; pass --force to overwrite it")
    facts = starter_mod.inspect_repo(repo)
    text = starter_mod.HEADER + tomli_w.dumps(starter_mod.starter(facts, target.resolve().parent))
    tmp = target.with_suffix(".toml.tmp")
    tmp.write_text(text)
    from orch import config as config_mod

    try:
        config_mod.load(tmp)
    except BaseException:
        tmp.unlink()
        raise
    tmp.replace(target)
    from orch.app.wiring import open_runtime

    cfg = config_mod.load(target)
    open_runtime(cfg).close()
    excluded = starter_mod.exclude_state(facts, cfg.state_dir)
    typer.echo(
        f"wrote {target}: repository {facts.name!r} at {facts.top}, default branch {facts.default_branch}"
    )
    typer.echo(f"database at {store_location(cfg)}")
    if excluded:
        typer.echo(f"added {excluded} to {facts.exclude}")
    typer.echo("next: set [agents.developer] and [agents.reviewer] command in orch.toml, then")
    typer.echo('      orch config check; orch task add "..."; orch status (README.md walks through it)')


@app.command("doctor")
def doctor(json_: bool = JSON) -> None:
    """config check, database integrity, stale leases, dead runners, the last tick.

    Exit 1 when an error is found.

    Example: orch doctor
    """
    from orch import config as config_mod
    from orch.app import checks

    report = checks.doctor(config_mod.load(config_path()))
    if json_:
        emit_json(report)
    else:
        print_findings(report["findings"])
        for line in host_lines(report["hosts"]):
            typer.echo(line)
        typer.echo(
            "ok"
            if report["ok"] and not report["findings"]
            else ("ok, with warnings" if report["ok"] else "problems found")
        )
    raise typer.Exit(0 if report["ok"] else 1)


@app.command("demo")
def demo(
    keep: Path = typer.Option(None, "--keep", help="Build the demo in DIR and leave it there."),
    json_: bool = JSON,
) -> None:
    """Run three tasks through the whole pipeline in a throwaway repository, offline.

    Example: orch demo --keep /tmp/orch-demo
    """
    import shutil
    import tempfile

    from orch.app import demo as demo_mod

    root = keep or Path(tempfile.mkdtemp(prefix="orch-demo-")) / "demo"
    say = (lambda s: None) if json_ else typer.echo
    try:
        result = demo_mod.run(root, say=say)
    finally:
        if keep is None:
            shutil.rmtree(root.parent, ignore_errors=True)
    if json_:
        emit_json(
            {
                "ok": result.ok,
                "seconds": round(result.seconds, 2),
                "tasks": result.tasks,
                "main_log": result.main_log,
                "timeline": result.timeline,
                "kept": str(keep) if keep else None,
            }
        )
    else:
        _print_timeline(result)
        if keep:
            typer.echo(f"kept in {keep}: cd {keep} && {_orch_command()} history DEMO-2")
    raise typer.Exit(0 if result.ok else 1)


def _orch_command() -> str:
    """How to run this orch again: `orch` if that is what PATH finds, else this one's path
    (`./scripts/demo` runs the venv's orch, which is not on PATH)."""
    import shlex
    import shutil
    import sys

    me = Path(sys.argv[0]).resolve() if sys.argv and sys.argv[0] else None
    found = shutil.which("orch")
    if me is not None and me.name == "orch":
        return "orch" if found and Path(found).resolve() == me else shlex.quote(str(me))
    return f"{shlex.quote(sys.executable)} -m orch"


def _print_timeline(result: demo_mod.DemoResult) -> None:
    from rich.console import Console
    from rich.table import Table

    t0 = result.timeline[0]["at"] if result.timeline else 0.0
    table = Table("+s", "task", "actor", "event", "stage", title="orch demo: timeline")
    for r in result.timeline:
        move = f"{r['from'] or ''} -> {r['to']}" if r["to"] else (r["from"] or "")
        if r["event"] == "effect_done":
            move = r["detail"].get("effect", "")
        table.add_row(f"{r['at'] - t0:6.2f}", r["task"], r["actor"], r["event"], move)
    console = Console()
    console.print(table)
    console.print("main: " + " | ".join(reversed(result.main_log)))
    for key, stage in result.tasks.items():
        console.print(f"{key}: {stage}")
    console.print(f"{'all done' if result.ok else 'NOT all done'} in {result.seconds:.1f}s")
