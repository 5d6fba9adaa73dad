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

            app()
            code = 0
        sys.exit(code)
    except OrchError as e:
        sys.stderr.write(f"orch: {e}\n")
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        sys.stderr.write("orch: interrupted\n")
        sys.exit(130)


def __getattr__(name: str) -> Any:
    # `orch.cli.app` stays importable for tests and tools without loading typer eagerly.
    if name == "app":
        from orch.cli.commands import app

        return app
    raise AttributeError(name)
