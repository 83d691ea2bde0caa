"""Match tokens: a keyed hash of one normalized identifier, HMAC-SHA-256 over its kind and
value with the consortium's secret, ``mt1.k<key version>.<base64url mac>``. Members see
"the same seller" without the raw value, and tokens survive a key rotation. Whoever holds
the secret can test guesses against tokens, so only the operator does: the router, and
the operator's own workspace (``action-feed serve --match-secret-file``). Pure code."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field

from broker import base64url
from broker.contract import MATCH_TOKEN_PREFIX


@dataclass(frozen=True)
class MatchTokenKey:
    """The consortium's HMAC secret for match tokens, with its version."""

    version: int
    secret: bytes = field(repr=False)


def match_token(key: MatchTokenKey, kind: str, normalized: str) -> str:
    """Keyed hash of one normalized identifier; ``kind`` separates e-mails from phones."""
    mac = hmac.new(key.secret, f"{kind}\x1f{normalized}".encode(), hashlib.sha256).digest()
    return f"{MATCH_TOKEN_PREFIX}.k{key.version}.{base64url.encode(mac)}"
