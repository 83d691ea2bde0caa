"""Signals kept from the first moment of ``action-broker`` (broker.early_signals)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from types import FrameType

from broker import early_signals


def test_signals_kept_before_the_hand_over_reach_the_handlers_once_in_order() -> None:
    previous = {s: signal.getsignal(s) for s in early_signals.KEPT}
    got: list[int] = []

    def handler(signum: int, _frame: FrameType | None) -> None:
        got.append(signum)

    try:
        early_signals.keep()
        os.kill(os.getpid(), signal.SIGHUP)  # would end the process by default
        os.kill(os.getpid(), signal.SIGTERM)
        assert got == []
        early_signals.hand_over({signal.SIGHUP: handler, signal.SIGTERM: handler})
        assert got == [signal.SIGHUP, signal.SIGTERM]
        os.kill(os.getpid(), signal.SIGHUP)
        assert got == [signal.SIGHUP, signal.SIGTERM, signal.SIGHUP], "then directly"
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


def test_the_console_script_keeps_signals_before_any_heavy_import() -> None:
    """broker.entrypoint installs the keeping handlers with nothing heavy loaded yet."""
    program = (
        "import json, signal, sys\n"
        "from broker import early_signals\n"
        "import broker.entrypoint\n"
        "early_signals.keep()\n"
        "heavy = [m for m in ('click', 'pydantic', 'fastavro', 'kafka', 'confluent_kafka',"
        " 'broker.cli', 'broker.router') if m in sys.modules]\n"
        "print(json.dumps([heavy, signal.getsignal(signal.SIGHUP).__name__]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, check=True, timeout=60
    )
    assert json.loads(done.stdout) == [[], "_keep"]


def test_other_commands_get_the_default_handlers_back() -> None:
    """A SIGTERM kept while ``action-broker schemas`` starts still ends it as SIGTERM does."""
    program = (
        "import os, signal, sys\n"
        "from broker import early_signals\n"
        "early_signals.keep()\n"
        "os.kill(os.getpid(), signal.SIGTERM)\n"
        "early_signals.release()\n"
        "print('not reached')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, check=False, timeout=60
    )
    assert done.returncode == -signal.SIGTERM
    assert "not reached" not in done.stdout
