"""Benchmark: what provenance that survives redaction costs, against plain per-record
signing, per record and per delivery, on one core.

Run:  .venv/bin/python -m tests.benchmarks.bench_provenance [--records N]

Plain per-record signing (Ed25519 over the encoded record) is what the router needs; it
cannot reach recipients once a field is changed. The field proof (broker/provenance.py)
adds salted SHA-256 commitments per field and one more Ed25519 signature, so its cost
is compared step by step: the source signing, the router checking, the router
disclosing per delivery, and the recipient verifying.
"""

from __future__ import annotations

import argparse
import datetime as dt
import time
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.table import Table

from broker.contract import EVENT_TYPE_HEADER, SOURCE_KEY_ID_HEADER
from broker.events import EVENT_TYPES, avro_values
from broker.ledger import DeliveryLedger
from broker.match_tokens import MatchTokenKey
from broker.policy.loader import load_policies
from broker.provenance import FieldProof, sign_fields, verify_delivered
from broker.routing import Inbound, RecordRouter
from broker.signing import SignatureVerifier, header_map, public_keys, sign_record
from policies import POLICY_DIR
from policies.demo_keys import demo_match_secret, demo_signing_key
from tests.members import CODEC, mixed_stream, signed, signing_kid

NOW = dt.datetime(2026, 11, 20, 12, 0, tzinfo=dt.UTC)


def _per_item(work: Callable[[], Any], items: int) -> float:
    """Microseconds per item, best of three runs."""
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        work()
        best = min(best, time.perf_counter() - started)
    return best / items * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=2_000)
    args = parser.parse_args()
    policies = load_policies(POLICY_DIR)
    events = mixed_stream(args.records)
    prepared = []
    for event in events:
        key, value, sent = signed(event)
        record = EVENT_TYPES[event.avro_type].from_avro(CODEC.decode(value).record).to_avro()
        prepared.append((event, key, value, header_map(sent), record))
    verifier = SignatureVerifier(policies.registry)
    source_keys = public_keys(k for m in policies.registry.members for k in m.signing_keys)
    router = RecordRouter(policies, CODEC, MatchTokenKey(1, demo_match_secret()))
    proofs, deliveries = [], []
    for event, key, value, headers, record in prepared:
        source = event.source_member
        kid = signing_kid(source)
        proofs.append(
            (
                FieldProof.verify(
                    record, event.avro_type, headers, kid, verifier.public_key(kid), encoded=value
                ),
                record,
            )
        )
        inbound = Inbound(f"action.in.{source}", 0, 0, key, value, tuple(headers.items()), 0)
        for feed in router.route(inbound, now=NOW, ledger=DeliveryLedger()).feeds:
            got = header_map(feed.headers)
            plain = avro_values(CODEC.decode(feed.value).record)
            deliveries.append((plain, got[EVENT_TYPE_HEADER].decode(), got))
    named = [d for d in deliveries if SOURCE_KEY_ID_HEADER in d[2]]
    n = len(prepared)

    keys = {m.id: demo_signing_key(m.id) for m in policies.registry.members}

    def plain_sign() -> None:
        for event, _, value, _, _ in prepared:
            sign_record(value, keys[event.source_member], "k")

    def fields_sign() -> None:
        for event, _, _, _, record in prepared:
            sign_fields(record, event.avro_type, keys[event.source_member])

    # Scheme v1 headers (a signature over the bytes alone), for the plain reference.
    plain_signed = [
        header_map(sign_record(value, keys[event.source_member], signing_kid(event.source_member)))
        for event, _, value, _, _ in prepared
    ]

    def plain_verify() -> None:
        for (event, _, value, _, _), headers in zip(prepared, plain_signed, strict=True):
            verifier.verify(value, headers, event.source_member)

    def fields_verify() -> None:
        for event, _, value, headers, record in prepared:
            kid = signing_kid(event.source_member)
            public_key = verifier.public_key(kid)
            FieldProof.verify(record, event.avro_type, headers, kid, public_key, encoded=value)

    def disclose() -> None:
        for proof, record in proofs:
            assert proof is not None
            proof.disclose(record, ["seller.email"])

    def recipient_verify() -> None:
        for plain, event_type, got in named:
            verify_delivered(plain, event_type, got, source_keys)

    rows = [
        ("source: sign", _per_item(plain_sign, n), _per_item(fields_sign, n), "per record"),
        ("router: check", _per_item(plain_verify, n), _per_item(fields_verify, n), "per record"),
        ("router: disclose", 0.0, _per_item(disclose, n), "per delivery"),
        ("recipient: verify", None, _per_item(recipient_verify, len(named)), "per delivery"),
    ]
    headers_bytes = (
        sum(
            len(v)
            for _, _, _, h, _ in prepared
            for k, v in h.items()
            if k.startswith("action.fields")
        )
        / n
    )
    proof_bytes = sum(
        len(v) for _, _, h in named for k, v in h.items() if k.startswith("action.src")
    ) / max(1, len(named))
    table = Table(
        "step",
        "per-record signing (us)",
        "field proof (us)",
        "ratio",
        "unit",
        title=f"provenance cost: {n} records, {len(named)} named deliveries",
    )
    for step, plain, fields, unit in rows:
        ratio = f"{fields / plain:.1f}x" if plain else "-"
        shown = "n/a (cannot survive redaction)" if plain is None else f"{plain:.1f}"
        table.add_row(step, shown, f"{fields:.1f}", ratio, unit)
    console = Console(width=110)
    console.print(table)
    console.print(
        f"extra bytes: {headers_bytes:.0f} per inbound record (salts, signature), "
        f"{proof_bytes:.0f} per named delivery (proof)"
    )


if __name__ == "__main__":
    main()
