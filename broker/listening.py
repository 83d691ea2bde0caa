"""Where the project's HTTP servers listen (the schema registry, the router's metrics,
a member's workspace): a port that is taken, or an address that is not this machine's,
is one error naming the option to change, not an OSError traceback."""

from __future__ import annotations

import contextlib
import errno
import socket
from collections.abc import Iterator

from broker.errors import PortInUseError

_BIND_ERRORS = (errno.EADDRINUSE, errno.EADDRNOTAVAIL, errno.EACCES)


@contextlib.contextmanager
def binding(what: str, host: str, port: int, option: str = "--port") -> Iterator[None]:
    """Around a server's construction (which binds its socket)."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in _BIND_ERRORS:
            raise
        hint = f"pass another {option} (0 picks a free one)"
        if exc.errno == errno.EADDRNOTAVAIL:
            hint = "pass an address of this machine (--host), e.g. 127.0.0.1"
        raise PortInUseError(
            f"{what} cannot listen on {host}:{port}: {exc.strerror}", hint=hint
        ) from None


def listening_socket(what: str, host: str, port: int, option: str = "--port") -> socket.socket:
    """A bound, listening TCP socket, for a server that takes one (uvicorn)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    with binding(what, host, port, option):
        try:
            sock.bind((host, port))
        except OSError:
            sock.close()
            raise
    sock.listen(128)
    return sock
