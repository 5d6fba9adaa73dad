"""The `orch` command line: parse, call one library function, render, map errors to exit codes.

`main()` imports nothing heavy: machine-run forms take the fast path (orch.cli.fast),
everything else goes to the typer app in orch.cli.commands.
"""

from __future__ import annotations

import sys
from typing import Any

from orch.errors import OrchError


def main() -> None:
    try:
        from orch.cli import fast

        code = fast.run(sys.argv[1:])
        if code is None:
            from orch.cli.commands import app

            was_devnull = _stdout_is_devnull()
            try:
                app()
            except SystemExit as e:
                # On EPIPE (`orch explain KEY | head`) typer pacifies stdout and rich points
                # it at /dev/null, and both exit 1: the reader has what it wanted, which is
                # not an error.
                pacified = type(sys.stdout).__name__ == "PacifyFlushWrapper"
                if e.code == 1 and (pacified or (_stdout_is_devnull() and not was_devnull)):
                    sys.exit(0)
                raise
            code = 0
        sys.exit(code)
    except OrchError as e:
        sys.stderr.write(f"orch: {e}\n")
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        sys.stderr.write("orch: interrupted\n")
        sys.exit(130)
    except BrokenPipeError:
        # `orch explain KEY | head`: the reader has what it wanted; that is not an error.
        # Point stdout at /dev/null so the interpreter's final flush stays quiet too.
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(0)


def _stdout_is_devnull() -> bool:
    import os

    try:
        out, null = os.fstat(1), os.stat(os.devnull)
    except OSError:
        return False
    return (out.st_dev, out.st_ino) == (null.st_dev, null.st_ino)


def __getattr__(name: str) -> Any:
    # `orch.cli.app` stays importable for tests and tools without loading typer eagerly.
    if name == "app":
        from orch.cli.commands import app

        return app
    raise AttributeError(name)
