"""The environment's part: ORCH_<SECTION>_<KEY> overrides, the ORCH_* names that are
no override (RESERVED_VARIABLES), and the variables that hold secrets."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from orch.config.defaults import DEFAULTS
from orch.config.sections import ENV_SECTIONS

if TYPE_CHECKING:
    from orch.config.validator import Validator

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}

# ORCH_* variables that are not ORCH_<SECTION>_<KEY> overrides. Any other ORCH_* variable
# is a configuration error (a misspelt kill-switch must not be silently ignored): a new
# variable that orch reads or sets must be listed here.
RESERVED_VARIABLES = frozenset(
    {
        # read by orch itself
        "ORCH_CONFIG",
        "ORCH_HOME",
        "ORCH_LOG_FORMAT",
        "ORCH_LOG_LEVEL",
        "ORCH_LOG_FILE",
        "ORCH_ACTOR",
        "ORCH_FAULT",
        "ORCH_BOOT_ID",
        "ORCH_HOST",
        # set by orch for the commands it runs (an agent may run orch in turn)
        "ORCH_TASK_KEY",
        "ORCH_TASK_TITLE",
        "ORCH_TASK_REPO",
        "ORCH_STAGE",
        "ORCH_RETRIES",
        "ORCH_BRANCH",
        "ORCH_WORKTREE",
        "ORCH_PROMPT_FILE",
        "ORCH_VERDICT_FILE",
        "ORCH_JOB_ID",
        "ORCH_ATTEMPT",
        "ORCH_AGENT",
        "ORCH_NOTE",
        "ORCH_HOOK",
        "ORCH_CI_SHA",
    }
)


def apply_env(raw: dict[str, Any], env: Mapping[str, str], v: Validator) -> dict[tuple[str, str], str]:
    """Lay ORCH_<SECTION>_<KEY> over `raw`; returns which variable set which key."""
    origin: dict[tuple[str, str], str] = {}
    for section in ENV_SECTIONS:
        table = raw.get(section)
        if not isinstance(table, dict):
            continue
        for key, current in list(table.items()):
            if isinstance(current, dict | list):
                continue
            var = f"ORCH_{section}_{key}".upper()
            if var not in env:
                continue
            origin[(section, key)] = var
            text = env[var].strip()
            default = DEFAULTS.get(section, {}).get(key, current)
            if isinstance(default, bool):
                if text.lower() in _TRUE:
                    table[key] = True
                elif text.lower() in _FALSE:
                    table[key] = False
                else:
                    v.problems.append((f"${var}", f"expected true or false, got {text!r}"))
            elif isinstance(default, int | float):
                # 300 in DEFAULTS may still be a number of seconds: take 0.5 as the file
                # would, and let the key's own check say whether it must be whole.
                try:
                    table[key] = int(text)
                except ValueError:
                    try:
                        table[key] = float(text)
                    except ValueError:
                        v.problems.append((f"${var}", f"expected a number, got {text!r}"))
            else:
                table[key] = text
    return origin


def unknown_variables(raw: dict[str, Any], env: Mapping[str, str], v: Validator) -> None:
    """An ORCH_* variable that sets nothing is an error: a typo must not keep a default."""
    named = {str(x) for x in env_values(raw)}
    settable: dict[str, str] = {}
    for section in ENV_SECTIONS:
        table = raw.get(section)
        if isinstance(table, dict):
            for key, value in table.items():
                settable[f"ORCH_{section}_{key}".upper()] = (
                    "table" if isinstance(value, dict | list) else "scalar"
                )
    for var in sorted(env):
        if not var.startswith("ORCH_") or var.startswith("ORCH_TEST_"):  # test suites' own knobs
            continue
        if var in RESERVED_VARIABLES or var in named:
            continue
        kind = settable.get(var)
        if kind == "scalar":
            continue
        if kind == "table":
            v.problems.append((f"${var}", "arrays and tables cannot be set from the environment"))
            continue
        import difflib  # only on this error path: start-up stays lean

        close = difflib.get_close_matches(var, [*settable, *RESERVED_VARIABLES], n=1)
        hint = f" (did you mean ${close[0]}?)" if close else ""
        v.problems.append((f"${var}", f"matches no configuration key{hint}; unset it"))


def env_values(node: Any) -> list[Any]:
    """The values of every `*_env` key: the variables that hold secrets."""
    out: list[Any] = []
    if isinstance(node, dict):
        for k, val in node.items():
            if isinstance(k, str) and k.endswith("_env") and isinstance(val, str) and val:
                out.append(val)
            else:
                out += env_values(val)
    elif isinstance(node, list):
        for val in node:
            out += env_values(val)
    return out
