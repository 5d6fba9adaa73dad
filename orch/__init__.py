"""orch: a daemonless orchestrator for agent-run delivery pipelines."""

__version__ = "0.1.0"
