"""base64url without padding (RFC 4648 section 5): how keys, salts, commitments, match
tokens and sealed values are written as text, in one place.

Through binascii directly: the base64 module's wrappers cost more than the coding itself
for 16- and 32-byte values, which the field proofs code dozens of times per record.
"""

from __future__ import annotations

import binascii

_TO_URLSAFE = bytes.maketrans(b"+/", b"-_")
_FROM_URLSAFE = bytes.maketrans(b"-_", b"+/")


def encode(data: bytes) -> str:
    return binascii.b2a_base64(data, newline=False).rstrip(b"=").translate(_TO_URLSAFE).decode()


def decode(text: str) -> bytes:
    """The bytes of base64url ``text`` (padded or not). Strict: raises ValueError on any
    character outside the alphabet, where a lenient decoder would skip it, so text that
    decoded is exactly the text that was encoded."""
    raw = text.encode("ascii")
    if b"+" in raw or b"/" in raw:  # standard base64's letters: not this text's
        raise ValueError(f"not base64url text: {text[:40]!r} holds '+' or '/'")
    return binascii.a2b_base64(
        raw.translate(_FROM_URLSAFE) + b"=" * (-len(text) % 4), strict_mode=True
    )
