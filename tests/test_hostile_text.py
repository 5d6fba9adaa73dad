"""Issue 10 item 6: tracker text is printed literally, never as markup or terminal escapes.

One Plane title must not break (or repaint) every operator's dashboard: task list, queue,
queue --watch, history and explain print hostile titles and reasons as inert text.
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import subprocess
import sys
import time

from conftest import Setup

from orch.cli.render import cell, safe_text
from orch.engine import tasks

HOSTILE = [
    "[/]",
    "[/bold]",
    "[red]x[/red]",
    "[link=https://evil.example]click[/link]",
    "title\x1b]0;pwned\x07",
    "wipe\x1b[2J",
    "nul\x00byte",
    "two\nlines",
    "smile :warning:",
]
# What each must look like on the screen (controls shown as escapes).
SHOWN = [
    "[/]",
    "[/bold]",
    "[red]x[/red]",
    "[link=https://evil.example]click[/link]",
    "title\\x1b]0;pwned\\x07",
    "wipe\\x1b[2J",
    "nul\\x00byte",
    "two\\nlines",
    "smile :warning:",
]
TERMINAL_BYTES = ("\x1b", "\x07", "\x00", "\x9b")


def test_safe_text_neutralises_controls_and_surrogates() -> None:
    assert safe_text("plain [b]x[/b] é 日本") == "plain [b]x[/b] é 日本"
    assert safe_text("a\ud800b") == "a\\ud800b"
    assert safe_text("\x1b[2J\x07\x00\x7f\x9b\n\t") == "\\x1b[2J\\x07\\x00\\x7f\\x9b\\n\\t"
    assert safe_text("evil\u202eexe.txt") == "evil\\u202eexe.txt"  # bidi override
    for s in (*HOSTILE, "a\ud800b"):
        out = safe_text(s)
        out.encode("utf-8")  # a lone surrogate would raise here
        assert "\n" not in out and not any(b in out for b in TERMINAL_BYTES)


def test_queue_rendering_with_a_lone_surrogate_prints_literally() -> None:
    from rich.console import Console

    from orch.cli.views import render_queue

    view = {
        "healthy": False,
        "last_tick": None,
        "stages": {"analysis": 1},
        "running": [],
        "queued": [],
        "waiting": [],
        "max_concurrency": 2,
        "outbox_pending": 0,
        "problems": ["ENG-1 \ud800 [/bold] problem\x1b[2J"],
        "leases": [],
        "dependency_line": [],
        "blocked": [{"task": "ENG-1", "stage": "analysis", "escalated": True, "reason": "[/]\ud800\x07"}],
        "hosts": [
            {
                "host": "h\x1b[2J",
                "here": True,
                "jobs": [],
                "leases": [{"name": "l", "actor": "[bold]a\ud800", "purpose": "p", "pid": 1, "alive": None}],
            }
        ],
    }
    out = io.StringIO()
    Console(file=out, width=200).print(render_queue(view))
    text = out.getvalue()
    text.encode("utf-8")
    assert "[/bold] problem\\x1b[2J" in text and "[/]\\ud800\\x07" in text
    assert "host h\\x1b[2J (this host)" in text and "lease l ([bold]a\\ud800, p) pid 1 unknown" in text
    assert str(cell("[red]x[/red]")) == "[red]x[/red]"


def _assert_literal(out: str, expected: list[str]) -> None:
    for b in TERMINAL_BYTES:
        assert b not in out, f"{b!r} reached the terminal"
    for shown in expected:
        assert shown in out, f"{shown!r} not printed literally in:\n{out}"


def test_hostile_titles_through_every_view(setup: Setup) -> None:
    rt = setup.runtime()
    keys = [tasks.add(rt, title).key for title in HOSTILE]
    tasks.block(rt, keys[0], "[/bold] blocked\x1b]0;x\x07 by [red]me[/red]")
    rt.close()
    env = {"COLUMNS": "400", "TERM": "xterm-256color"}
    listed = setup.orch("task", "list", env=env)
    assert listed.returncode == 0, listed.stderr
    _assert_literal(listed.stdout, SHOWN)
    queue = setup.orch("queue", env=env)
    assert queue.returncode == 0, queue.stderr
    _assert_literal(queue.stdout, ["[/bold] blocked\\x1b]0;x\\x07 by [red]me[/red]"])
    for key, shown in zip(keys, SHOWN, strict=True):
        if key not in (keys[0], keys[4]):  # a markup crash and an escape sequence: fast enough
            continue
        for cmd in ("history", "explain"):
            r = setup.orch(cmd, key, env=env)
            assert r.returncode == 0, r.stderr
            _assert_literal(r.stdout, [shown])
    shown_show = setup.orch("task", "show", keys[7], env=env)
    assert shown_show.returncode == 0 and "two\\nlines" in shown_show.stdout


def _has_open(pid: int, path: str) -> bool:
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for fd in fds:
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/{pid}/fd/{fd}") == path:
                return True
    return False


def test_queue_watch_renders_hostile_reasons_literally(setup: Setup) -> None:
    rt = setup.runtime()
    key = tasks.add(rt, "[/]").key
    tasks.block(rt, key, "[/bold]\x1b[2J\x1b]0;t\x07")
    rt.close()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORCH_")}
    env.update(COLUMNS="300")
    proc = subprocess.Popen(
        [sys.executable, "-m", "orch", "-c", str(setup.config_path), "queue", "--watch", "--interval", "0.2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=setup.root,
    )
    # Past start-up (which can take seconds on a loaded machine) once it has the database
    # open; then a few refreshes, then stop it as a person would. Its output reaches the
    # pipe when it stops.
    db = str((setup.root / ".orch" / "orch.db").resolve())
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None and not _has_open(proc.pid, db):
        time.sleep(0.05)
    time.sleep(0.6)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode in (0, 130), err
    assert "Traceback" not in err and "MarkupError" not in err
    _assert_literal(out, ["[/bold]\\x1b[2J\\x1b]0;t\\x07"])


def test_console_notifier_writes_one_inert_line() -> None:
    from orch.adapters.console import ConsoleNotifier

    out = io.StringIO()
    ConsoleNotifier(stream=out).send("ENG-1 review -> merge: wipe\x1b[2J\nforged line \x07")
    line = out.getvalue()
    assert line.count("\n") == 1 and not any(b in line for b in TERMINAL_BYTES)
    assert "wipe\\x1b[2J\\nforged line \\x07" in line


def test_task_add_refuses_a_title_that_cannot_be_stored(setup: Setup) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORCH_")}
    out = subprocess.run(
        [sys.executable, "-m", "orch", "-c", str(setup.config_path), "task", "add", b"bad \xed\xa0\x80 x"],
        capture_output=True,
        env=env,
        cwd=setup.root,
        timeout=60,
    )
    assert out.returncode == 2 and b"not valid UTF-8" in out.stderr and b"Traceback" not in out.stderr


def test_orch_logs_shows_an_agents_escape_sequences_as_text_unless_raw(setup: Setup) -> None:
    # An agent's output is not orch's to trust: a log that clears the screen, retitles
    # the window or rewrites a line with a carriage return is shown as text. A UTF-8
    # character and a Windows line end survive; --raw gives the bytes back.
    said = "ok é\r\nclear\x1b[2J title\x1b]0;pwned\x07 over\rdone\x00\n"
    script = setup.root / "agent.py"
    script.write_text(f"import sys; sys.stdout.buffer.write({said.encode()!r})\n")
    setup.update_config({"agents": {"analyst": {"command": f"{sys.executable} {script}"}}})
    rt = setup.runtime()
    key = tasks.add(rt, "logged").key
    rt.close()
    assert setup.orch("work", "--inline").returncode == 0
    shown = setup.orch("logs", key)
    assert shown.returncode == 0, shown.stderr
    assert "ok é\nclear\\x1b[2J title\\x1b]0;pwned\\x07 over\\x0ddone\\x00\n" in shown.stdout
    assert not set(shown.stdout) & {"\x1b", "\x07", "\r", "\x00"}
    raw = subprocess.run(
        [sys.executable, "-m", "orch", "-c", str(setup.config_path), "logs", key, "--raw"],
        capture_output=True,
        cwd=setup.root,
        env={k: v for k, v in os.environ.items() if not k.startswith("ORCH_")},
    )
    assert raw.returncode == 0 and said.encode() in raw.stdout
