"""The webhook relay: check who sent a delivery and turn its bytes into small records.

Nothing here talks HTTP to anyone (no httpx): the relay only receives. Signatures are
checked over the raw bytes before anything is parsed; parsing never trusts a field it does
not need and never keeps the legacy Gitea `secret` field.
"""
