"""Rendering shared by the typer commands and the fast path; imports neither typer nor rich."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any


def safe_text(value: object) -> str:
    """Untrusted text (a tracker title, a reason, a key) as one inert line for a terminal.

    Controls, escapes and lone surrogates become visible escapes (`\\x1b`, `\\n`,
    `\\ud800`), so nothing reaches the terminal that it would act on and every line stays
    one line (orch.names.inert_text). Use it for plain output (typer.echo, print); in rich
    output use `cell()`, which also keeps markup and emoji codes literal.
    """
    from orch.names import inert_text

    return inert_text(value if isinstance(value, str) else str(value))


def cell(value: object, style: str = "") -> Any:
    """Untrusted text as a rich `Text`: printed literally (no markup, no :emoji:), neutralised."""
    from rich.text import Text

    return Text(safe_text("" if value is None else value), style=style)


def plain(value: Any) -> str:
    """A record for people: `key=value` pairs, nested records in parentheses, no None,
    empty values left out, epoch times as local clock times (never a Python repr)."""
    if isinstance(value, dict):
        parts = [
            f"{k}={plain(v)}" if not isinstance(v, dict) else f"{k}({plain(v)})" for k, v in value.items()
        ]
        return ", ".join(p for p, v in zip(parts, value.values(), strict=True) if v not in (None, "", [], {}))
    if isinstance(value, list | tuple):
        return " ".join(plain(v) for v in value)
    if isinstance(value, float) and value > 1e9:  # an epoch time, as the store keeps them
        import time

        return time.strftime("%H:%M:%S", time.localtime(value))
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def emit_json(data: Any) -> None:
    import json  # only the commands that print JSON pay for it (~6 ms at start-up)

    sys.stdout.write(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def print_findings(findings: list[dict[str, str]]) -> None:
    """Findings of `orch config check` and `orch doctor`: errors on stderr, the rest on stdout."""
    for f in findings:
        problem = f"{safe_text(f['key'])}: {safe_text(f['problem'])}"
        text = f"{f['level']}: {problem}\n    fix: {safe_text(f['fix'])}"
        print(text, file=sys.stderr if f["level"] == "error" else sys.stdout, flush=True)


def store_location(cfg: Any) -> str:
    """Where the store is, for people: the SQLite path, or the `[store] url` with any
    password and secret-named query parameter masked (orch refuses a URL with a password,
    but `orch config show` must not echo one that a mistaken file holds). The user name
    stays: it is no secret, and it says which role orch connects as."""
    url = cfg.store.url
    if not url:
        return str(cfg.store.db_path)
    from urllib.parse import urlsplit, urlunsplit

    from orch.adapters.http import MASK
    from orch.adapters.http import redact as redact_url

    try:
        parts = urlsplit(url)
    except ValueError:
        return "(an unparseable store URL, not shown: it may hold a password)"
    userinfo, at, hostport = parts.netloc.rpartition("@")
    shown = redact_url(urlunsplit(parts._replace(netloc=hostport)))
    if at:
        user, colon, _ = userinfo.partition(":")
        scheme, sep, rest = shown.partition("://")
        shown = f"{scheme}{sep}{user}{':' + MASK if colon else ''}@{rest}"
    return safe_text(shown)


def host_lines(hosts: list[dict[str, Any]]) -> list[str]:
    """`orch queue` and `orch doctor`: each host with its running jobs and held leases,
    one line each, already made inert."""

    def alive(value: bool | None) -> str:
        return "alive" if value else "unknown" if value is None else "DEAD"

    def many(n: int, word: str) -> str:
        return f"{n} {word}" + ("" if n == 1 else "s")

    lines = []
    for h in hosts:
        here = " (this host)" if h["here"] else ""
        jobs, leases = h["jobs"], h["leases"]
        lines.append(
            safe_text(
                f"host {h['host']}{here}: {many(len(jobs), 'running job')}, {many(len(leases), 'lease')}"
            )
        )
        for j in jobs:
            lines.append(
                "  " + safe_text(f"job {j['id']} {j['task']} {j['agent']} pid {j['pid']} {alive(j['alive'])}")
            )
        for lease in leases:
            lines.append(
                "  "
                + safe_text(
                    f"lease {lease['name']} ({lease['actor']}, {lease['purpose']}) "
                    f"pid {lease['pid']} {alive(lease['alive'])}"
                )
            )
    return lines


def advance_result(result: Any, *, as_json: bool) -> int:
    """Print an AdvanceResult; returns its exit code."""
    if as_json:
        emit_json(result.as_dict())
    elif result.outcome == "advanced":
        print(safe_text(f"{result.task}: {result.stage} -> {result.to_stage}"))
    else:
        stream = sys.stderr if result.exit_code else sys.stdout
        print(safe_text(f"{result.task}: {result.outcome} at {result.stage}: {result.message}"), file=stream)
    return int(result.exit_code)


def tick_report(report: dict[str, Any], *, as_json: bool) -> int:
    if as_json:
        emit_json(report)
        return 0
    reap = report.get("reap", {})
    parts = [
        f"reaped {len(reap.get('reaped', []))} job(s), {len(reap.get('leases', []))} lease(s)"
        if "reaped" in reap
        else "reap skipped",
        f"advanced {len(report['sweep']['advanced'])}",
        f"started {len(report['work']['started'])} runner(s)",
    ]
    cycles = report.get("deps", {}).get("cycles") if isinstance(report.get("deps"), dict) else None
    if cycles:
        parts.append(f"{len(cycles)} dependency cycle(s) blocked")
    print("tick: " + "; ".join(parts))
    for line in report["sweep"]["advanced"]:
        print(f"  {safe_text(line)}")
    for err in [*reap.get("errors", []), *report["sweep"]["errors"]]:
        print(f"  error: {safe_text(err)}", file=sys.stderr)
    return 0


def job_report(report: Any, *, as_json: bool) -> int:
    if report is None:
        if as_json:
            emit_json(None)
        else:
            print("no job can start now")
        return 0
    if as_json:
        emit_json(report._asdict())
    else:
        line = f"job {report.job} {report.agent} for {report.task}: {report.state} ({report.reason})"
        print(safe_text(line))
    return 1 if report.state in ("failed", "timed_out", "stalled", "reaped") else 0


@contextmanager
def terminal_progress(min_total: int = 20) -> Iterator[Callable[[str, int, int], None] | None]:
    """A progress callback that draws a bar on a terminal (stderr) for long steps, and is
    None (silent, free) when stderr is not a terminal: timers and CI stay quiet."""
    if not sys.stderr.isatty():
        yield None
        return
    state: dict[str, Any] = {}

    def update(step: str, done: int, total: int) -> None:
        if total < min_total:
            return
        if "bar" not in state:
            from rich.progress import Progress

            state["bar"] = Progress(transient=True, console=None)
            state["bar"].start()
            state["task"] = state["bar"].add_task(step, total=total)
        state["bar"].update(state["task"], completed=done + 1, total=total, description=step)

    try:
        yield update
    finally:
        if "bar" in state:
            state["bar"].stop()
