"""The one exception tree of orch, and the exit code each class maps to.

    OrchError                      1  unexpected error
    ├── UsageError                 2  bad input: unknown task, unknown stage, bad argument
    ├── ConfigError                2  orch.toml or ORCH_* is invalid (names file and key)
    ├── StoreError                 1  the database failed
    │   ├── NoDatabase             1  no database where the configuration points
    │   ├── KeyTaken               2  a unique name (a task key) is taken; nothing written
    │   └── SchemaTooNew           2  written by a newer orch: refused, left untouched
    ├── NotReady                   3  a gate is red or a dependency unfinished; nothing changed
    ├── Busy                       4  a live owner holds the lease, the CAS was lost or the
    │                                 database stayed locked; nothing changed, try later
    ├── IntegrationError           1  tracker / forge / notifier failed (carries URL, status)
    ├── RetryLater                 4  a handler asks to be run again after `delay` seconds
    │   └── BranchBehind           4  another merge landed first: rebase again, nobody's fault
    └── PermanentFailure           1  a handler gives up; retrying will not help
        └── EffectFailed           1  an effect ran and failed (e.g. a rebase conflict)

The CLI maps an exception to its class's `exit_code`; nothing else decides exit codes.
"""

from __future__ import annotations


class OrchError(Exception):
    """Root of every error orch raises on purpose."""

    exit_code = 1


class UsageError(OrchError):
    """The command was given something that does not exist or does not fit."""

    exit_code = 2


class ConfigError(OrchError):
    """The configuration is invalid; the message names the file, the key and what was expected."""

    exit_code = 2

    def __init__(self, message: str, *, problems: tuple[tuple[str, str], ...] = ()):
        super().__init__(message)
        # Every (key, problem) found at load, for `orch config check` (the message has them all).
        self.problems = problems


class StoreError(OrchError):
    """The database could not be read or written."""

    exit_code = 1


class NoDatabase(StoreError):
    """There is no orch database where the configuration points; nothing was created."""

    exit_code = 1


class KeyTaken(StoreError):
    """A name that must be unique (a task's key) is taken already; nothing was written.
    The store names the key; the caller says what it means to the person."""

    exit_code = 2

    def __init__(self, key: str):
        super().__init__(f"key {key} is taken")
        self.key = key


class SchemaTooNew(StoreError):
    """The database was written by a newer orch; it is refused and not touched."""

    exit_code = 2


class NotReady(OrchError):
    """A gate is red or a dependency is unfinished; nothing was changed."""

    exit_code = 3


class Busy(OrchError):
    """Someone else is in the way (a live lease owner, a lost CAS, a locked database)."""

    exit_code = 4


class IntegrationError(OrchError):
    """A tracker, forge or notifier call failed; carries the (redacted) URL and status."""

    exit_code = 1

    def __init__(self, message: str, *, url: str | None = None, status: int | None = None):
        super().__init__(message)
        self.url = url
        self.status = status


class RetryLater(OrchError):
    """Try again in `delay` seconds; the runner that catches it turns it into state."""

    exit_code = 4

    def __init__(self, message: str, *, delay: float = 0.0):
        super().__init__(message)
        self.delay = delay


class BranchBehind(RetryLater):
    """The branch to merge is behind the default branch because another merge landed first:
    it is rebased again (never sent back to its developer)."""

    exit_code = 4


class PermanentFailure(OrchError):
    """Give up: running the same thing again will not succeed."""

    exit_code = 1


class EffectFailed(PermanentFailure):
    """An effect ran and reported failure; the ledger records it as failed."""

    exit_code = 1
