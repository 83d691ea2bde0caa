"""A member's SDK settings: what ``Publisher``, ``FeedReader``, ``action-publish`` and
``action-feed`` are configured with, and nothing of the router's.

ACTION_* variables over the ACTION_CONFIG_FILE file over the defaults, as everywhere
(:mod:`broker.configuration`): ``ACTION_KAFKA_BOOTSTRAP`` and the ``ACTION_KAFKA_*``
security settings, ``ACTION_MEMBER``, ``ACTION_SIGNING_KEY_FILE``,
``ACTION_ENCRYPTION_KEY_FILE``, ``ACTION_JOURNAL_FILE`` and ``ACTION_TRUST_STORE``.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import AliasChoices, Field

from broker.configuration import KafkaClientSettings
from broker.errors import ConfigError
from broker.events import MEMBER_ID_PATTERN
from policies import POLICY_DIR


class MemberSettings(KafkaClientSettings):
    member: str | None = Field(
        default=None, pattern=MEMBER_ID_PATTERN, description="your member id (members.yaml)"
    )
    signing_key_file: Path | None = Field(
        default=None, description="your Ed25519 private key (PEM, 0600), to publish"
    )
    encryption_key_file: Path | None = Field(
        default=None, description="your X25519 private key (PEM, 0600), to open sealed fields"
    )
    journal_file: Path | None = Field(
        default=None,
        description="your publication journal: the ids of the indicators you published, "
        "so a retraction of any other is refused (default: "
        "$XDG_STATE_HOME/action-broker/<member>.published-ids)",
    )
    trust_store: Path = Field(
        default=POLICY_DIR,
        # ACTION_POLICY_DIR too: on a development machine the router's folder is the one.
        validation_alias=AliasChoices("ACTION_TRUST_STORE", "ACTION_POLICY_DIR", "trust_store"),
        description="the consortium's members.yaml (or a folder holding it): the public keys "
        "of the members and the router; default: the example consortium's",
    )

    def journal_path(self, member: str) -> Path:
        """The member's publication journal (producers.journal): ACTION_JOURNAL_FILE, else
        ``$XDG_STATE_HOME/action-broker/<member>.published-ids`` (state that must outlive
        a cache clean-up), else the same under ``~/.local/state``."""
        if self.journal_file is not None:
            return self.journal_file
        xdg = os.environ.get("XDG_STATE_HOME")
        base = Path(xdg) if xdg else Path.home() / ".local" / "state"
        return base / "action-broker" / f"{member}.published-ids"

    def member_id(self, given: str | None) -> str:
        """``--member``, else ACTION_MEMBER; it must be a member of the consortium (its
        trust store), so a typo is told at once, not as a Kafka failure later."""
        member = given or self.member
        if not member:
            raise ConfigError("no member id", hint="pass --member or set ACTION_MEMBER")
        from broker.membership import load_trust_store

        known = [m.id for m in load_trust_store(self.trust_store).members]
        if member not in known:
            raise ConfigError(
                f"{member!r} is not a member of the consortium ({self.trust_store})",
                hint=f"members: {', '.join(known)}",
            )
        return member
