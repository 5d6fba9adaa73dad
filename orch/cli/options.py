"""Options and arguments that several commands share, each defined once."""

from __future__ import annotations

import typer

from orch.cli.complete import task_keys

JSON = typer.Option(False, "--json", help="Print JSON (the shapes are in docs/cli.md).")

# The task-key argument of every command that takes one, with its completion.
KEY = typer.Argument(..., help="Task key.", autocompletion=task_keys)

REASON = typer.Option(None, "--reason", "-r", help="Why, for the audit trail and the message.")
