"""Adapters: the only places with subprocesses or HTTP."""
