"""Many real `orch` processes started at the same instant, forked from one that imported orch.

A race needs its processes to enter the transition together. Started with `python -m
orch`, each first spends 0.15 s (SQLite) to 0.35 s (PostgreSQL: psycopg) of CPU importing
orch, so on 2 cores sixteen of them arrive staggered, and a 20-task race spends most of its
minutes importing. Here one zygote process (a fresh interpreter, no threads) imports what
`orch advance` needs, then for each race forks the racers at once: each is a separate
process with its own pid, process start time and database connection, running orch's real
`main()` with its own argv and environment, and exits with orch's exit code.

Nothing is shared but the imported modules: the zygote opens no database, reads no
configuration and calls nothing that caches (host names, boot ids) before forking.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

_ZYGOTE = r"""
import json, os, sys
# What the fast path of `orch advance` imports, ahead of the forks.
import orch.cli, orch.cli.fast, orch.cli.machine, orch.app.wiring, orch.engine.advance
import orch.store.postgres  # psycopg: only what a PostgreSQL store would import itself

def racer(argv, env, cwd, out, err):
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    fd_out = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    fd_err = os.open(err, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd_out, 1)
    os.dup2(fd_err, 2)
    sys.argv = ["orch", *argv]
    code = 1
    try:
        orch.cli.main()
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BaseException:
        import traceback
        traceback.print_exc()  # exit 1: the race's check names it, with this on stderr
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(code)

for line in sys.stdin:
    job = json.loads(line)
    pids = []
    for i in range(job["n"]):
        pid = os.fork()
        if pid == 0:
            racer(job["argv"], job["env"], job["cwd"], f"{job['dir']}/{i}.out", f"{job['dir']}/{i}.err")
        pids.append(pid)
    codes = []
    for pid in pids:
        _, status = os.waitpid(pid, 0)
        codes.append(os.waitstatus_to_exitcode(status))
    print(json.dumps(codes), flush=True)
"""


class Racers:
    """A zygote for one test: `race(n, argv, env, cwd)` runs n `orch` processes at once."""

    def __init__(self, workdir: Path, env: dict[str, str]):
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _ZYGOTE], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
        )
        self._round = 0

    def race(
        self, n: int, argv: list[str], env: dict[str, str], cwd: Path
    ) -> list[subprocess.CompletedProcess[str]]:
        self._round += 1
        where = self.workdir / f"round-{self._round}"
        where.mkdir()
        assert self.proc.stdin is not None and self.proc.stdout is not None
        job = {"n": n, "argv": argv, "env": env, "cwd": str(cwd), "dir": str(where)}
        self.proc.stdin.write(json.dumps(job) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        assert line, f"the racers' zygote died (exit {self.proc.poll()})"
        codes = json.loads(line)
        return [
            subprocess.CompletedProcess(
                ["orch", *argv], code, (where / f"{i}.out").read_text(), (where / f"{i}.err").read_text()
            )
            for i, code in enumerate(codes)
        ]

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait(30)
