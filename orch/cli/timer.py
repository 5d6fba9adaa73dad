"""What the timer runs: `orch tick`, and the parts of it that also run alone
(`orch work`, `orch reap`, `orch reconcile`)."""

from __future__ import annotations

import typer

from orch.cli.context import config_path, runtime
from orch.cli.options import JSON
from orch.cli.render import emit_json

app = typer.Typer()


@app.command("tick")
def tick(
    json_: bool = JSON,
    no_spawn: bool = typer.Option(False, "--no-spawn", help="Do everything but start job runners."),
) -> None:
    """What the timer runs every minute: reap, dependencies, sweep, start queued jobs.

    Returns quickly; it never waits for an agent. Safe to run twice at once.

    Example: * * * * * cd /srv/app && orch tick >> .orch/tick.log 2>&1
    """
    from orch.cli import machine

    raise typer.Exit(machine.tick(config_path(), json_=json_, no_spawn=no_spawn))


@app.command("work")
def work(
    max_jobs: int = typer.Option(None, "--max", min=1, help="Start (or run) at most this many jobs."),
    inline: bool = typer.Option(False, "--inline", help="Run the jobs here, one after another, and wait."),
    json_: bool = JSON,
) -> None:
    """Start queued jobs as detached runners, up to [work] max_concurrency.

    With --inline, run them in this process one after another instead (and wait);
    exit 1 if a job failed, timed out or stalled.

    Example: orch work --inline --max 1
    """
    from orch.app.wiring import actor_name
    from orch.engine import jobs

    rt = runtime(actor=actor_name("work"))
    if not inline:
        pids = jobs.spawn(rt, max_new=max_jobs)
        if json_:
            emit_json({"started": pids})
        else:
            typer.echo(f"started {len(pids)} runner(s)" + (f": pids {pids}" if pids else ""))
        return
    reports = jobs.work(rt, max_jobs=max_jobs)
    failed = any(r.state in jobs.FAILED for r in reports)
    if json_:
        emit_json([r._asdict() for r in reports])
        raise typer.Exit(1 if failed else 0)
    from orch.cli.render import safe_text

    for r in reports:
        typer.echo(safe_text(f"job {r.job} {r.agent} for {r.task}: {r.state} ({r.reason})"))
    if not reports:
        typer.echo("no job can start now")
    raise typer.Exit(1 if failed else 0)


@app.command("reap")
def reap(json_: bool = JSON) -> None:
    """Reclaim jobs and leases of dead owners; kill jobs and effect commands past the ceiling.

    Example: orch reap --json
    """
    from orch.engine.reaper import reap as do_reap

    report = do_reap(runtime(actor="reaper"))
    if json_:
        emit_json(report.as_dict())
        return
    typer.echo(
        f"reaped jobs: {report.reaped or 'none'}; released leases: {report.leases or 'none'}; "
        f"killed effects: {report.effects or 'none'}"
    )
    for e in report.errors:
        typer.echo(f"error: {e}", err=True)


@app.command("reconcile")
def reconcile(
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Say what would be done and why, task by task; change nothing."
    ),
    json_: bool = JSON,
) -> None:
    """Replay what lost webhooks missed: advance stuck tasks whose gates are green, replay the tracker.

    Also part of `orch tick`. Exit 0 unless the run itself could not happen.

    Example: orch reconcile --dry-run
    """
    from orch.engine.reconcile import reconcile as do_reconcile

    report = do_reconcile(runtime(actor="reconciler"), dry_run=dry_run)
    if json_:
        emit_json(report)
        return
    if report.get("disabled"):
        typer.echo(f"reconcile is off ({report['disabled']})")
        return
    c = report["counters"]
    skipped = ", ".join(f"{k} {v}" for k, v in c["skipped"].items() if v) or "none"
    verb = "would advance" if dry_run else "advanced"
    typer.echo(
        f"reconcile: {verb} {c['would_advance'] if dry_run else c['advanced']}, red {c['red']}, "
        f"replayed {c['replayed']}, deduped {c['deduped']}, deferred {c['deferred_lease']}, "
        f"skipped: {skipped}; errors {c['errors']} ({report.get('seconds', 0)}s)"
    )
    from orch.cli.render import safe_text

    for row in report["tasks"]:
        typer.echo("  " + safe_text(" ".join(f"{k}={v}" for k, v in row.items())))
    for e in report["errors"]:
        typer.echo(f"  error: {safe_text(e)}", err=True)
