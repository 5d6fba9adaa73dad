"""The application: what the CLI calls that is more than one engine function.

    wiring    the composition root: config -> store + adapters -> Runtime (`open_runtime`)
    relay     the webhook relay, `orch relay serve`: an HTTP server that stores deliveries
    checks    `orch doctor`: the configuration, the store and each integration
    demo      `orch demo` and the setup the tests start from
    install   `orch install`: systemd units, cron lines
    starter   `orch init`: a starter orch.toml

The names below are re-exported for code outside this repository that imported them
from `orch.app` before the composition root had a module of its own.
"""

from orch.app.wiring import actor_name, open_runtime, secret

__all__ = ["actor_name", "open_runtime", "secret"]
