from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from broker.errors import ClusterNotRunningError, ConfigError
from broker.kafka_target import kafka_target
from broker.settings import KAFKA_VERSION, load_settings
from policies import POLICY_DIR


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


def test_the_router_refuses_to_start_without_its_secrets_unless_demo_keys_are_asked_for(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No silent fallback to the example consortium's public secret or router key."""
    from broker.membership import load_trust_store
    from broker.router_keys import match_key_from, router_signing_key
    from policies import POLICY_DIR
    from policies.demo_keys import demo_match_secret

    for name in ("ACTION_MATCH_SECRET", "ACTION_ROUTER_SIGNING_KEY_FILE", "ACTION_DEMO_KEYS"):
        monkeypatch.delenv(name, raising=False)
    registry = load_trust_store(POLICY_DIR)
    with pytest.raises(ConfigError, match="no match-token secret") as secret:
        match_key_from(load_settings())
    assert "ACTION_MATCH_SECRET" in (secret.value.hint or "")
    with pytest.raises(ConfigError, match="no router signing key") as signing:
        router_signing_key(registry, load_settings())
    assert "ACTION_ROUTER_SIGNING_KEY_FILE" in (signing.value.hint or "")
    monkeypatch.setenv("ACTION_DEMO_KEYS", "true")
    assert match_key_from(load_settings()).secret == demo_match_secret()
    kid, _ = router_signing_key(registry, load_settings())
    assert kid == registry.router_keys[-1].kid


def test_member_settings_hold_only_what_a_member_needs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from broker.member_settings import MemberSettings

    for name in ("ACTION_KAFKA_BOOTSTRAP", "ACTION_MEMBER", "ACTION_POLICY_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ACTION_CACHE_DIR", str(tmp_path / "cache"))  # no local cluster
    with pytest.raises(ClusterNotRunningError, match="no Kafka to talk to") as missing:
        kafka_target(None, None, MemberSettings.load(), member="platform-a")
    assert "--bootstrap-server or --name" in (missing.value.hint or "")
    with pytest.raises(ClusterNotRunningError, match="no local cluster named 'lab'") as named:
        kafka_target(None, "lab", MemberSettings.load(), member="platform-a")
    assert "action-broker kafka up --name lab" in (named.value.hint or "")
    with pytest.raises(ConfigError, match="--bootstrap-server and --name"):
        kafka_target("k:9092", "lab", MemberSettings.load())
    with pytest.raises(ConfigError, match="no member id"):
        MemberSettings.load().member_id(None)
    monkeypatch.setenv("ACTION_KAFKA_BOOTSTRAP", "kafka.example:9093")
    monkeypatch.setenv("ACTION_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("ACTION_KAFKA_SASL_USERNAME", "platform-a")
    monkeypatch.setenv("ACTION_KAFKA_SASL_PASSWORD", "s3cret")
    shutil.copy(POLICY_DIR / "members.yaml", tmp_path / "members.yaml")
    monkeypatch.setenv("ACTION_TRUST_STORE", str(tmp_path / "members.yaml"))
    settings = MemberSettings.load(member="platform-a")
    connection = kafka_target(None, None, settings, member="platform-a")
    assert (connection.bootstrap, connection.username) == ("kafka.example:9093", "platform-a")
    assert kafka_target("other:9092", None, settings).bootstrap == "other:9092"
    assert settings.trust_store == tmp_path / "members.yaml"
    assert settings.member_id(None) == "platform-a"
    with pytest.raises(ConfigError, match="'nosuch' is not a member of the consortium") as typo:
        settings.member_id("nosuch")
    assert "platform-a" in (typo.value.hint or "")
    # A router setting is not a member's: a typo or a misplaced key is refused, not ignored.
    config = tmp_path / "member.yaml"
    config.write_text("router_workers: 4\n")
    monkeypatch.setenv("ACTION_CONFIG_FILE", str(config))
    with pytest.raises(ConfigError, match="router_workers"):
        MemberSettings.load()
