"""The two front doors of the machine-run commands agree (orch.cli.fast vs typer).

`advance`, `tick` and `job run` are parsed by orch.cli.fast when argv is one of its
forms, by typer otherwise; both then call the same body in orch.cli.machine. So:

- parsing: `fast.parse(argv)` is checked against typer's own parser (the real root
  command, with recording callbacks in place of the bodies) on a table covering every
  option and argument of the three commands, then on seeded random argv;
- the bodies: each form runs as a real `orch` process both ways, the second with
  ORCH_TEST_NO_FAST_PATH=1 (everything through typer), in two scratch repositories
  driven alike, comparing exit codes, output and the resulting state.
"""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import typer.main
from conftest import Setup

import orch.cli
from orch.cli import fast
from orch.cli.fast import Call

# Read at import: the autouse fixture clears ORCH_* before each test.
_SEED = os.environ.get("ORCH_TEST_SEED")

_ROOT_DEFAULTS = {"version": None, "log_format": None, "log_level": None, "log_file": None}


class TyperParser:
    """typer's own parser: the real root command, whose bodies record what they are called with."""

    def __init__(self) -> None:
        self.root: Any = typer.main.get_command(orch.cli.app)  # click objects of our own
        self.seen: dict[str, Any] = {}
        self.root.callback = lambda **params: self.seen.__setitem__("root", params)
        for command in fast._FUNCTIONS:
            cmd = self.root
            for part in command:
                cmd = cmd.commands[part]
            cmd.callback = self._body(command)

    def _body(self, command: tuple[str, ...]) -> Any:
        def record(**params: Any) -> None:
            self.seen["command"], self.seen["params"] = command, params

        return record

    def parse(self, argv: list[str]) -> Call | str:
        """The fast-path command typer would run with which parameters, or a word for
        anything else ("error: ...", "no body ran" for --help and the like)."""
        self.seen.clear()
        try:
            self.root.main(list(argv), prog_name="orch", standalone_mode=False)
        except Exception as e:  # click's UsageError family, raised instead of exiting
            return f"error: {type(e).__name__}"
        if "command" not in self.seen:
            return "no body ran"
        rest = {k: v for k, v in self.seen["root"].items() if k != "config"}
        if rest != _ROOT_DEFAULTS:
            return f"root options the fast path does not take: {rest}"
        return Call(self.seen["command"], self.seen["root"]["config"], self.seen["params"])


@pytest.fixture(scope="module")
def typer_parser() -> TyperParser:
    return TyperParser()


def adv(key: str, expect: str | None = None, json_: bool = False, config: str | None = None) -> Call:
    return Call(("advance",), config, {"key": key, "expect": expect, "json_": json_})


def tick(json_: bool = False, no_spawn: bool = False, config: str | None = None) -> Call:
    return Call(("tick",), config, {"json_": json_, "no_spawn": no_spawn})


def job(
    job_id: int | None = None, next_: bool = False, json_: bool = False, config: str | None = None
) -> Call:
    return Call(("job", "run"), config, {"job_id": job_id, "next_": next_, "json_": json_})


# (argv, what the fast path makes of it). Every row is also parsed by typer: a Call must
# be exactly what typer would call the body with; None means typer parses it (and
# reports its own errors), which is always allowed.
TABLE: list[tuple[str, Call | None]] = [
    # advance: KEY, --expect STAGE / --expect=STAGE, --json, in any order
    ("advance K-1", adv("K-1")),
    ("advance K-1 --json", adv("K-1", json_=True)),
    ("advance --json K-1", adv("K-1", json_=True)),
    ("advance K-1 --expect review", adv("K-1", "review")),
    ("advance --expect review K-1", adv("K-1", "review")),
    ("advance K-1 --expect=review --json", adv("K-1", "review", True)),
    ("advance --json --expect=review K-1", adv("K-1", "review", True)),
    ("advance K=1", adv("K=1")),
    ("advance", None),  # missing KEY: typer's error
    ("advance K-1 K-2", None),  # extra argument
    ("advance K-1 --expect", None),  # option without its value
    ("advance K-1 --expect --json", None),  # click would take "--json" as the stage
    ("advance K-1 --expect=", None),
    ("advance K-1 --expect ''", None),
    ("advance K-1 --json --json", None),  # repeated flag: typer's business
    ("advance K-1 --expect a --expect b", None),
    ("advance K-1 --json=1", None),
    ("advance -- K-1", None),
    ("advance - ", None),
    ("advance K-1 --help", None),
    ("advance K-1 -h", None),
    ("advance K-1 --exp review", None),  # click has no abbreviations either
    ("advance K-1 -c x.toml", None),  # the root's option after the command
    ("Advance K-1", None),
    # tick: --json, --no-spawn
    ("tick", tick()),
    ("tick --json", tick(json_=True)),
    ("tick --no-spawn", tick(no_spawn=True)),
    ("tick --no-spawn --json", tick(True, True)),
    ("tick --json --no-spawn", tick(True, True)),
    ("tick now", None),
    ("tick --json --json", None),
    ("tick --spawn", None),
    ("tick --help", None),
    # job run: ID or --next, --json
    ("job run --next", job(next_=True)),
    ("job run --next --json", job(next_=True, json_=True)),
    ("job run --json --next", job(next_=True, json_=True)),
    ("job run 42", job(42)),
    ("job run 42 --json", job(42, json_=True)),
    ("job run --json 42", job(42, json_=True)),
    ("job run 007", job(7)),
    ("job run", job()),  # neither: the body's usage error, the same both ways
    ("job run 42 --next", job(42, True)),  # both: likewise
    ("job run x", None),
    ("job run ²", None),  # str.isdigit() says yes, int() says no
    ("job run -1", None),
    ("job run 1 2", None),
    ("job run --next --next", None),
    ("job", None),
    ("job --help", None),
    # the root's --config, in each of its spellings, before the command
    ("-c x.toml advance K-1", adv("K-1", config="x.toml")),
    ("--config x.toml tick --json", tick(True, config="x.toml")),
    ("--config=x.toml job run --next", job(next_=True, config="x.toml")),
    ("-c x.toml -c y.toml tick", None),
    ("-cx.toml tick", None),
    ("--log-level debug advance K-1", None),
    ("--version advance K-1", None),
    ("--help", None),
    ("", None),
    ("task list", None),
]


def _argv(row: str) -> list[str]:
    import shlex

    return shlex.split(row)


@pytest.mark.parametrize(("row", "expected"), TABLE, ids=[r or "(empty)" for r, _ in TABLE])
def test_fast_parse_agrees_with_typer(row: str, expected: Call | None, typer_parser: TyperParser) -> None:
    argv = _argv(row)
    got = fast.parse(argv)
    assert got == expected
    if got is not None:
        assert typer_parser.parse(argv) == got


def test_the_table_covers_every_option_of_the_fast_path_commands() -> None:
    root = TyperParser().root
    taken = [_argv(row) for row, expected in TABLE if expected is not None]
    for command in fast._FUNCTIONS:
        cmd = root
        for part in command:
            cmd = cmd.commands[part]
        for param in cmd.params:
            if param.param_type_name == "argument":
                assert any(
                    expected and expected.command == command and expected.params[param.name] is not None
                    for _, expected in TABLE
                ), f"{command} {param.name}"
                continue
            for opt in param.opts:
                assert any(a[: len(command)] == list(command) and opt in " ".join(a) for a in taken), (
                    f"{' '.join(command)} {opt} is in no fast-path row"
                )
    for spelling in ("-c", "--config", "--config="):
        assert any(a[0].startswith(spelling) for a in taken if a)


def test_fast_parse_agrees_with_typer_on_random_argv(typer_parser: TyperParser) -> None:
    seed = int(_SEED or random.SystemRandom().randrange(1 << 30))
    print(f"random argv: seed {seed} (rerun with ORCH_TEST_SEED={seed})")
    rng = random.Random(seed)
    words = [
        "K-1",
        "7",
        "007",
        "review",
        "--json",
        "--next",
        "--no-spawn",
        "--expect",
        "--expect=dev",
        "--expect=",
        "-",
        "--",
        "x=y",
        "²",
        "-c",
        "--config",
        "a.toml",
        "--json=1",
        "run",
        "tick",
        "",
    ]
    taken = 0
    for _ in range(400):
        argv: list[str] = []
        if rng.random() < 0.3:
            argv += rng.choice([["-c", "a.toml"], ["--config", "b.toml"], ["--config=c.toml"]])
        argv += list(rng.choice(list(fast._FUNCTIONS)))
        argv += [rng.choice(words) for _ in range(rng.randrange(4))]
        got = fast.parse(argv)
        if got is not None:
            taken += 1
            assert typer_parser.parse(argv) == got, f"seed {seed}: {argv}"
    assert taken > 50, f"seed {seed}: the fast path took only {taken} of 400"


# -- the bodies, both ways, as real processes --------------------------------------------

_CLOCK = re.compile(r"\[orch \d\d:\d\d:\d\d\]")

_IMPORTS_TYPER = """
import sys
sys.argv = sys.argv[1:]
from orch.cli import main
try:
    main()
except SystemExit:
    pass
print("typer imported:", "typer" in sys.modules)
"""


class World:
    """One scratch repository; every orch process runs through the fast path or through typer."""

    def __init__(self, root: Path, *, typer_only: bool):
        self.setup = Setup(root)
        self.env = {fast.DISABLE_VARIABLE: "1"} if typer_only else {}

    def orch(self, *args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
        out = self.setup.orch(*args, env={**self.env, **(env or {})})
        root = str(self.setup.root)
        return (
            out.returncode,
            out.stdout.replace(root, "<root>"),
            _CLOCK.sub("[orch T]", out.stderr.replace(root, "<root>")),
        )

    def imports_typer(self, *args: str) -> bool:
        """Run `orch ARGS` as `python -m orch` does, then say whether typer was imported."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("ORCH_")} | self.env
        argv = ["orch", "-c", str(self.setup.config_path), *args]
        out = subprocess.run(
            [sys.executable, "-c", _IMPORTS_TYPER, *argv],
            capture_output=True,
            text=True,
            env=env,
            cwd=self.setup.root,
            timeout=60,
        )
        assert out.returncode == 0, out.stderr
        return out.stdout.splitlines()[-1] == "typer imported: True"

    def state(self) -> Any:
        rt = self.setup.runtime()
        try:
            tasks = [t.as_dict() for t in rt.store.list_tasks()]
            history = [
                (r.event, r.from_stage, r.to_stage, re.sub(r"\d+", "N", r.actor))
                for t in rt.store.list_tasks()
                for r in rt.store.history(t.id)
            ]
            jobs = [
                (j.id, j.agent, j.stage, j.state, j.reason)
                for t in rt.store.list_tasks()
                for j in rt.store.jobs(task_id=t.id)
            ]
        finally:
            rt.close()
        for t in tasks:
            for k in list(t):
                if k.endswith("_at") or k in ("updated", "created"):
                    t.pop(k)
        return tasks, history, jobs


@pytest.mark.slow  # about 40 orch processes
def test_each_form_runs_alike_through_the_fast_path_and_through_typer(tmp_path: Path) -> None:
    fast_world = World(tmp_path / "fast", typer_only=False)
    typer_world = World(tmp_path / "typer", typer_only=True)
    pool = ThreadPoolExecutor(1)

    def both(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
        # The two worlds are independent: run each step in both at once.
        later = pool.submit(typer_world.orch, *args, env=env)
        a, b = fast_world.orch(*args, env=env), later.result()
        assert a == b, f"orch {' '.join(args)}: fast path {a} != typer {b}"
        return a

    # The switch does send everything to typer: only that process imports it.
    assert not fast_world.imports_typer("tick", "--no-spawn")
    assert typer_world.imports_typer("tick", "--no-spawn")

    assert both("tick")[0] == 0  # nothing to do yet
    assert both("advance", "NOPE-1")[0] == 2
    assert both("task", "add", "parity", "--key", "P-1")[0] == 0
    assert both("advance", "P-1")[0] == 3  # red: nobody approved, no agent ran
    code, out, _ = both("advance", "--json", "P-1")
    assert code == 3 and json.loads(out)["outcome"] == "not_ready"
    assert both("advance", "P-1", "--expect", "review")[0] == 0  # elsewhere: nothing to do
    assert both("advance", "P-1", "--expect=limbo")[0] == 2
    assert both("job", "run")[0] == 2
    assert both("job", "run", "1", "--next")[0] == 2
    assert both("job", "run", "99")[0] == 2
    # Two forms the fast path used to crash on (a traceback, exit 1): typer's usage errors now.
    assert both("job", "run", "²")[0] == 2
    assert both("advance", "P-1", env={"ORCH_LOG_FORMAT": "xml"})[0] == 2
    code, out, _ = both("job", "run", "--next", "--json")
    assert code == 0 and json.loads(out)["state"] == "succeeded"
    assert both("job", "run", "--next") == (0, "no job can start now\n", "")
    assert both("approve", "P-1")[0] == 0
    code, out, _ = both("tick", "--no-spawn", "--json")
    assert code == 0 and json.loads(out)["work"]["started"] == []
    assert both("tick", "--no-spawn")[0] == 0
    code, out, _ = both("job", "run", "2")
    assert code == 0 and "developer for P-1: succeeded" in out  # and its end advanced P-1
    assert both("advance", "P-1", "--expect", "development")[0] == 0  # nothing: it moved on
    assert both("job", "run", "--next")[0] == 0  # the reviewer; its end advances to merge
    assert both("advance", "P-1")[0] == 3  # the merge window is closed
    fast_world.setup.open_merge_window()
    typer_world.setup.open_merge_window()
    code, out, _ = both("advance", "P-1", "--expect", "merge")
    assert code == 0 and out == "P-1: merge -> deploy\n"
    code, out, _ = both("advance", "--json", "P-1")
    assert json.loads(out)["to_stage"] == "monitoring"
    assert fast_world.state() == typer_world.state()
    pool.shutdown()


def test_the_typer_bodies_run_in_process_too(setup: Setup) -> None:
    """The quick subset's look at the typer side (the processes above are slow): each
    command's typer body reaches orch.cli.machine and returns its exit code."""
    from typer.testing import CliRunner

    from orch.errors import UsageError

    runner = CliRunner()

    def invoke(*args: str) -> Any:
        return runner.invoke(orch.cli.app, ["-c", str(setup.config_path), *args])

    assert invoke("task", "add", "in process", "--key", "I-1").exit_code == 0
    out = invoke("advance", "I-1", "--json")
    assert out.exit_code == 3 and json.loads(out.stdout)["outcome"] == "not_ready"
    out = invoke("tick", "--no-spawn", "--json")
    assert out.exit_code == 0 and json.loads(out.stdout)["work"]["started"] == []
    out = invoke("job", "run")
    assert isinstance(out.exception, UsageError) and "--next" in str(out.exception)
    out = invoke("job", "run", "--next", "--json")
    assert out.exit_code == 0 and json.loads(out.stdout)["state"] == "succeeded"
