"""Typed, frozen configuration: defaults < config file < ACTION_* environment variables.

The config file is YAML, named by ``ACTION_CONFIG_FILE`` (or ``--config`` on the CLIs).
Unknown keys are rejected so that a typo never silently falls back to a default. Two
kinds of settings build on this: the router's and operators' (:mod:`broker.settings`) and
a member's SDK's (:mod:`broker.member_settings`), each holding only what its side needs.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from broker.connection import KafkaConnection
from broker.errors import ConfigError

S = TypeVar("S", bound="ActionSettings")


class _YamlFileSource(PydanticBaseSettingsSource):
    """Reads the YAML file named by ACTION_CONFIG_FILE, if any."""

    def __init__(self, settings_cls: type[BaseSettings], path: Path | None) -> None:
        super().__init__(settings_cls)
        self._data: dict[str, Any] = {}
        if path is None:
            return
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
        if loaded is None:
            return
        if not isinstance(loaded, dict):
            raise ConfigError(
                f"config file {path}: expected a mapping of settings at the top level, "
                f"found {type(loaded).__name__}"
            )
        self._data = loaded

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return self._data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self._data)


class ActionSettings(BaseSettings):
    """ACTION_* variables over the ACTION_CONFIG_FILE file over the defaults."""

    model_config = SettingsConfigDict(
        env_prefix="ACTION_", extra="forbid", frozen=True, populate_by_name=True
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        config_file = os.environ.get("ACTION_CONFIG_FILE")
        file_source = _YamlFileSource(settings_cls, Path(config_file) if config_file else None)
        return (init_settings, env_settings, file_source)

    @classmethod
    def load(cls: type[S], **overrides: Any) -> S:
        """The settings, with validation failures turned into a readable ConfigError."""
        try:
            return cls(**{k: v for k, v in overrides.items() if v is not None})
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}"
                for err in exc.errors()
            )
            raise ConfigError(
                f"invalid configuration: {problems}",
                hint="check ACTION_* environment variables and the file in ACTION_CONFIG_FILE",
            ) from exc


class KafkaClientSettings(ActionSettings):
    """How a client reaches Kafka: what the router and a member's SDK both need."""

    kafka_bootstrap: str | None = Field(
        default=None,
        description="host:port of an existing Kafka cluster; when unset, tools use the local one",
    )
    kafka_security_protocol: str = Field(
        default="SASL_PLAINTEXT",
        pattern=r"^(PLAINTEXT|SASL_PLAINTEXT|SASL_SSL|SSL)$",
        description="how clients reach ACTION_KAFKA_BOOTSTRAP (the local cluster says itself)",
    )
    kafka_sasl_username: str | None = Field(
        default=None, description="SCRAM-SHA-512 user; unset with the local cluster: its admin"
    )
    kafka_sasl_password: SecretStr | None = Field(default=None)
    kafka_ssl_cafile: Path | None = Field(
        default=None, description="PEM CA bundle that signed the brokers' certificates"
    )

    def connection_to(self, bootstrap: str) -> KafkaConnection:
        """A connection to ``bootstrap`` as the ACTION_KAFKA_* settings describe it."""
        password = self.kafka_sasl_password
        return KafkaConnection(
            bootstrap,
            security_protocol=self.kafka_security_protocol,
            username=self.kafka_sasl_username,
            password=password.get_secret_value() if password else None,
            ssl_cafile=str(self.kafka_ssl_cafile) if self.kafka_ssl_cafile else None,
        )
