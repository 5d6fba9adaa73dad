"""The operator's views: `orch status` (one glance), `orch queue` (every job, lease and
block), `orch explain KEY` (one task's next gates)."""

from __future__ import annotations

import time
from typing import Any

import typer

from orch.cli.context import runtime
from orch.cli.options import JSON, KEY
from orch.cli.render import emit_json

app = typer.Typer()


def _age(s: float | None) -> str:
    if s is None:
        return "-"
    s = abs(s)
    return f"{s:.0f}s" if s < 120 else f"{s / 60:.0f}m" if s < 7200 else f"{s / 3600:.1f}h"


def _alive(alive: bool | None) -> Any:
    """An owner's liveness, in colour: green alive, bold red DEAD (the reaper's business)."""
    from rich.text import Text

    return Text("alive", style="green") if alive else Text("DEAD", style="bold red")


def _stages(counts: dict[str, int]) -> str:
    return ", ".join(f"{stage} {n}" for stage, n in counts.items()) or "no tasks"


def render_queue(view: dict[str, Any]) -> Any:
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    from orch.cli.render import cell, host_lines, safe_text

    parts: list[Any] = []
    health = Text("healthy", style="green") if view["healthy"] else Text("needs a look", style="bold red")
    tick = view["last_tick"]
    last = (_age(tick["ago_s"]) + " ago") if tick else "never"
    head = Text.assemble(
        "orch: ",
        health,
        f"   stages {_stages(view['stages'])}   running {len(view['running'])}/{view['max_concurrency']}",
        f"   queued {len(view['queued'])}   waiting {len(view['waiting'])}",
        f"   outbox {view['outbox_pending']}   last tick {last}",
    )
    parts.append(head)
    for p in view["problems"]:
        parts.append(Text(f"  ! {safe_text(p)}", style="yellow"))
    # Per host (several share a PostgreSQL store); one host shows as one short section.
    for line in host_lines(view["hosts"]):
        parts.append(Text(line, style="red" if line.endswith(" DEAD") else ""))
    if view["running"] or view["queued"] or view["waiting"]:
        t = Table("job", "task", "agent", "state", "attempt", "age", "owner", "note", title="jobs")
        for j in view["running"]:
            owner = j["owner"] or {}
            alive = _alive(j["alive"])
            t.add_row(
                str(j["id"]),
                cell(j["task"]),
                cell(j["agent"]),
                "running",
                str(j["attempt"]),
                _age(j["age_s"]),
                Text.assemble(f"pid {owner.get('pid')} ", alive),
                f"deadline in {_age(j['deadline_in_s'])}",
            )
        for j in view["queued"]:
            note = f"starts in {_age(j['starts_in_s'])}" if j["starts_in_s"] else "ready"
            t.add_row(
                str(j["id"]),
                cell(j["task"]),
                cell(j["agent"]),
                "queued",
                str(j["attempt"]),
                _age(j["age_s"]),
                "",
                note,
            )
        for j in view["waiting"]:
            t.add_row(
                str(j["id"]),
                cell(j["task"]),
                cell(j["agent"]),
                "waiting",
                str(j["attempt"]),
                _age(j["age_s"]),
                "",
                cell("waits on " + ", ".join(j["waits_on"])),
            )
        parts.append(t)
    if view["leases"]:
        t = Table("lease", "holder", "for", "age", "owner", title="leases")
        for lease in view["leases"]:
            alive = _alive(lease["alive"])
            t.add_row(
                cell(lease["name"]),
                cell(lease["actor"]),
                cell(lease["purpose"]),
                _age(lease["age_s"]),
                Text.assemble(cell(f"{lease['owner']['host']} pid {lease['owner']['pid']} "), alive),
            )
        parts.append(t)
    if view["dependency_line"]:
        t = Table("task", "stage", "waits for", title="dependency line")
        for row in view["dependency_line"]:
            t.add_row(
                cell(row["task"]),
                cell(row["stage"]),
                cell(", ".join(f"{d['task']} ({d['stage']})" for d in row["waits_on"])),
            )
        parts.append(t)
    if view["blocked"]:
        t = Table("task", "stage", "why", title="blocked")
        for row in view["blocked"]:
            t.add_row(
                cell(row["task"]),
                cell(row["stage"]),
                cell(("ESCALATED: " if row["escalated"] else "") + (row["reason"] or "")),
            )
        parts.append(t)
    return Group(*parts)


@app.command("status")
def status_cmd(json_: bool = JSON) -> None:
    """One glance: what runs, what waits on a person, what is broken.

    Exit 0 when healthy, 1 when something is broken (a dead runner, a stale tick, an
    escalated task). `orch queue` has the full picture, `orch explain KEY` one task's.

    Example: orch status
    """
    from orch.engine import status

    view = status.overview(runtime())
    if json_:
        emit_json(view)
        raise typer.Exit(0 if view["healthy"] else 1)
    from rich.console import Console

    from orch.cli.render import cell

    console = Console(highlight=False)
    ok = "[green]ok[/green]" if view["healthy"] else "[bold red]needs a look[/bold red]"
    tick = view["last_tick"]
    last = f"last tick {_age(tick['ago_s'])} ago" if tick else "[red]no tick yet[/red]"
    stages = ", ".join(f"{n} {s}" for s, n in view["stages"].items()) or "no tasks"
    console.print(f"orch: {ok}   {last}   tasks: {stages}")
    running = view["running"]
    console.print(
        f"\n[bold]Running[/bold] {len(running)}/{view['max_concurrency']}"
        f"   queued {view['queued']}   waiting on dependencies {view['waiting_on_deps']}"
    )
    for j in running:
        alive = "[green]alive[/green]" if j["alive"] else "[bold red]DEAD[/bold red]"
        what = f"  {j['agent']}  job {j['id']}  {_age(j['age_s'])}  runner {alive}"
        console.print("  ", cell(j["task"]), what, sep="")
    people = view["people"]
    more = f" (and {view['people_more']} more)" if view["people_more"] else ""
    console.print(f"\n[bold]Waiting on a person[/bold] {len(people)}{more}")
    for p in people:
        line = ("  ", cell(p["task"]), f"  at {p['stage']}: ", cell(p["needs"], "cyan"), "  ")
        console.print(*line, cell(p["why"], "dim"), sep="")
    broken = view["broken"]
    console.print(f"\n[bold]Broken[/bold] {len(broken)}" + ("" if broken else "  [green]nothing[/green]"))
    for b in broken:
        console.print("  [red]![/red] ", cell(b), sep="")
    failed = view["failed_last_hour"]
    if failed:
        console.print(f"\n[bold]Failed jobs, last hour[/bold] {len(failed)}")
        for f in failed:
            what = f"  {f['agent']}  job {f['job']}  [red]{f['state']}[/red]  "
            console.print("  ", cell(f["task"]), what, cell(f["reason"]), sep="")
    raise typer.Exit(0 if view["healthy"] else 1)


@app.command("queue")
def queue(
    json_: bool = JSON,
    watch: bool = typer.Option(False, "--watch", help="Refresh in place every --interval seconds."),
    interval: float = typer.Option(
        2.0, "--interval", min=0.2, help="Seconds between refreshes with --watch."
    ),
) -> None:
    """Running, queued and waiting jobs, leases, the dependency line, blocks, the last tick.

    Example: orch queue --watch
    """
    from orch.engine import status

    rt = runtime()
    if json_:
        emit_json(status.queue(rt))
        return
    from rich.console import Console

    console = Console(highlight=False)  # colour means something here, not every digit
    if not watch:
        console.print(render_queue(status.queue(rt)))
        return
    from rich.live import Live

    with Live(render_queue(status.queue(rt)), console=console, refresh_per_second=4) as live:
        try:
            while True:
                time.sleep(interval)
                live.update(render_queue(status.queue(rt)))
        except KeyboardInterrupt:
            pass


@app.command("explain")
def explain(key: str = KEY, json_: bool = JSON) -> None:
    """Why a task is where it is: its next gates with evidence, leases, dependencies, who moves it next.

    Example: orch explain ORCH-12
    """
    from orch.engine import status

    view = status.explain(runtime(), key)
    if json_:
        emit_json(view)
        return
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from orch.cli.render import cell, safe_text

    console = Console(highlight=False)  # colour means something here, not every digit

    def say(line: str) -> None:
        # Every line here carries tracker or agent text: printed literally, never as markup.
        console.print(cell(line), highlight=False)

    t = view["task"]
    console.print(Text.assemble((safe_text(t["key"]), "bold"), " ", safe_text(t["title"])))
    flags = " BLOCKED" if t["blocked"] else ""
    flags += " ESCALATED" if t["escalated"] else ""
    say(
        f"  stage {t['stage']} (v{t['version']}), retries {t['retries']}/{view['max_retries']},"
        f" branch {view['branch']} at {(view['head'] or 'none')[:10]}{flags}"
    )
    if t["blocked"]:
        say(f"  blocked: {t['block_reason']}")
    for tr in view["transitions"]:
        table = Table(
            "gate",
            "",
            "why",
            "evidence",
            title=Text.assemble(
                cell(f"-> {tr['to']}: "), ("GREEN", "bold green") if tr["green"] else ("red", "red")
            ),
        )
        for g in tr["gates"]:
            ev = ", ".join(f"{k}={str(v)[:24]}" for k, v in g["evidence"].items() if v is not None)
            passed = Text("ok", style="green") if g["passed"] else Text("no", style="red")
            table.add_row(cell(g["gate"]), passed, cell(g["reason"]), cell(ev))
        if tr["effects"]:
            table.caption = cell("effects: " + ", ".join(tr["effects"]))
        console.print(table)
    for lease in view["leases"]:
        say(
            f"  lease {lease['name']}: {lease['actor']} ({'alive' if lease['alive'] else 'DEAD'}, "
            f"{_age(lease['age_s'])})"
        )
    for e in view.get("effects_running", []):
        console.print(f"  effect {e['effect']} running, pid {e['pid']}")
    if view["waits_on"]:
        say("  waits on: " + ", ".join(f"{d['task']} ({d['stage']})" for d in view["waits_on"]))
    if view["job"]:
        j = view["job"]
        say(f"  job {j['id']}: {j['agent']} attempt {j['attempt']} {j['state']} {j['reason'] or ''}")
    say(
        "  recent: "
        + "; ".join(f"{r['event']}" + (f" -> {r['to']}" if r["to"] else "") for r in view["recent"])
    )
    console.print(Text.assemble(("next:", "bold"), " ", safe_text(view["next"])))
