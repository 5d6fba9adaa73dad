"""orch's logical statuses and a Plane project's states: which shows which.

orch speaks of logical statuses (`code_review`, `done`, ...); a Plane project has states
with names, UUIDs and a group. Each project maps a logical key to a state NAME (its
`states` table in orch.toml, else `DEFAULT_NAMES`); a key the project lacks falls back
within the project (`FALLBACKS`: a project without "Code Review" shows review as "In
Progress"), and `done` / `cancelled` without a matching name are found by group. The
group decides what is terminal, in both directions: a `completed` state is `done` whatever
it is called, and a terminal state is never chosen for a non-terminal key (a Done state
someone named "Approved" must not read as a verdict, nor receive one).

A badly configured project can list one state UUID under two names (a Done aliased onto
Approved): the cache keeps every (id, name), and an id alone resolves to the terminal
group among its names (`group_of`), so such an item is never read as a verdict.
"""

from __future__ import annotations

from typing import Final

from orch.adapters.plane import TERMINAL_GROUPS, State

DEFAULT_NAMES: Final[dict[str, str]] = {
    "backlog": "Backlog",
    "to_analyse": "To Analyse",
    "analysis": "Analysis",
    "in_progress": "In Progress",
    "code_review": "Code Review",
    "approved": "Approved",
    "rejected": "Rejected",
    "blocked": "Blocked",
    "needs_input": "Needs Input",
    "awaiting_deploy": "Awaiting Deploy",
    "deploying": "Deploying",
    "monitoring": "Monitoring",
    "done": "Done",
    "cancelled": "Cancelled",
}
"""The state name each logical key has in a project that does not rename it."""

FALLBACKS: Final[dict[str, str | None]] = {
    "backlog": None,
    "to_analyse": "backlog",
    "analysis": "in_progress",
    "in_progress": None,
    "code_review": "in_progress",
    # Verdicts and pauses are things people say; showing them as anything else would lie.
    "approved": None,
    "rejected": None,
    "blocked": None,
    "needs_input": None,
    "awaiting_deploy": "in_progress",
    "deploying": "in_progress",
    "monitoring": "in_progress",
    "done": None,  # by group instead: GROUP_OF
    "cancelled": None,
}
"""The key to use, in the same project, when a project has no state for a key."""

GROUP_OF: Final[dict[str, str]] = {"done": "completed", "cancelled": "cancelled"}
"""The terminal keys: their state must be in this group, and is found by it when no name matches."""

STAGE_STATUS: Final[dict[str, str]] = {
    "analysis": "analysis",
    "development": "in_progress",
    "review": "code_review",
    "merge": "code_review",
    "deploy": "awaiting_deploy",
    "monitoring": "monitoring",
    "done": "done",
    "cancelled": "cancelled",
}
"""What a task's stage shows as in the tracker; a stage not listed moves nothing."""


def group_of(aliases: list[State]) -> str:
    """The group of a state UUID listed under several names (a badly configured project):
    a terminal group wins, so a Done aliasing Approved is never read as a verdict and orch
    never acts on an item that may be finished."""
    groups = [s.group for s in aliases]
    for terminal in ("cancelled", "completed"):
        if terminal in groups:
            return terminal
    return groups[0]


def by_name(states: list[State], name: str, group: str | None) -> State | None:
    """The state called `name` (exactly, else ignoring case) whose group fits: `group` for a
    terminal key, any non-terminal group otherwise."""

    def fits(s: State) -> bool:
        return s.group == group if group is not None else s.group not in TERMINAL_GROUPS

    exact = [s for s in states if s.name == name and fits(s)]
    if exact:
        return exact[0]
    folded = name.strip().casefold()
    return next((s for s in states if s.name.strip().casefold() == folded and fits(s)), None)
