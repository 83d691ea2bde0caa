"""The router's secrets: the consortium's match-token secret and the key it signs feed
records with. Both are required; the example consortium's public ones stand in only when
``ACTION_DEMO_KEYS`` asks for them (demo and tests), never by default."""

from __future__ import annotations

import logging

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from broker.errors import ConfigError
from broker.keys import key_from_file
from broker.match_tokens import MatchTokenKey
from broker.membership import MemberRegistry
from broker.settings import Settings

log = logging.getLogger("action.router")


def match_key_from(settings: Settings) -> MatchTokenKey:
    """The consortium's match-token secret; the example consortium's public one only when
    the settings ask for demo keys (``ACTION_DEMO_KEYS``), never by default."""
    if settings.match_secret is not None:
        secret = settings.match_secret.get_secret_value().encode()
        return MatchTokenKey(settings.match_key_version, secret)
    if not settings.demo_keys:
        raise ConfigError(
            "no match-token secret: the router will not hash identifiers with a public one",
            hint="set ACTION_MATCH_SECRET (ACTION_DEMO_KEYS=true for the example consortium "
            "on a development cluster)",
        )
    from policies.demo_keys import demo_match_secret  # the demo's, off the product path

    log.warning("ACTION_DEMO_KEYS: match tokens use the example consortium's public secret")
    return MatchTokenKey(settings.match_key_version, demo_match_secret())


def router_signing_key(
    registry: MemberRegistry, settings: Settings
) -> tuple[str, Ed25519PrivateKey]:
    """(kid, key) the router signs feed records with: the configured file's key under the
    registry's newest router key id; the demo key only when the settings ask for it."""
    if not registry.router_keys:
        raise ConfigError("members.yaml lists no router_keys: readers could not verify feeds")
    kid = registry.router_keys[-1].kid
    if settings.router_signing_key_file is not None:
        key: Ed25519PrivateKey = key_from_file(settings.router_signing_key_file, Ed25519PrivateKey)
        return kid, key
    if not settings.demo_keys:
        raise ConfigError(
            "no router signing key: feed records would carry no signature members can trust",
            hint="set ACTION_ROUTER_SIGNING_KEY_FILE (ACTION_DEMO_KEYS=true for the example "
            "consortium on a development cluster)",
        )
    from policies.demo_keys import demo_router_key  # the demo's, off the product path

    log.warning("ACTION_DEMO_KEYS: feed records carry the demo router key's signature")
    return kid, demo_router_key()
