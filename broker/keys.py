"""Private keys from files (PEM, PKCS#8), or, when asked, the example consortium's demo keys.

Key files must not be readable by group or others (mode 0600), like ssh's keys: a key
that others can read is refused, with the chmod that fixes it. Keys are never logged.
"""

from __future__ import annotations

import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from broker.errors import ConfigError


def read_secret_file(path: Path, what: str = "key file") -> bytes:
    """The bytes of a file holding a secret, which only its owner may read (0600)."""
    try:
        mode = path.stat().st_mode
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the {what}: {exc.strerror}") from exc
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(
            f"{path}: the {what} is readable by others (mode {mode & 0o777:o})",
            hint=f"chmod 600 {path}",
        )
    return data


def _read_private(path: Path) -> object:
    data = read_secret_file(path)
    try:
        return serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{path}: not an unencrypted PEM private key ({exc})") from exc


K = TypeVar("K", Ed25519PrivateKey, X25519PrivateKey)
_KIND_NAMES: dict[type, str] = {Ed25519PrivateKey: "Ed25519", X25519PrivateKey: "X25519"}


def key_from_file(key_file: Path, kind: type) -> Any:
    """The private key in ``key_file``, which must be of ``kind``."""
    key = _read_private(key_file)
    if not isinstance(key, kind):
        raise ConfigError(f"{key_file}: not an {_KIND_NAMES[kind]} private key")
    return key


def _member_key(
    member: str,
    key_file: Path | None,
    demo: bool,
    kind: type,
    demo_key: Callable[[str], K],
    option: str,
    purpose: str,
) -> K:
    if key_file is not None:
        key: K = key_from_file(key_file, kind)
        return key
    if demo:
        return demo_key(member)
    raise ConfigError(
        f"no {purpose} key for {member}",
        hint=f"pass {option} FILE (PEM), or --demo-keys for the example consortium",
    )


def signing_key(member: str, key_file: Path | None, *, demo: bool) -> Ed25519PrivateKey:
    from policies.demo_keys import demo_signing_key  # the demo's, off the product path

    return _member_key(
        member, key_file, demo, Ed25519PrivateKey, demo_signing_key, "--signing-key", "signing"
    )


def encryption_key(member: str, key_file: Path | None, *, demo: bool) -> X25519PrivateKey:
    from policies.demo_keys import demo_encryption_key  # the demo's, off the product path

    return _member_key(
        member,
        key_file,
        demo,
        X25519PrivateKey,
        demo_encryption_key,
        "--encryption-key",
        "encryption",
    )
