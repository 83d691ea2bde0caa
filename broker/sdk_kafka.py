"""How the members' SDK opens and uses its kafka-python clients: a bootstrap deadline of
10 s, and a failure to bootstrap told apart, a refused login (:class:`KafkaLoginError`,
exit 77) from a Kafka that does not answer (:class:`KafkaUnreachableError`, exit 69),
both in one line instead of a minute of client log lines and a timeout; and what the
ACLs refuse (a group or topic not the member's) as :class:`KafkaAccessError` (exit 77),
not a traceback."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

from broker.errors import KafkaAccessError, KafkaLoginError, KafkaUnreachableError

#: How long a client may take to reach its first broker before the SDK gives up.
BOOTSTRAP_TIMEOUT_MS = 10_000

_LOCAL_HINT = 'local cluster: eval "$(action-broker kafka env --user <member>)"'


class _Failures(logging.Handler):
    """Keeps the exceptions kafka-python logs while it tries to connect (and keeps its
    lines off stderr meanwhile: the one error below says what they meant)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.seen: list[BaseException] = []
        self.login_refused = False

    def emit(self, record: logging.LogRecord) -> None:
        args = record.args if isinstance(record.args, tuple) else ()
        self.seen += [a for a in args if isinstance(a, BaseException)]
        if record.exc_info and record.exc_info[1] is not None:
            self.seen.append(record.exc_info[1])
        # Some paths log the failure inside an f-string, not as an argument: the refused
        # login can surface at the connection or at its first metadata request.
        if "SaslAuthenticationFailed" in record.getMessage():
            self.login_refused = True
        # Kafka refuses a SCRAM login by answering with an error and closing the socket;
        # the client often sees the close first ("socket disconnected"). A connection
        # lost after the broker answered in Kafka's protocol (its API versions) but
        # before the login completed is that refusal: an unreachable Kafka never answers.
        if any(_dropped_while_logging_in(a) for a in args):
            self.login_refused = True


def _dropped_while_logging_in(connection: object) -> bool:
    """A kafka-python connection that spoke with Kafka but never finished its SASL login
    (duck-typed: attributes of kafka-python 3's KafkaConnection)."""
    if not getattr(connection, "sasl_enabled", False):
        return False
    if getattr(connection, "broker_version_data", None) is None or getattr(
        connection, "connected", True
    ):
        return False
    reauth = getattr(connection, "_reauth", None)
    return reauth is not None and getattr(reauth, "authenticated_at", 0) is None


@contextlib.contextmanager
def opening_kafka(bootstrap: str, user: str | None) -> Iterator[None]:
    """Around the construction of a kafka-python client: its failure to bootstrap becomes
    a refused login or an unreachable Kafka."""
    from kafka.errors import KafkaError, SaslAuthenticationFailedError

    failures = _Failures()
    kafka_log = logging.getLogger("kafka")
    kafka_log.addHandler(failures)
    try:
        yield
    except KafkaError as exc:
        if failures.login_refused or any(
            isinstance(e, SaslAuthenticationFailedError) for e in failures.seen
        ):
            raise KafkaLoginError(
                f"Kafka at {bootstrap} refused the login of {user!r}: wrong user or password",
                hint=f"check ACTION_KAFKA_SASL_USERNAME and ACTION_KAFKA_SASL_PASSWORD "
                f"({_LOCAL_HINT})",
            ) from None
        raise KafkaUnreachableError(
            f"cannot reach Kafka at {bootstrap} within {BOOTSTRAP_TIMEOUT_MS // 1000} s ({exc})",
            hint=f"is it running, and is that its address? ({_LOCAL_HINT})",
        ) from None
    finally:
        kafka_log.removeHandler(failures)


@contextlib.contextmanager
def kafka_refusals(principal: str, group: str | None) -> Iterator[None]:
    """Around a client's calls (poll, commit): what the ACLs refuse becomes one error
    that says what is allowed instead."""
    from kafka.errors import GroupAuthorizationFailedError, TopicAuthorizationFailedError

    try:
        yield
    except GroupAuthorizationFailedError:
        raise KafkaAccessError(
            f"{principal} may not use the consumer group {group!r}",
            hint=f"name your groups {principal}.<anything>: that prefix is yours",
        ) from None
    except TopicAuthorizationFailedError as exc:
        raise KafkaAccessError(
            f"{principal} may not read or write that topic ({exc})",
            hint="a member reads only its own feed and writes only its own inbound topic",
        ) from None
