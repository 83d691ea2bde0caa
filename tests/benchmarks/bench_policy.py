"""Benchmark: recipient-decisions per second of the MOU policy engine, on one core.

Run:  .venv/bin/python -m tests.benchmarks.bench_policy [--records N]

Two consortia: the example one (8 members) and a 20-member one made by cloning the
example's platform and payment MOUs under new member ids. Each record is evaluated for
every other member (evaluate_all), as the router does. Target: >= 50,000 decisions/s.
"""

from __future__ import annotations

import argparse
import datetime as dt
import re
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from broker.events import SellerIndicator
from broker.match_tokens import MatchTokenKey
from broker.policy.engine import PolicySet
from broker.policy.loader import load_policies
from policies import POLICY_DIR
from policies.demo_keys import demo_encryption_key, demo_signing_key, public_b64

TARGET = 50_000
KEY = MatchTokenKey(1, b"b" * 32)
SOURCES = ["platform-a", "platform-b", "platform-c", "payments-x", "brand-owner", "express-carrier"]


def twenty_member_consortium(target: Path) -> Path:
    shutil.copytree(POLICY_DIR, target, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    members = (target / "members.yaml").read_text()
    clones = [(f"platform-{c}", "platform-a") for c in "defghij"]
    clones += [(f"payments-{c}", "payments-y") for c in "abcde"]
    for new_id, template in clones:
        sector = "platform" if new_id.startswith("platform") else "payment"
        signing, encryption = demo_signing_key(new_id), demo_encryption_key(new_id)
        members += (
            f"  - id: {new_id}\n    name: {new_id} (synthetic)\n    sector: {sector}\n"
            f"    principal: User:{new_id}\n    signing_keys:\n"
            f"      - kid: {new_id}-sig\n        public_key: {public_b64(signing)}\n"
            f"    encryption_keys:\n"
            f"      - kid: {new_id}-enc\n        public_key: {public_b64(encryption)}\n"
        )
        text = (target / "mou" / f"{template}.yaml").read_text()
        prefix = "pa" if template == "platform-a" else "py"
        text = text.replace(f"member: {template}", f"member: {new_id}")
        text = re.sub(rf"\b{prefix}\.", f"{new_id}.", text)
        (target / "mou" / f"{new_id}.yaml").write_text(text)
    (target / "members.yaml").write_text(members)
    return target


def records(count: int) -> list[dict[str, Any]]:
    now = dt.datetime.now(dt.UTC) - dt.timedelta(hours=2)
    out = []
    for i in range(count):
        out.append(
            SellerIndicator.parse(
                {
                    "indicator_id": str(uuid.uuid4()),
                    "source_member": SOURCES[i % len(SOURCES)],
                    "observed_at": now - dt.timedelta(hours=1),
                    "published_at": now,
                    "seller": {
                        "account_id": f"S-{i}",
                        "email": f"seller{i}@shop.example",
                        "phone": "+8613800138000",
                        "country": "CN",
                        "payment_accounts": [f"acct_{i:06d}"],
                        "addresses": [{"lines": ["1 Rd"], "country": "CN"}],
                        "ip_addresses": ["203.0.113.9"],
                    },
                    "product_categories": ["FOOTWEAR"],
                    "confidence": 60 + i % 40,
                    "hss": i % 7 == 0,
                    "tlp": ["GREEN", "AMBER", "AMBER", "CLEAR"][i % 4],
                    "purpose": ["IPR_ENFORCEMENT", "HEALTH_SAFETY", "FRAUD_PREVENTION"][i % 3],
                }
            ).to_avro()
        )
    return out


def measure(policy_set: PolicySet, batch: list[dict[str, Any]], rounds: int) -> tuple[float, float]:
    best, delivered_share = float("inf"), 0.0
    now = dt.datetime.now(dt.UTC)
    for _ in range(rounds):
        start = time.perf_counter()
        decisions = [
            d
            for r in batch
            for d in policy_set.evaluate_all(r, "SellerIndicator", now=now, match_key=KEY)
        ]
        elapsed = time.perf_counter() - start
        if elapsed < best:
            best = elapsed
            delivered_share = sum(d.delivered for d in decisions) / len(decisions)
    count = len(batch) * (len(policy_set.registry.members) - 1)
    return count / best, delivered_share


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=3_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    batch = records(args.records)
    with tempfile.TemporaryDirectory() as tmp:
        twenty = twenty_member_consortium(Path(tmp) / "p")
        consortia = [
            ("example (8 members)", load_policies(POLICY_DIR)),
            ("20 members", load_policies(twenty)),
        ]
        print(f"{args.records} SellerIndicator records x every other member, best of {args.rounds}")
        print(f"{'consortium':<22} {'decisions/s':>12} {'delivered':>10} {'target':>8}  verdict")
        for name, policy_set in consortia:
            rate, delivered = measure(policy_set, batch, args.rounds)
            verdict = "ok" if rate >= TARGET else "UNDER"
            print(f"{name:<22} {rate:>12,.0f} {delivered:>10.0%} {TARGET:>8,}  {verdict}")


if __name__ == "__main__":
    main()
