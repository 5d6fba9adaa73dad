"""Prompt templates: which $variables an agent's prompt may use, and filling them in."""

from __future__ import annotations

import re
from collections.abc import Mapping

# What a prompt template may use; rendering fails on anything else.
PROMPT_VARIABLES = frozenset(
    {"agent", "task_key", "task_title", "stage", "retries", "worktree", "branch", "repo", "attempt", "note"}
)


def template_names(template: str) -> set[str]:
    import string

    names = set()
    for match in string.Template.pattern.finditer(template):
        name = match.group("named") or match.group("braced")
        if name:
            names.add(name)
    return names


def render_template(template: str, values: Mapping[str, str]) -> str:
    """A prompt template with its $variables filled in (`string.Template` syntax).

    A `$` that does not start a name ("This costs $5", a lone `$`) is kept as written
    instead of failing every job; `$$` is a literal `$`. An unknown $name raises
    KeyError (the configuration refuses it at load).
    """
    import string

    def fill(m: re.Match[str]) -> str:
        if m.group("escaped") is not None:
            return "$"
        name = m.group("named") or m.group("braced")
        if name is not None:
            return values[name]
        return m.group(0)  # invalid: not a placeholder, keep it

    return string.Template.pattern.sub(fill, template)
