"""A Plane project set up the way orch's docs tell an admin to: one state per status.

Spelled out here, not imported from the adapter, so that a rename in the adapter shows up
as a failing test rather than silently following into the fake.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import NamedTuple

from fakes.servers import FakePlane

# logical key -> (state name, group), in the order an admin would create them
ORCH_WORKFLOW: dict[str, tuple[str, str]] = {
    "backlog": ("Backlog", "backlog"),
    "to_analyse": ("To Analyse", "unstarted"),
    "analysis": ("Analysis", "started"),
    "in_progress": ("In Progress", "started"),
    "code_review": ("Code Review", "started"),
    "approved": ("Approved", "started"),
    "rejected": ("Rejected", "started"),
    "blocked": ("Blocked", "started"),
    "needs_input": ("Needs Input", "started"),
    "awaiting_deploy": ("Awaiting Deploy", "started"),
    "deploying": ("Deploying", "started"),
    "monitoring": ("Monitoring", "started"),
    "done": ("Done", "completed"),
    "cancelled": ("Cancelled", "cancelled"),
}


class SeededProject(NamedTuple):
    id: str
    states: dict[str, str]  # logical key -> state id (only the keys that were created)
    names: dict[str, str]  # state id -> name


def add_orch_project(
    fake: FakePlane,
    identifier: str,
    *,
    omit: Iterable[str] = (),
    rename: Mapping[str, str] | None = None,
    extra: Iterable[tuple[str, str]] = (),
) -> SeededProject:
    """A project with orch's workflow, minus the keys in `omit`, with some states renamed
    (`rename`: logical key -> name) and `extra` (name, group) states added at the end."""
    pid = fake.add_project(identifier)
    skip = set(omit)
    states: dict[str, str] = {}
    names: dict[str, str] = {}
    for logical, (name, group) in ORCH_WORKFLOW.items():
        if logical in skip:
            continue
        name = (rename or {}).get(logical, name)
        sid = fake.add_state(pid, name, group)
        states[logical], names[sid] = sid, name
    for name, group in extra:
        names[fake.add_state(pid, name, group)] = name
    return SeededProject(pid, states, names)
