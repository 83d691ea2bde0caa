from __future__ import annotations

from pathlib import Path

import pytest

from broker.errors import ConfigError
from broker.settings import KAFKA_VERSION, load_settings


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("ACTION_CONFIG_FILE", "ACTION_KAFKA_HEAP", "KAFKA_HOME", "ACTION_KAFKA_HOME"):
        monkeypatch.delenv(name, raising=False)


def test_defaults() -> None:
    settings = load_settings()
    assert settings.kafka_version == KAFKA_VERSION
    assert settings.kafka_heap == "512m"
    assert settings.kafka_home is None


def test_environment_overrides_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "action.yaml"
    config.write_text("kafka_heap: 256m\nkafka_start_timeout_s: 12\n")
    monkeypatch.setenv("ACTION_CONFIG_FILE", str(config))
    monkeypatch.setenv("ACTION_KAFKA_HEAP", "1g")
    settings = load_settings()
    assert settings.kafka_heap == "1g"
    assert settings.kafka_start_timeout_s == 12


def test_kafka_home_is_read_without_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_HOME", "/opt/kafka")
    assert load_settings().kafka_home == Path("/opt/kafka")


def test_unknown_key_in_file_is_rejected(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "action.yaml"
    config.write_text("kafka_heep: 256m\n")
    monkeypatch.setenv("ACTION_CONFIG_FILE", str(config))
    with pytest.raises(ConfigError, match="kafka_heep"):
        load_settings()


def test_invalid_value_names_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ACTION_KAFKA_HEAP", "lots")
    with pytest.raises(ConfigError, match="kafka_heap"):
        load_settings()


def test_file_must_be_a_mapping(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "action.yaml"
    config.write_text("- just\n- a list\n")
    monkeypatch.setenv("ACTION_CONFIG_FILE", str(config))
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_settings()


def test_settings_are_frozen() -> None:
    settings = load_settings()
    with pytest.raises(ValueError, match="frozen"):
        settings.kafka_heap = "1g"  # type: ignore[misc]
