"""The commands machines run every minute (`advance`, `tick`, `job run`): one body each.

Both front doors call these functions: the typer commands (orch.cli.pipeline,
orch.cli.timer, orch.cli.job) after typer has parsed argv, and the fast path
(orch.cli.fast) after its own parser has. So the two doors differ only in parsing, which
tests/test_cli_parity.py checks form by form. A function opens the runtime, makes one
library call, closes the runtime (sending what the call queued in the outbox), renders
the result and returns the exit code.

Nothing heavy at module level: the fast path imports this module on every cron run.
"""

from __future__ import annotations

import sys


def advance(config: str | None, *, key: str, expect: str | None, json_: bool) -> int:
    """`orch advance KEY [--expect STAGE] [--json]`."""
    from orch.app.wiring import open_runtime
    from orch.cli.render import advance_result
    from orch.engine.advance import advance as do_advance

    rt = open_runtime(config_path=config, create=False)
    try:
        result = do_advance(rt, key, expect=expect)
    finally:
        rt.close()
    sys.stdout.flush()
    return advance_result(result, as_json=json_)


def tick(config: str | None, *, json_: bool, no_spawn: bool) -> int:
    """`orch tick [--json] [--no-spawn]`; a progress bar only when stderr is a terminal."""
    from orch.app.wiring import open_runtime
    from orch.cli.render import terminal_progress, tick_report
    from orch.engine.tick import tick as do_tick

    rt = open_runtime(config_path=config, actor="tick", create=True)
    try:
        with terminal_progress() as progress:
            report = do_tick(rt, spawn=not no_spawn, progress=progress)
    finally:
        rt.close()
    return tick_report(report, as_json=json_)


def job_run(config: str | None, *, job_id: int | None, next_: bool, json_: bool) -> int:
    """`orch job run (ID | --next) [--json]`."""
    if (job_id is None) == (not next_):
        from orch.errors import UsageError

        raise UsageError("give a job id or --next (not both)")
    from orch.app.wiring import open_runtime
    from orch.cli.render import job_report
    from orch.engine.jobs import run_one

    rt = open_runtime(config_path=config, actor="runner", create=False)
    try:
        report = run_one(rt, job_id)
    finally:
        rt.close()
    return job_report(report, as_json=json_)
