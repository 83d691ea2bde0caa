"""The project's one exception hierarchy.

Every error a user can cause or fix derives from :class:`ActionError`, so a CLI or
service can catch one type, print ``str(err)`` and exit with ``err.exit_code``.
Messages say what was wrong; ``hint`` says what to do about it.
"""

from __future__ import annotations

from typing import Any


class ActionError(Exception):
    """Root of every error this project raises on purpose."""

    exit_code: int = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message}\n  hint: {self.hint}"
        return self.message


class ConfigError(ActionError):
    """Configuration (file or ACTION_* environment) is missing or invalid."""


class LocalKafkaError(ActionError):
    """The local development Kafka could not be installed, started or stopped."""


class ToolNotFoundError(LocalKafkaError):
    """A required external program (java, mvn) is not installed."""


class KafkaDownloadError(LocalKafkaError):
    """Maven could not resolve the Kafka jars from Maven Central."""


class BrokerStartError(LocalKafkaError):
    """A broker process exited or did not answer metadata requests in time."""


class ClusterNotRunningError(LocalKafkaError):
    """An operation needs a running local cluster and there is none."""

    exit_code = 3  # LSB: "program is not running", what `status` scripts expect


class KafkaUnreachableError(ActionError):
    """No Kafka answered at the bootstrap address (stopped, wrong address, network)."""

    exit_code = 69  # EX_UNAVAILABLE (sysexits.h)


class KafkaLoginError(ActionError):
    """Kafka answered but refused the login (wrong user or password)."""

    exit_code = 77  # EX_NOPERM (sysexits.h)


class KafkaAccessError(ActionError):
    """Kafka refused an operation to this principal (its ACLs do not allow it)."""

    exit_code = 77  # EX_NOPERM (sysexits.h)


# --- schemas, wire format, events ------------------------------------------------------
# ``reason`` is a stable, machine-readable code: the router puts it on dead-letter records
# and metrics label DLQ entries with it.


class SchemaError(ActionError):
    """A schema file, the manifest or the catalog built from them is wrong."""

    reason = "schema.invalid"


class DecodeError(ActionError):
    """Bytes from the wire could not be turned into an event."""

    reason = "decode.failed"

    def __init__(self, message: str, *, reason: str | None = None, hint: str | None = None):
        super().__init__(message, hint=hint)
        if reason is not None:
            self.reason = reason


class WireFormatError(DecodeError):
    """The framing (magic byte, schema id or fingerprint header) is wrong."""

    reason = "wire.bad_frame"


class UnknownSchemaError(DecodeError):
    """The frame names a schema id or fingerprint the catalog does not hold."""

    reason = "schema.unknown"


class RecordTooLargeError(DecodeError):
    """The record is larger than the configured bound; it was not decoded."""

    reason = "record.too_large"


class AvroBodyError(DecodeError):
    """The Avro body is truncated, corrupt, or has bytes left over."""

    reason = "avro.corrupt"


class EncodeError(ActionError):
    """A record does not fit the schema it is being written with."""

    reason = "encode.schema_mismatch"


class EventValidationError(ActionError):
    """An event is schema-valid but semantically invalid (bad e-mail, future time, ...)."""

    reason = "event.invalid"

    def __init__(self, message: str, *, problems: list[tuple[str, str]] | None = None):
        super().__init__(message)
        #: (field path, what is wrong) pairs, for callers that report them one by one
        self.problems = problems or []


class PolicyError(ActionError):
    """A policy folder (member registry, MOUs) is invalid; ``problems`` lists each one."""

    reason = "policy.invalid"

    def __init__(self, message: str, *, problems: list[str] | None = None):
        self.problems = problems or []
        listed = "".join(f"\n  - {p}" for p in self.problems)
        super().__init__(message + listed)


class ProvenanceError(ActionError):
    """A record's signature is missing, made with an unknown key or another member's key,
    or does not verify. ``reason`` is the dead-letter reason code."""

    reason = "signature.invalid"

    def __init__(self, message: str, *, reason: str | None = None):
        super().__init__(message)
        if reason is not None:
            self.reason = reason


class RouterError(ActionError):
    """The router cannot start or continue (Kafka unreachable, transactions stuck)."""


class TransactionTimeoutError(RouterError):
    """A transactional call did not finish within its deadline; the producer is replaced."""


class RoutingWorkerLostError(RouterError):
    """A routing worker died or stopped answering; the router replaces the pool and reads
    the records again from the last committed offsets. ``suspects`` are the records of the
    task the worker was routing when it died (empty when that is not known)."""

    def __init__(self, message: str, *, suspects: tuple[Any, ...] = ()) -> None:
        super().__init__(message)
        self.suspects = suspects


class PortInUseError(ActionError):
    """A server (a local Kafka node, the registry, the metrics endpoint, a workspace)
    cannot listen where it was asked to: the port is taken, say."""

    exit_code = 69  # EX_UNAVAILABLE (sysexits.h)


class UnpublishedIndicatorError(ActionError):
    """A retraction names an indicator the member's publication journal does not list."""

    exit_code = 65  # EX_DATAERR (sysexits.h)


class ImportFileError(ActionError):
    """An import file cannot be read as a whole (its type, its CSV header)."""


class PublishError(ActionError):
    """Kafka did not accept some records; ``failures`` names each (record id, cause)."""

    def __init__(self, message: str, failures: list[tuple[str, str]]) -> None:
        self.failures = failures
        listed = "".join(f"\n  - {record_id}: {cause}" for record_id, cause in failures[:20])
        more = f"\n  ... and {len(failures) - 20} more" if len(failures) > 20 else ""
        super().__init__(
            message + listed + more,
            hint="check the broker, the topic and this member's credentials",
        )
