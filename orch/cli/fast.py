"""The fast path for the commands machines run every minute.

`orch advance` runs from cron, CI steps and hooks; importing typer (and its bundled
click) costs ~40 ms, more than everything else the command does. So `main()` first
offers argv to `run()`: if `parse()` recognises exactly one of the forms below, the
command's one body in orch.cli.machine runs (the same function the typer command
calls); anything else (`--help`, an option this parser does not know, a repeated flag,
a typo) parses to None and typer takes over, so typer stays the one definition of the
interface and of its error messages.

    orch [-c PATH | --config PATH | --config=PATH] advance KEY [--expect STAGE] [--json]
    orch [-c PATH | --config PATH | --config=PATH] tick [--json] [--no-spawn]
    orch [-c PATH | --config PATH | --config=PATH] job run (--next | ID) [--json]

Options may come in any order, before or after the positional argument, as click
allows. tests/test_cli_parity.py checks `parse(argv)` against typer's own parsing, form
by form and on seeded random argv, and runs each form both ways as real processes
(`ORCH_TEST_NO_FAST_PATH=1` sends everything to typer) comparing output, exit code and
the resulting state.
"""

from __future__ import annotations

import os
from typing import Any

# The commands, each with its flags and its options that take a value, named as the
# typer command's parameters (and orch.cli.machine's keyword arguments).
_FLAGS: dict[tuple[str, ...], dict[str, str]] = {
    ("advance",): {"--json": "json_"},
    ("tick",): {"--json": "json_", "--no-spawn": "no_spawn"},
    ("job", "run"): {"--json": "json_", "--next": "next_"},
}
_VALUES: dict[tuple[str, ...], dict[str, str]] = {("advance",): {"--expect": "expect"}}
_POSITIONAL: dict[tuple[str, ...], str] = {("advance",): "key", ("job", "run"): "job_id"}
_FUNCTIONS = {("advance",): "advance", ("tick",): "tick", ("job", "run"): "job_run"}

# Set by the tests that run each form through typer as well.
DISABLE_VARIABLE = "ORCH_TEST_NO_FAST_PATH"


class Call:
    """A recognised form: the command path, the root's --config and the command's parameters.

    A plain class: a NamedTuple is built through exec at import, ~1 ms on every cron run."""

    __slots__ = ("command", "config", "params")

    def __init__(self, command: tuple[str, ...], config: str | None, params: dict[str, Any]):
        self.command, self.config, self.params = command, config, params

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Call):
            return NotImplemented
        return (self.command, self.config, self.params) == (other.command, other.config, other.params)

    __hash__ = None  # type: ignore[assignment]  # mutable params: not hashable

    def __repr__(self) -> str:
        return f"Call({self.command!r}, {self.config!r}, {self.params!r})"


def parse(argv: list[str]) -> Call | None:
    """argv as a fast-path form, or None for "let typer parse it"."""
    config = None
    args = list(argv)
    if args[:1] in (["-c"], ["--config"]) and len(args) >= 2:
        config, args = args[1], args[2:]
    elif args and args[0].startswith("--config="):
        config, args = args[0][len("--config=") :], args[1:]
    command = next((c for c in _FUNCTIONS if tuple(args[: len(c)]) == c), None)
    if command is None:
        return None
    params = _parse_command(command, args[len(command) :])
    return None if params is None else Call(command, config, params)


def _parse_command(command: tuple[str, ...], args: list[str]) -> dict[str, Any] | None:
    flags, values, positional = _FLAGS[command], _VALUES.get(command, {}), _POSITIONAL.get(command)
    params: dict[str, Any] = {name: False for name in flags.values()}
    params.update({name: None for name in values.values()})
    if positional:
        params[positional] = None
    seen: set[str] = set()
    i = 0
    while i < len(args):
        a = args[i]
        name, _, inline = a.partition("=")
        if a in flags and a not in seen:
            params[flags[a]] = True
        elif name in values and name not in seen:
            if inline or "=" in a:
                value = inline
            elif i + 1 < len(args) and not args[i + 1].startswith("-"):
                value, i = args[i + 1], i + 1
            else:
                return None
            if not value:
                return None
            params[values[name]] = value
        elif positional and not a.startswith("-") and params[positional] is None:
            params[positional] = _positional(command, a)
            if params[positional] is None:
                return None
        else:
            return None
        seen.add(name)
        i += 1
    if command == ("advance",) and params["key"] is None:
        return None
    return params


def _positional(command: tuple[str, ...], value: str) -> Any:
    if command != ("job", "run"):
        return value
    # What click's INT accepts, restricted to plain ASCII digits; anything else is typer's.
    return int(value) if value.isascii() and value.isdigit() else None


def run(argv: list[str]) -> int | None:
    """Run argv if it is a fast-path form; None means "let typer do it"."""
    if os.environ.get(DISABLE_VARIABLE):
        return None
    call = parse(argv)
    if call is None:
        return None
    from orch import log

    try:
        # What typer's root callback does first: a bad ORCH_LOG_* value is its usage error.
        log.configure()
    except ValueError:
        return None
    from orch.cli import machine

    result: int = getattr(machine, _FUNCTIONS[call.command])(call.config, **call.params)
    return result
