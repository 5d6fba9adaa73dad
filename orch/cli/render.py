"""Rendering shared by the typer commands and the fast path; imports neither typer nor rich."""

from __future__ import annotations

import json
import sys
from typing import Any


def emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def advance_result(result: Any, *, as_json: bool) -> int:
    """Print an AdvanceResult; returns its exit code."""
    if as_json:
        emit_json(result.as_dict())
    elif result.outcome == "advanced":
        print(f"{result.task}: {result.stage} -> {result.to_stage}")
    else:
        stream = sys.stderr if result.exit_code else sys.stdout
        print(f"{result.task}: {result.outcome} at {result.stage}: {result.message}", file=stream)
    return int(result.exit_code)
