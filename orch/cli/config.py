"""`orch config`: the effective configuration (secrets redacted) and its check."""

from __future__ import annotations

import typer

from orch.cli.context import config_path
from orch.cli.options import JSON
from orch.cli.render import emit_json, print_findings, store_location

app = typer.Typer(
    name="config", help="Inspect the configuration.\n\nExample: orch config show", no_args_is_help=True
)

_SECRET_WORDS = ("token", "secret", "passw", "api_key", "apikey", "credential")


def redact(value: object, key: str = "") -> object:
    """Hide anything that looks like a secret, whatever its case: a value under a secret-
    sounding key (keys ending in _env only name a variable), and the credentials inside a
    URL (`user:password@`, `/bot<token>`, `?token=`)."""
    if isinstance(value, dict):
        return {k: redact(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v, key) for v in value]
    k = key.lower()
    if any(w in k for w in _SECRET_WORDS) and not k.endswith(("_env", "pass_env")) and value:
        return "***"
    if isinstance(value, str) and "://" in value:
        from orch.adapters.http import redact as redact_url

        return redact_url(value)
    return value


@app.command("show")
def config_show(json_: bool = JSON) -> None:
    """Print the effective configuration (file + ORCH_* overrides), secrets redacted.

    Example: ORCH_TRANSITION_LEASE_ENABLED=false orch config show --json
    """
    from orch import config as config_mod

    cfg = config_mod.load(config_path())
    data = {
        "source": str(cfg.source) if cfg.source else None,
        "state_dir": str(cfg.state_dir),
        "db_path": str(cfg.store.db_path),
        "store": store_location(cfg),
        "config": redact(cfg.raw or {}),
    }
    if json_:
        emit_json(data)
        return
    import tomli_w

    typer.echo(f"# source: {data['source'] or 'embedded defaults'}\n# database: {data['store']}")
    typer.echo(tomli_w.dumps(redact(cfg.raw or {})))  # type: ignore[arg-type]


@app.command("check")
def config_check(
    online: bool = typer.Option(False, "--online", help="Also make one cheap call to each integration."),
    json_: bool = JSON,
) -> None:
    """Validate the configuration and what it points at; each finding names the key and the fix.

    Exit 2 when an error is found.

    Example: orch config check --json
    """
    from orch import config as config_mod
    from orch.app import checks
    from orch.errors import ConfigError

    cfg: config_mod.Config | None = None
    try:
        loaded = config_mod.load(config_path())
    except ConfigError as e:
        # A configuration that does not load is reported like any finding, all of its
        # problems at once, on stdout with --json.
        findings = checks.load_findings(e)
    else:
        cfg = loaded
        findings = checks.config_check(loaded)
        if online:
            findings += checks.online_checks(loaded)
    if json_:
        emit_json({"ok": not any(f["level"] == "error" for f in findings), "findings": findings})
    else:
        print_findings(findings)
        if not findings and cfg is not None:
            typer.echo(f"ok: {cfg.source or 'embedded defaults'}")
    raise typer.Exit(2 if any(f["level"] == "error" for f in findings) else 0)
