"""The fast path for the commands machines run every minute.

`orch advance` runs from cron, CI steps and hooks; importing typer (and its bundled
click) costs ~40 ms, more than everything else the command does. So `main()` first
offers argv to `run()`: if it is exactly one of the forms below, it is handled here with
the same library call and the same rendering as the typer command; anything else
(`--help`, an option this parser does not know, a typo) returns None and typer takes
over, so typer stays the one definition of the interface and its error messages.

    orch [-c PATH | --config PATH] advance KEY [--expect STAGE] [--json]
    orch [-c PATH | --config PATH] tick [--json]
    orch [-c PATH | --config PATH] job run (--next | ID) [--json]

A test runs each form both ways and compares exit codes and output.
"""

from __future__ import annotations

import sys


def _parse_advance(args: list[str]) -> dict[str, object] | None:
    out: dict[str, object] = {"key": None, "expect": None, "json": False}
    i = 0
    while i < len(args):
        a = args[i]
        if a == "--json":
            out["json"] = True
        elif a == "--expect" and i + 1 < len(args) and not args[i + 1].startswith("-"):
            out["expect"] = args[i + 1]
            i += 1
        elif a.startswith("--expect=") and len(a) > len("--expect="):
            out["expect"] = a[len("--expect=") :]
        elif not a.startswith("-") and out["key"] is None:
            out["key"] = a
        else:
            return None
        i += 1
    return out if out["key"] else None


def _flags(args: list[str], allowed: set[str]) -> set[str] | None:
    return set(args) if set(args) <= allowed and len(set(args)) == len(args) else None


def run(argv: list[str]) -> int | None:
    """Handle argv if it is a fast-path form; None means "let typer do it"."""
    config = None
    args = list(argv)
    if args[:1] in (["-c"], ["--config"]) and len(args) >= 2:
        config, args = args[1], args[2:]
    elif args and args[0].startswith("--config="):
        config, args = args[0][len("--config=") :], args[1:]
    if not args:
        return None
    if args[0] == "advance":
        parsed = _parse_advance(args[1:])
        if parsed is None:
            return None
        return _advance(config, str(parsed["key"]), parsed["expect"], bool(parsed["json"]))  # type: ignore[arg-type]
    if args[0] == "tick":
        flags = _flags(args[1:], {"--json"})
        if flags is None:
            return None
        return _tick(config, "--json" in flags)
    if args[:2] == ["job", "run"]:
        rest = args[2:]
        job_id: int | None = None
        if "--next" in rest:
            rest = [a for a in rest if a != "--next"]
        elif rest and rest[0].isdigit():
            job_id, rest = int(rest[0]), rest[1:]
        else:
            return None
        flags = _flags(rest, {"--json"})
        if flags is None:
            return None
        return _job(config, job_id, "--json" in flags)
    return None


def _advance(config: str | None, key: str, expect: str | None, as_json: bool) -> int:
    from orch.app import open_runtime
    from orch.cli.render import advance_result
    from orch.engine.advance import advance

    rt = open_runtime(config_path=config, create=False)
    try:
        result = advance(rt, key, expect=expect)
    finally:
        rt.close()
    sys.stdout.flush()
    return advance_result(result, as_json=as_json)


def _tick(config: str | None, as_json: bool) -> int:
    from orch.app import open_runtime
    from orch.cli.render import tick_report
    from orch.engine.tick import tick

    rt = open_runtime(config_path=config, actor="tick", create=True)
    try:
        report = tick(rt)
    finally:
        rt.close()
    return tick_report(report, as_json=as_json)


def _job(config: str | None, job_id: int | None, as_json: bool) -> int:
    from orch.app import open_runtime
    from orch.cli.render import job_report
    from orch.engine.jobs import run_one

    rt = open_runtime(config_path=config, actor="runner", create=False)
    try:
        report = run_one(rt, job_id)
    finally:
        rt.close()
    return job_report(report, as_json=as_json)
