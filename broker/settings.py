"""The router's and operators' settings (ACTION_* variables, see :mod:`broker.configuration`).
A member's SDK has its own, smaller settings: :mod:`broker.member_settings`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import AliasChoices, Field, SecretStr

from broker.configuration import KafkaClientSettings
from policies import POLICY_DIR

#: The Apache Kafka release the project develops and tests against (see deploy/kafka/pom.xml).
KAFKA_VERSION = "4.4.0"


def _default_cache_dir() -> Path:
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "action-broker"


class Settings(KafkaClientSettings):
    """Settings shared by every action-broker command and service."""

    kafka_version: str = Field(default=KAFKA_VERSION, description="Apache Kafka release to fetch")
    kafka_home: Path | None = Field(
        default=None,
        validation_alias=AliasChoices("ACTION_KAFKA_HOME", "KAFKA_HOME", "kafka_home"),
        description="an existing Kafka installation (its libs/ folder is used, nothing is fetched)",
    )
    cache_dir: Path = Field(
        default_factory=_default_cache_dir,
        description="where fetched Kafka jars and local cluster state live",
    )
    kafka_heap: str = Field(default="512m", pattern=r"^\d+[kmgKMG]$", description="broker -Xmx")
    kafka_start_timeout_s: float = Field(default=90.0, gt=0)

    # --- the router (action-broker run) --------------------------------------------------
    policy_dir: Path = Field(default=POLICY_DIR, description="the policy folder in force")
    router_group: str = Field(default="action-router", description="consumer group id")
    router_user: str = Field(
        default="action-router",
        pattern=r"^[A-Za-z0-9._-]{1,80}$",
        description="the router's SCRAM user (principal User:<name>); provisioning grants it "
        "the inbound, feed, audit, DLQ and ledger topics and the transactional ids <group>.*",
    )
    credentials_dir: Path | None = Field(
        default=None,
        description="where provisioning keeps the SCRAM passwords it creates, one 0600 file "
        "per user (default: <cache_dir>/credentials)",
    )
    router_instance: str = Field(
        default="0",
        pattern=r"^[A-Za-z0-9_-]{1,40}$",
        description="stable per instance: its transactional id is <group>.<instance>, so a "
        "restarted instance fences its predecessor at once",
    )
    router_batch_records: int = Field(default=500, ge=1, le=10_000, description="per transaction")
    router_poll_transactions: int = Field(
        default=4,
        ge=1,
        le=16,
        description="transactions' worth of records taken per poll: the routing workers "
        "route the next transaction's records while the current one commits",
    )
    router_workers: int = Field(
        default=2,
        ge=0,
        le=64,
        description="processes that decode, verify, decide and encode beside the Kafka I/O; "
        "0 does it all in the router's own process",
    )
    router_worker_deadline_s: float = Field(
        default=60.0,
        gt=0,
        description="silence from routing workers that have work, after which the pool is "
        "replaced and the transaction aborted",
    )
    router_transaction_deadline_s: float = Field(
        default=10.0,
        gt=0,
        description="bound on each transactional call (a commit flushes the whole "
        "transaction); over it, the producer is replaced",
    )
    router_offsets_deadline_s: float = Field(
        default=4.0,
        gt=0,
        description="bound on send_offsets_to_transaction, a small request librdkafka can "
        "stall on past its own timeout when a coordinator's broker dies (librdkafka #5456); "
        "over it, the producer is replaced",
    )
    router_transaction_timeout_ms: int = Field(default=60_000, ge=1_000)
    router_session_timeout_ms: int = Field(
        default=10_000, ge=6_000, description="how soon a silent instance's partitions move"
    )
    router_max_record_bytes: int = Field(default=1_048_576, ge=1_024)
    router_abort_ratio: float = Field(
        default=0.0,
        ge=0.0,
        lt=1.0,
        description="FAULT INJECTION for tests: abort this share of transactions at random",
    )
    router_fault_crash_key: str | None = Field(
        default=None,
        description="FAULT INJECTION for tests: a routing worker kills itself (SIGKILL) on "
        "the record with this key, as a crash in a C library would",
    )
    member_produce_byte_rate: int = Field(
        default=2 * 1024 * 1024,
        ge=1024,
        description="Kafka quota: bytes/s a member's principal may produce (members.yaml "
        "quotas override it per member)",
    )
    member_request_percentage: float = Field(
        default=50.0,
        gt=0,
        le=1000,
        description="Kafka quota: share of a broker I/O thread a member's principal may use",
    )
    metrics_host: str = Field(default="127.0.0.1")
    metrics_port: int = Field(default=9464, ge=0, le=65535, description="0 picks a free port")
    match_secret: SecretStr | None = Field(
        default=None, description="the consortium's match-token HMAC secret (required)"
    )
    match_key_version: int = Field(default=1, ge=0)
    router_signing_key_file: Path | None = Field(
        default=None,
        description="the router's Ed25519 key (PEM, 0600) for feed records (required)",
    )
    demo_keys: bool = Field(
        default=False,
        description="DEMO AND TESTS ONLY: the example consortium's public match secret and "
        "router key stand in for match_secret and router_signing_key_file when unset",
    )

    @property
    def router_principal(self) -> str:
        return f"User:{self.router_user}"

    @property
    def credentials_folder(self) -> Path:
        return self.credentials_dir or self.cache_dir / "credentials"


def load_settings(**overrides: Any) -> Settings:
    """Build :class:`Settings`, turning validation failures into a readable ConfigError."""
    return Settings.load(**overrides)
