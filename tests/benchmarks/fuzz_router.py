"""A million hostile inputs through the router's per-record path, under a memory limit.

    .venv/bin/python -m tests.benchmarks.fuzz_router [--inputs 1000000] [--seed 1]

Each input is a valid signed record of the example consortium (every event type) mutated
as a hostile member could (tests/hostile.py: bit flips, truncations, splices, huge
declared lengths, invalid UTF-8, deep JSON, giant or many headers), then routed the way a
routing worker routes it (``RecordRouter.writes``: check, decide, encode, sign) under an
address-space limit of 2 GiB. Prints one table: inputs, routed, dead letters, exceptions
that escaped, ``record.unprocessable`` dead letters (a fault the router caught but no
check anticipated), MemoryErrors and the slowest input. Goal: 0, 0 and 0.
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
import resource
import sys
import time
import traceback
from collections import Counter

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from broker.ledger import DeliveryLedger
from broker.match_tokens import MatchTokenKey
from broker.policy.loader import load_policies
from broker.routing import UNPROCESSABLE, RecordRouter, Writes
from policies import POLICY_DIR
from policies.demo_keys import demo_match_secret, demo_router_key
from tests import hostile
from tests.members import CODEC

ADDRESS_SPACE = 2 * 1024**3


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--inputs", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))
    router = RecordRouter(
        load_policies(POLICY_DIR),
        CODEC,
        MatchTokenKey(1, demo_match_secret()),
        router_key=("action-router-2026", demo_router_key()),
    )
    samples = hostile.corpus()
    rng = random.Random(args.seed)
    reasons: Counter[str] = Counter()
    escaped: Counter[str] = Counter()
    unprocessable: Counter[str] = Counter()
    memory_errors = routed = 0
    slowest = (0.0, "")
    now = dt.datetime.now(dt.UTC)
    started = time.process_time()
    with Progress(transient=True, disable=not sys.stderr.isatty()) as progress:
        task = progress.add_task("fuzzing", total=args.inputs)
        for number in range(args.inputs):
            sample = rng.choice(samples)
            mutated = hostile.mutate(sample, rng.choice(samples), rng)
            began = time.perf_counter()
            try:
                writes = router.writes(
                    mutated.inbound(number), now=now, ledger=DeliveryLedger(), decided_at_ms=0
                )
            except MemoryError:
                memory_errors += 1
                continue
            except Exception as exc:
                escaped[f"{type(exc).__name__}: {traceback.format_exc(limit=1)[-200:]}"] += 1
                continue
            took = time.perf_counter() - began
            if took > slowest[0]:
                slowest = (took, f"{len(mutated.value)} B value, {len(mutated.headers)} headers")
            assert isinstance(writes, Writes)
            if writes.dead_letter is None:
                routed += 1
                continue
            reasons[writes.dead_letter.reason] += 1
            if writes.dead_letter.reason == UNPROCESSABLE:
                unprocessable[writes.dead_letter.detail[:120]] += 1
            if number % 1000 == 0:
                progress.update(task, completed=number)
    cpu = time.process_time() - started
    table = Table(title=f"router fuzzing, seed {args.seed}")
    for column in ("measure", "value"):
        table.add_column(column)
    rows = [
        ("inputs", f"{args.inputs:,}"),
        ("routed (mutation kept the signed bytes)", f"{routed:,}"),
        ("dead letters", f"{sum(reasons.values()):,}"),
        ("exceptions escaped", f"{sum(escaped.values()):,}"),
        (f"{UNPROCESSABLE} dead letters", f"{sum(unprocessable.values()):,}"),
        ("MemoryErrors (2 GiB address space)", f"{memory_errors:,}"),
        ("slowest input", f"{slowest[0] * 1000:.1f} ms ({slowest[1]})"),
        ("CPU per input", f"{cpu / args.inputs * 1e6:.0f} us"),
    ]
    for row in rows:
        table.add_row(*row)
    console = Console(width=110)
    console.print(table)
    console.print(
        "dead letters by reason: " + ", ".join(f"{r} {n:,}" for r, n in reasons.most_common())
    )
    for what, count in (escaped + unprocessable).most_common(10):
        console.print(f"  {count:,} x {what}")
    return 1 if escaped or unprocessable or memory_errors else 0


if __name__ == "__main__":
    sys.exit(main())
