"""Benchmark: the catalog's encode/decode against fastavro's raw schemaless calls.

Run:  .venv/bin/python -m tests.benchmarks.bench_codec [--records N] [--rounds R]

Both variants encode and decode the same typical SellerIndicator with the same parsed
schema in the same process; the catalog adds framing, schema lookup by id, the size
bound and the trailing-bytes check. Target: overhead under 15%. Best of R rounds.
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import time
import uuid
from collections.abc import Callable
from typing import Any

from fastavro import schemaless_reader, schemaless_writer

from broker.catalog import SchemaCatalog
from broker.codec import AvroCodec
from broker.events import SellerIndicator

TARGET_OVERHEAD = 0.15


def typical_indicator() -> dict[str, Any]:
    now = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
    return SellerIndicator.parse(
        {
            "indicator_id": str(uuid.uuid4()),
            "source_member": "platform-a",
            "observed_at": now - dt.timedelta(days=2),
            "published_at": now,
            "seller": {
                "account_id": "A1B2C3D4E5",
                "display_name": "Luxury Outlet Store 88",
                "store_url": "https://luxury-outlet-88.example.com/shop",
                "email": "service@luxury-outlet-88.example.com",
                "phone": "+85291234567",
                "country": "HK",
                "addresses": [
                    {
                        "lines": ["Flat 12, 8/F", "88 Nathan Road"],
                        "city": "Kowloon",
                        "country": "HK",
                    }
                ],
                "payment_accounts": ["acct_1NqXk2Lz"],
                "merchant_ids": ["MID-448812"],
                "ip_addresses": ["203.0.113.17"],
                "device_ids": ["fp:9c1e2a77"],
            },
            "product_categories": ["HANDBAGS_WALLETS", "WATCHES_JEWELRY"],
            "brands": ["Maison Exemple", "Horloge Demo"],
            "evidence": [
                {"kind": "TEST_BUY", "reference": "TB-2026-1187", "description": "Order 77812"},
                {"kind": "RIGHTS_HOLDER_CONFIRMATION", "reference": "RH-CONF-5531"},
            ],
            "confidence": 88,
            "hss": False,
            "tlp": "AMBER",
            "purpose": "IPR_ENFORCEMENT",
        }
    ).to_avro()


def best_rate(fn: Callable[[], None], count: int, rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return count / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    n, rounds = args.records, args.rounds

    catalog = SchemaCatalog.load()
    codec = AvroCodec(catalog)
    sv = catalog.latest("SellerIndicator")
    record = typical_indicator()
    framed = codec.encode("SellerIndicator", record)
    raw_body = framed[5:]
    v1_framed = codec.encode(
        "SellerIndicator", {k: v for k, v in record.items() if k != "expires_at"}, version=1
    )

    def raw_encode() -> None:
        for _ in range(n):
            out = io.BytesIO()
            schemaless_writer(out, sv.parsed, record)
            out.getvalue()

    def catalog_encode() -> None:
        for _ in range(n):
            codec.encode("SellerIndicator", record)

    def raw_decode() -> None:
        for _ in range(n):
            schemaless_reader(io.BytesIO(raw_body), sv.parsed, None)

    def catalog_decode() -> None:
        for _ in range(n):
            codec.decode(framed)

    def catalog_decode_resolving() -> None:
        for _ in range(n):
            codec.decode(v1_framed)

    rows = [
        ("encode", best_rate(raw_encode, n, rounds), best_rate(catalog_encode, n, rounds)),
        ("decode", best_rate(raw_decode, n, rounds), best_rate(catalog_decode, n, rounds)),
    ]
    resolving = best_rate(catalog_decode_resolving, n, rounds)

    print(
        f"SellerIndicator v{sv.version}, {len(framed)} bytes framed; {n} records, best of {rounds}"
    )
    print(
        f"{'operation':<10} {'raw fastavro rec/s':>19} {'catalog rec/s':>14} "
        f"{'overhead':>9} {'target':>7}  verdict"
    )
    for name, raw, ours in rows:
        overhead = raw / ours - 1
        verdict = "ok" if overhead < TARGET_OVERHEAD else "OVER"
        print(
            f"{name:<10} {raw:>19,.0f} {ours:>14,.0f} {overhead:>8.1%} "
            f"{TARGET_OVERHEAD:>7.0%}  {verdict}"
        )
    print(
        f"(for reference: catalog decode of a v1 record into the v2 reader: {resolving:,.0f} rec/s)"
    )


if __name__ == "__main__":
    main()
