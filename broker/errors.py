"""The project's one exception hierarchy.

Every error a user can cause or fix derives from :class:`ActionError`, so a CLI or
service can catch one type, print ``str(err)`` and exit with ``err.exit_code``.
Messages say what was wrong; ``hint`` says what to do about it.
"""

from __future__ import annotations


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


class PortInUseError(LocalKafkaError):
    """A port the broker must listen on is already taken."""


class BrokerStartError(LocalKafkaError):
    """A broker process exited or did not answer metadata requests in time."""


class ClusterNotRunningError(LocalKafkaError):
    """An operation needs a running local cluster and there is none."""

    exit_code = 3  # LSB: "program is not running", what `status` scripts expect
