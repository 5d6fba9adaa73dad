"""Queue commands: tick, reap, work, job run, deps, effect settle."""

from __future__ import annotations

import typer

from orch.cli.commands import app, emit_json, runtime
from orch.cli.complete import KEY
from orch.cli.relay import event_app

JSON = typer.Option(False, "--json", help="Print JSON.")


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
    from orch.cli.commands import _state

    raise typer.Exit(machine.tick(_state["config"], json_=json_, no_spawn=no_spawn))


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
    from orch.app import actor_name
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


job_app = typer.Typer(help="Run one job.\n\nExample: orch job run --next", no_args_is_help=True)
app.add_typer(job_app, name="job")


@job_app.command("run")
def job_run(
    job_id: int = typer.Argument(None, help="The job to run (it must be queued)."),
    next_: bool = typer.Option(False, "--next", help="Claim the next job that can start."),
    json_: bool = JSON,
) -> None:
    """Claim one job as this process and run it to its end (what `orch work` starts).

    Exit 1 if the job failed; 2 if the job does not exist or is not queued; 3 if it is
    queued but cannot start now. Its runner then starts what became ready.

    Example: orch job run 42
    """
    from orch.cli import machine
    from orch.cli.commands import _state

    raise typer.Exit(machine.job_run(_state["config"], job_id=job_id, next_=next_, json_=json_))


deps_app = typer.Typer(
    help="Declare and show task dependencies.\n\nExample: orch deps show", no_args_is_help=True
)
app.add_typer(deps_app, name="deps")


@deps_app.command("declare")
def deps_declare(
    key: str = typer.Argument(..., help="The task that waits."),
    on: str = typer.Option(..., "--on", help="The task it waits on."),
) -> None:
    """Make a task wait until another is merged; a cycle is refused and printed.

    Example: orch deps declare ORCH-7 --on ORCH-5
    """
    from orch.engine import deps

    deps.declare(runtime(), key, on)
    typer.echo(f"{key} waits on {on}")


@deps_app.command("remove")
def deps_remove(
    key: str = typer.Argument(..., help="The task that waits."),
    on: str = typer.Option(..., "--on", help="The task it waits on."),
) -> None:
    """Remove a dependency.

    Example: orch deps remove ORCH-7 --on ORCH-5
    """
    from orch.engine import deps

    removed = deps.remove(runtime(), key, on)
    typer.echo(f"{key} {'no longer waits' if removed else 'did not wait'} on {on}")


@deps_app.command("show")
def deps_show(
    key: str = typer.Argument(None, help="One task (default: every task with dependencies)."),
    json_: bool = JSON,
) -> None:
    """Who waits on whom, and why.

    Example: orch deps show ORCH-7 --json
    """
    from orch.engine import deps

    rows = deps.show(runtime(), key)
    if json_:
        emit_json(rows)
        return
    from orch.cli.render import safe_text

    if not rows:
        typer.echo("no dependencies")
    for r in rows:
        line = ", ".join(f"{d['task']} ({d['why']})" for d in r["deps"]) or "nothing"
        typer.echo(safe_text(f"{r['task']} [{r['stage']}] waits on {r['waiting_on']}: {line}"))


effect_app = typer.Typer(
    help="Inspect and settle the effect ledger.\n\nExample: orch effect list ORCH-3", no_args_is_help=True
)
app.add_typer(effect_app, name="effect")


@effect_app.command("list")
def effect_list(key: str = KEY, json_: bool = JSON) -> None:
    """The ledger rows of a task: which effect ran, for which transition, how it ended.

    Example: orch effect list ORCH-3 --json
    """
    from orch.engine import effects

    rows = effects.ledger(runtime(), key)
    if json_:
        emit_json(rows)
        return
    from orch.cli.render import safe_text

    for r in rows:
        proc = r["process"]
        pid = f", pid {proc['pid']} {'running' if proc['alive'] else 'ended'}" if proc else ""
        line = f"{r['transition']} {r['effect']}: {r['state']} (attempts {r['attempts']}{pid})"
        typer.echo(safe_text(line))


@effect_app.command("settle")
def effect_settle(
    key: str = KEY,
    effect: str = typer.Argument(..., help="Effect name (see `orch effect list`)."),
    done: bool = typer.Option(None, "--done/--redo", help="It happened / run it again."),
) -> None:
    """Settle an interrupted effect that has no probe, after checking by hand; then unblock.

    Example: orch effect settle ORCH-3 deploy --done && orch unblock ORCH-3
    """
    from orch.engine import effects
    from orch.errors import UsageError

    if done is None:
        raise UsageError("say --done (it happened) or --redo (run it again)")
    typer.echo(effects.settle(runtime(), key, effect, done=done))


@event_app.command("push")
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


gate_app = typer.Typer(
    help="Report gate inputs from outside (CI).\n\nExample: orch gate report ci --task ORCH-3 "
    "--state success",
    no_args_is_help=True,
)
app.add_typer(gate_app, name="gate")
report_app = typer.Typer(
    help="Report a result.\n\nExample: orch gate report ci --task ORCH-3 --state success",
    no_args_is_help=True,
)
gate_app.add_typer(report_app, name="report")


@report_app.command("ci")
def gate_report_ci(
    task: str = typer.Option(..., "--task", help="Task key."),
    state: str = typer.Option(
        ..., "--state", metavar="[pending|success|failure|error]", help="pending, success, failure or error."
    ),
    sha: str = typer.Option(None, "--sha", help="The commit tested (default: the branch head)."),
    context: str = typer.Option("ci", "--context", help="The status context (one per CI job)."),
    description: str = typer.Option(None, "--description", help="A short note (a URL to the run)."),
    json_: bool = JSON,
) -> None:
    """Record a CI result for a task's head (a CI step runs this), then advance the task.

    Example: orch gate report ci --task ORCH-12 --state success --sha "$GITHUB_SHA"
    """
    from orch.engine import events

    row = events.ci_report(
        runtime(actor="ci"), task, state=state, sha=sha, context=context, description=description
    )
    if json_:
        emit_json(row)
    else:
        typer.echo(
            f"{task}: ci {state} at {row['sha'][:10]}; {row['outcome']} {' '.join(row.get('moved', []))}"
        )


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


@deps_app.command("ingest")
def deps_ingest(
    source: str = typer.Option("plane", "--from", help="Where the relations come from (plane)."),
    json_: bool = JSON,
) -> None:
    """Make the tracker's "blocked by" relations orch dependencies (cycles refused, unknown items reported).

    Example: orch deps ingest --from plane
    """
    from orch.cli.render import terminal_progress
    from orch.engine import deps
    from orch.errors import UsageError

    if source != "plane":
        raise UsageError(f"--from {source!r}: only plane is supported")
    with terminal_progress() as progress:
        report = deps.ingest(runtime(), progress=progress)
    if json_:
        emit_json(report)
        return
    typer.echo(
        f"declared {len(report['declared'])}, already known {report['known']}, "
        f"unknown blockers {len(report['unknown'])}, refused {len(report['refused'])}, "
        f"errors {len(report['errors'])}"
    )
    from orch.cli.render import safe_text

    for line in report["declared"]:
        typer.echo(f"  {safe_text(line)}")
    for u in report["unknown"]:
        typer.echo(
            safe_text(f"  {u['task']} is blocked by item {u['blocked_by_item']}, which has no task: ignored")
        )
    for r in [*report["refused"], *report["errors"]]:
        typer.echo(f"  {safe_text(r)}", err=True)
