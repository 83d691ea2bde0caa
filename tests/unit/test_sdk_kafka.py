"""How the SDK reads kafka-python's failure to bootstrap (broker.sdk_kafka): Kafka refuses
a SCRAM login by answering with an error and closing the socket, and the client often sees
only the close. A connection that spoke Kafka's protocol and was dropped before its login
completed is a refused login; one that never got an answer is an unreachable Kafka."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import pytest
from kafka.errors import KafkaTimeoutError

from broker.errors import KafkaLoginError, KafkaUnreachableError
from broker.sdk_kafka import opening_kafka


@dataclass
class _Reauth:
    authenticated_at: float | None = None


@dataclass
class _Connection:
    """The attributes of kafka-python 3's KafkaConnection the SDK looks at."""

    broker_version_data: object | None
    sasl_enabled: bool = True
    connected: bool = False
    _reauth: _Reauth = field(default_factory=_Reauth)


def _bootstrap_failing_after(connection: _Connection) -> None:
    with opening_kafka("127.0.0.1:9092", "ipr-center"):
        logging.getLogger("kafka.net.connection").error(
            "%s: Connection lost: %s", connection, ConnectionResetError("socket disconnected")
        )
        raise KafkaTimeoutError("Unable to bootstrap from 127.0.0.1:9092")


def test_a_connection_dropped_during_the_login_is_a_refused_login() -> None:
    with pytest.raises(KafkaLoginError, match="refused the login of 'ipr-center'"):
        _bootstrap_failing_after(_Connection(broker_version_data=object()))


@pytest.mark.parametrize(
    "connection",
    [
        _Connection(broker_version_data=None),  # Kafka never answered
        _Connection(broker_version_data=object(), _reauth=_Reauth(authenticated_at=1.0)),
        _Connection(broker_version_data=object(), sasl_enabled=False),
    ],
)
def test_other_lost_connections_are_an_unreachable_kafka(connection: _Connection) -> None:
    with pytest.raises(KafkaUnreachableError, match=r"cannot reach Kafka at 127\.0\.0\.1:9092"):
        _bootstrap_failing_after(connection)
