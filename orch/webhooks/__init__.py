"""Webhooks: check who sent a delivery and turn its bytes into small records.

Used by the relay (`orch.app.relay`, the HTTP server that receives deliveries), by
`orch event` and by the inbox's handlers (`orch.engine.deliveries`). Nothing here talks
HTTP to anyone (no httpx): a webhook is only received. Signatures are
checked over the raw bytes before anything is parsed; parsing never trusts a field it does
not need and never keeps the legacy Gitea `secret` field.
"""
