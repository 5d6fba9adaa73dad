"""Webhook signatures: HMAC-SHA256 of the raw body, compared in constant time.

Plane sends the bare hex digest (`X-Plane-Signature`), Gitea sends it bare too
(`X-Gitea-Signature`) and GitHub-style as `X-Hub-Signature-256: sha256=<hex>`. Always
verify the bytes as received: Gitea pretty-prints its JSON and Plane signs its own
`json.dumps` output, so a re-serialisation would never match. The check answers only yes
or no; malformed input (no header, not hex, wrong length, an empty secret) is a no, never
an exception a sender could use to tell cases apart.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping

# Most specific first: a Gitea delivery carries all of these with the same digest.
SIGNATURE_HEADERS = ("X-Plane-Signature", "X-Gitea-Signature", "X-Hub-Signature-256", "X-Gogs-Signature")
_PREFIX = "sha256="
_HEX_LEN = hashlib.sha256().digest_size * 2


def sign_hmac_sha256(secret: bytes, body: bytes) -> str:
    """The hex HMAC-SHA256 of `body` under `secret` (what a sender puts in its header)."""
    return hmac.new(secret, body, hashlib.sha256).hexdigest()


def verify_hmac_sha256(secret: bytes, body: bytes, signature_header: str | None) -> bool:
    """True when `signature_header` (bare hex or `sha256=<hex>`) is the HMAC of `body`.

    An empty secret verifies nothing: anyone can compute an HMAC under the empty key.
    """
    if not isinstance(secret, bytes | bytearray) or not secret:
        return False
    if not isinstance(body, bytes | bytearray) or not isinstance(signature_header, str):
        return False
    value = signature_header.strip()
    if value[: len(_PREFIX)].lower() == _PREFIX:
        value = value[len(_PREFIX) :]
    if len(value) != _HEX_LEN:
        return False
    try:
        given = bytes.fromhex(value)
    except ValueError:
        return False
    expected = hmac.new(bytes(secret), bytes(body), hashlib.sha256).digest()
    return hmac.compare_digest(expected, given)


# The headers each source signs with: a Plane endpoint never reads a Gitea signature header.
SOURCE_SIGNATURE_HEADERS = {
    "plane": ("X-Plane-Signature",),
    "gitea": ("X-Gitea-Signature", "X-Hub-Signature-256", "X-Gogs-Signature"),
}


def find_signature(headers: Mapping[str, str], source: str | None = None) -> str | None:
    """The signature a delivery carries, from the first of SIGNATURE_HEADERS present (any case);
    with `source`, only from that source's own headers."""
    lowered = {k.lower(): v for k, v in headers.items()}
    names = SOURCE_SIGNATURE_HEADERS.get(source, ()) if source else SIGNATURE_HEADERS
    for name in names:
        value = lowered.get(name.lower())
        if value:
            return value
    return None
