"""The fast path for the commands machines run every minute.

`orch advance` runs from cron, CI steps and hooks; importing typer (and its bundled
click) costs ~40 ms, more than everything else the command does. So `main()` first
offers argv to `run()`: if it is exactly one of the forms below, it is handled here with
the same library call and the same rendering as the typer command; anything else
(`--help`, an option this parser does not know, a typo) returns None and typer takes
over, so typer stays the one definition of the interface and its error messages.

    orch [-c PATH | --config PATH] advance KEY [--expect STAGE] [--json]
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


def run(argv: list[str]) -> int | None:
    """Handle argv if it is a fast-path form; None means "let typer do it"."""
    config = None
    args = list(argv)
    if args[:1] in (["-c"], ["--config"]) and len(args) >= 2:
        config, args = args[1], args[2:]
    elif args and args[0].startswith("--config="):
        config, args = args[0][len("--config=") :], args[1:]
    if not args or args[0] != "advance":
        return None
    parsed = _parse_advance(args[1:])
    if parsed is None:
        return None
    from orch.app import open_runtime
    from orch.cli.render import advance_result
    from orch.engine.advance import advance

    rt = open_runtime(config_path=config)
    try:
        result = advance(rt, str(parsed["key"]), expect=parsed["expect"])  # type: ignore[arg-type]
    finally:
        rt.close()
    sys.stdout.flush()
    return advance_result(result, as_json=bool(parsed["json"]))
