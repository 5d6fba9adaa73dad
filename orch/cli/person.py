"""What a person does to a task: `orch approve`, `reject`, `block`, `unblock`, `retry`, `cancel`."""

from __future__ import annotations

import typer

from orch.cli.context import runtime
from orch.cli.options import KEY, REASON

app = typer.Typer()


def _verdict_cmd(word: str) -> None:
    @app.command(word)
    def cmd(key: str = KEY, reason: str = REASON) -> None:
        from orch.cli.render import safe_text
        from orch.engine import advance, jobs, tasks

        rt = runtime()
        tasks.verdict(rt, key, word, reason=reason)
        typer.echo(safe_text(f"{key}: {word.rstrip('e')}ed at {rt.task(key).stage}"))
        result = advance.advance(rt, key)
        if result.outcome == "advanced":
            typer.echo(safe_text(f"{key}: {result.stage} -> {result.to_stage}"))
            jobs.start_now(rt)
        else:
            typer.echo(safe_text(f"{key}: stays at {result.stage}: {result.message}"))

    cmd.__doc__ = (
        f"{word.capitalize()} the task at its current stage, as a person.\n\n"
        f"At a human gate (analysis) this is the decision; at review it is a verdict on the\n"
        f"current head. The task is then advanced if its gates are green.\n\n"
        f'Example: orch {word} ORCH-3 --reason "looks right"'
    )


_verdict_cmd("approve")
_verdict_cmd("reject")


@app.command("block")
def block(key: str = KEY, reason: str = REASON) -> None:
    """Block a task: no automatic actor moves it until it is unblocked.

    Example: orch block ORCH-3 --reason "waiting for the API contract"
    """
    from orch.engine import tasks

    changed = tasks.block(runtime(), key, reason)
    typer.echo(f"{key}: {'blocked' if changed else 'was blocked already'}")


@app.command("unblock")
def unblock(key: str = KEY, reason: str = REASON) -> None:
    """Unblock a task (also clears an escalation: a person has looked).

    Example: orch unblock ORCH-3
    """
    from orch.engine import jobs, tasks

    rt = runtime()
    changed = tasks.unblock(rt, key, reason)
    typer.echo(f"{key}: {'unblocked' if changed else 'was not blocked'}")
    if changed:
        jobs.start_now(rt)


@app.command("retry")
def retry(key: str = KEY, reason: str = REASON) -> None:
    """Run the stage's agent again after its job used up its attempts (clears the escalation).

    The agent gets a fresh set of [agents.NAME] max_attempts; the reason reaches it as $note.
    Exit 2 if the task is terminal, at a stage with no agent, blocked by a person (unblock
    it instead) or has a job queued or running already.

    Example: orch retry ORCH-3 --reason "fixed the flaky test"
    """
    from orch.cli.render import safe_text
    from orch.engine import jobs, tasks

    rt = runtime()
    job = tasks.retry(rt, key, reason)
    typer.echo(safe_text(f"{key}: job {job.id} ({job.agent}) queued at {job.stage}"))
    jobs.start_now(rt)


@app.command("cancel")
def cancel(
    key: str = KEY,
    reason: str = REASON,
    wait: float = typer.Option(
        10.0, "--wait", help="Seconds to wait for an effect that cannot be stopped half-way (a deploy)."
    ),
) -> None:
    """Cancel a task: it moves to `cancelled` and its worktree is removed.

    Once this exits 0 no effect of the task starts or completes. A merge or deploy in
    flight is waited for (--wait) and reported as done before the cancel; exit 4 if it
    still runs.

    Example: orch cancel ORCH-3 --reason "duplicate of ORCH-2" --wait 60
    """
    from orch.engine import tasks

    done = tasks.cancel(runtime(), key, reason, wait_s=wait)
    typer.echo(f"{key}: {done.task.stage}")
    for line in done.before:
        typer.echo(f"{key}: {line}")
