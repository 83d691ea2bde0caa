"""How a client reaches Kafka: the bootstrap address plus who it is (SASL) and whom it
trusts (TLS). One value, passed to every Kafka client the project opens, so no client
can forget the credentials and fall back to an anonymous connection."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from typing import Any

from broker.errors import ConfigError

SECURITY_PROTOCOLS = ("PLAINTEXT", "SASL_PLAINTEXT", "SASL_SSL", "SSL")


class _ScramIsNotCleartext(logging.Filter):
    """kafka-python warns "Exchanging credentials in the clear" for every SCRAM login
    over SASL_PLAINTEXT, once per connection. SCRAM never sends the password (only a
    salted proof), so on the local cluster the warning is wrong and drowns real ones.
    Only that one message is dropped."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "credentials in the clear" not in record.getMessage()


logging.getLogger("kafka.net.sasl.scram").addFilter(_ScramIsNotCleartext())
SASL_MECHANISM = "SCRAM-SHA-512"


@dataclass(frozen=True)
class KafkaConnection:
    bootstrap: str
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str = SASL_MECHANISM
    username: str | None = None
    # Never printed: repr=False keeps it out of logs, tracebacks and test output.
    password: str | None = field(default=None, repr=False)
    #: PEM file of the CA that signed the brokers' certificates (TLS protocols only).
    ssl_cafile: str | None = None

    def __post_init__(self) -> None:
        if self.security_protocol not in SECURITY_PROTOCOLS:
            raise ConfigError(
                f"unknown Kafka security protocol {self.security_protocol!r}",
                hint=f"use one of {', '.join(SECURITY_PROTOCOLS)}",
            )
        if self.uses_sasl and not (self.username and self.password):
            raise ConfigError(
                f"{self.security_protocol} needs a SASL username and password",
                hint="set ACTION_KAFKA_SASL_USERNAME and ACTION_KAFKA_SASL_PASSWORD",
            )

    @property
    def uses_sasl(self) -> bool:
        return self.security_protocol.startswith("SASL_")

    @property
    def uses_tls(self) -> bool:
        return self.security_protocol in ("SASL_SSL", "SSL")

    @property
    def principal(self) -> str:
        """The Kafka principal the brokers see for this connection."""
        return f"User:{self.username}" if self.uses_sasl else "User:ANONYMOUS"

    def as_user(self, username: str, password: str | None) -> KafkaConnection:
        """The same cluster, reached as another SASL user."""
        return replace(self, username=username, password=password)

    def security(self) -> dict[str, Any]:
        """kafka-python settings for authentication and encryption (no address)."""
        settings: dict[str, Any] = {"security_protocol": self.security_protocol}
        if self.uses_sasl:
            settings |= {
                "sasl_mechanism": self.sasl_mechanism,
                "sasl_plain_username": self.username,
                "sasl_plain_password": self.password,
            }
        if self.uses_tls:
            settings |= {"ssl_check_hostname": True}
            if self.ssl_cafile:
                settings |= {"ssl_cafile": self.ssl_cafile}
        return settings

    def client_config(self) -> dict[str, Any]:
        """Keyword arguments for any kafka-python client: address plus :meth:`security`."""
        return {"bootstrap_servers": self.bootstrap, **self.security()}

    def librdkafka_config(self) -> dict[str, Any]:
        """The same connection as confluent-kafka (librdkafka) configuration: the router's
        own clients use it (the members' SDK stays on kafka-python). Their log lines go
        through the ``kafka.librdkafka`` logger, where broker.quiet_logs tames them."""
        config: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap,
            "security.protocol": self.security_protocol,
            "logger": logging.getLogger("kafka.librdkafka"),
        }
        if self.uses_sasl:
            config |= {
                "sasl.mechanism": self.sasl_mechanism,
                "sasl.username": self.username,
                "sasl.password": self.password,
            }
        if self.uses_tls:
            config |= {"ssl.endpoint.identification.algorithm": "https"}
            if self.ssl_cafile:
                config |= {"ssl.ca.location": self.ssl_cafile}
        return config

    def environment(self) -> dict[str, str]:
        """ACTION_KAFKA_* variables that make a child process (the router) connect so."""
        env = {
            "ACTION_KAFKA_BOOTSTRAP": self.bootstrap,
            "ACTION_KAFKA_SECURITY_PROTOCOL": self.security_protocol,
        }
        if self.uses_sasl:
            env["ACTION_KAFKA_SASL_USERNAME"] = self.username or ""
            env["ACTION_KAFKA_SASL_PASSWORD"] = self.password or ""
        if self.ssl_cafile:
            env["ACTION_KAFKA_SSL_CAFILE"] = self.ssl_cafile
        return env

    def __str__(self) -> str:
        who = f" as {self.username}" if self.uses_sasl else ""
        return f"{self.bootstrap} ({self.security_protocol}{who})"
