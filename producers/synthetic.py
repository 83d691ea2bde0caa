"""SYNTHETIC data for demos and tests, shaped by CBP's FY 2021 seizure statistics.

Nothing here is real. Product categories, origin economies and transport modes follow the
FY 2021 seizure-line shares (docs: ../shared/DOMAIN.md); the health/safety/security share
(6,532 of 102,490 lines, about 6.4%) is concentrated in pharmaceuticals, electronics and
automotive parts. A pool of sellers recurs across members, so correlation has something
to find. Seeded: the same seed gives the same data. Every seller name and domain carries
"synthetic" so nobody mistakes the output for real reports.
"""

from __future__ import annotations

import datetime as dt
import random
import uuid
from dataclasses import dataclass
from typing import Any

import phonenumbers
from phonenumbers import PhoneNumberType

from broker.events import Event, SeizureReport, SellerIndicator

SYNTHETIC_LABEL = "synthetic"

# Seizure lines by product, FY 2021 (share of 102,490).
CATEGORY_WEIGHTS = {
    "WEARING_APPAREL_ACCESSORIES": 30_681,
    "HANDBAGS_WALLETS": 28_331,
    "FOOTWEAR": 13_355,
    "WATCHES_JEWELRY": 12_313,
    "CONSUMER_ELECTRONICS": 5_380,
    "CONSUMER_PRODUCTS": 3_721,
    "PHARMACEUTICALS_PERSONAL_CARE": 3_155,
    "AUTOMOTIVE_AEROSPACE": 1_303,
    "LABELS_TAGS": 641,
    "CELL_PHONES_ACCESSORIES": 1_895,
    "TOYS": 800,
    "COMPUTERS_ACCESSORIES": 600,
    "OTHER": 315,
}
# HSS seizure lines by product (6,532 in all), to derive P(HSS | category).
HSS_LINES = {
    "PHARMACEUTICALS_PERSONAL_CARE": 3_041,
    "CONSUMER_ELECTRONICS": 1_165,
    "AUTOMOTIVE_AEROSPACE": 1_002,
    "TOYS": 400,
    "CELL_PHONES_ACCESSORIES": 400,
    "CONSUMER_PRODUCTS": 524,
}
ORIGIN_WEIGHTS = {
    "CN": 33_323,
    "HK": 18_466,
    "TR": 10_781,
    "PH": 6_416,
    "CO": 5_912,
    "VN": 9_000,
    "IN": 6_000,
    "TH": 6_000,
    "US": 3_000,
    "AE": 3_592,
}
TRANSPORT_WEIGHTS = {"EXPRESS": 16_926, "MAIL": 7_293, "CARGO": 2_274, "OTHER": 622}
# Mean MSRP per seizure line, USD (FY 2021 MSRP by product / lines), for seizure values.
MEAN_MSRP_USD = {
    "WATCHES_JEWELRY": 96_000,
    "HANDBAGS_WALLETS": 34_000,
    "WEARING_APPAREL_ACCESSORIES": 16_000,
    "PHARMACEUTICALS_PERSONAL_CARE": 59_000,
    "CONSUMER_ELECTRONICS": 32_000,
    "FOOTWEAR": 7_200,
    "CONSUMER_PRODUCTS": 19_000,
}
BRANDS = [
    "Example Luxe",
    "Example Watches",
    "Example Sport",
    "Example Pharma",
    "Example Volt",
    "Example Toys",
]


def _mobile_number(rng: random.Random, region: str) -> str:
    """A valid-looking mobile number of ``region``: its example number, last digits varied."""
    example = phonenumbers.example_number_for_type(region, PhoneNumberType.MOBILE)
    assert example is not None, f"no example mobile number for {region}"
    base = str(example.national_number)
    for _ in range(20):
        candidate = base[:-4] + f"{rng.randrange(10_000):04d}"
        number = phonenumbers.parse(f"+{example.country_code}{candidate}")
        if phonenumbers.is_valid_number(number):
            return f"+{example.country_code}{candidate}"
    return f"+{example.country_code}{base}"


def _pick(rng: random.Random, weights: dict[str, int]) -> str:
    return rng.choices(list(weights), weights=list(weights.values()))[0]


@dataclass(frozen=True)
class SyntheticSeller:
    number: int
    account_id: str
    display_name: str
    domain: str
    email: str
    phone: str
    country: str
    category: str
    hss: bool
    payment_account: str


class SyntheticData:
    """A reproducible world of violative sellers seen by the consortium's members."""

    def __init__(
        self, seed: int = 2021, sellers: int = 200, now: dt.datetime | None = None
    ) -> None:
        self.rng = random.Random(seed)  # noqa: S311 - synthetic data, not security
        self.now = now or dt.datetime.now(dt.UTC)
        self.sellers = [self._seller(n) for n in range(sellers)]

    def _seller(self, n: int) -> SyntheticSeller:
        rng = self.rng
        category = _pick(rng, CATEGORY_WEIGHTS)
        p_hss = HSS_LINES.get(category, 0) / CATEGORY_WEIGHTS[category]
        origin = _pick(rng, ORIGIN_WEIGHTS)
        if origin in ("US",):
            origin = "CN"  # foreign sellers dominate; keep phone numbers foreign
        phone = _mobile_number(rng, origin)
        domain = f"{SYNTHETIC_LABEL}-shop{n:04d}.shop"
        return SyntheticSeller(
            number=n,
            account_id=f"SYN-{n:05d}",
            display_name=f"{SYNTHETIC_LABEL} seller {n:04d}",
            domain=domain,
            email=f"sales{n}@{domain}",
            phone=phone,
            country=origin,
            category=category,
            hss=rng.random() < min(1.0, p_hss * 1.5),
            payment_account=f"acct_syn{n:06d}",
        )

    def indicator(self, member: str, seller: SyntheticSeller | None = None) -> SellerIndicator:
        """One member's report of a seller (a recurring one when not given)."""
        rng = self.rng
        if seller is None:  # a few prolific sellers recur across members; most appear once
            hot = rng.random() < 0.4
            seller = self.sellers[
                rng.randrange(min(30, len(self.sellers)) if hot else len(self.sellers))
            ]
        published = self.now - dt.timedelta(hours=rng.uniform(2, 72))
        record: dict[str, Any] = {
            "indicator_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            "source_member": member,
            "observed_at": published - dt.timedelta(hours=rng.uniform(0, 24)),
            "published_at": published,
            "seller": {
                "account_id": seller.account_id,
                "display_name": seller.display_name,
                "store_url": f"https://{seller.domain}/store",
                "email": seller.email,
                "phone": seller.phone,
                "country": seller.country,
                "payment_accounts": [seller.payment_account] if rng.random() < 0.6 else [],
                "ip_addresses": [f"203.0.113.{seller.number % 250 + 1}"],
                "addresses": [{"lines": [f"{seller.number} Export Rd"], "country": seller.country}],
            },
            "product_categories": [seller.category],
            "brands": [rng.choice(BRANDS)],
            "evidence": [
                {
                    "kind": rng.choice(
                        ["TEST_BUY", "LISTING_CAPTURE", "RIGHTS_HOLDER_CONFIRMATION"]
                    ),
                    "reference": f"{SYNTHETIC_LABEL}-ev-{rng.randrange(10**6)}",
                }
            ],
            "confidence": rng.choice([60, 70, 75, 80, 85, 90, 95]),
            "hss": seller.hss,
            "tlp": rng.choices(
                ["CLEAR", "GREEN", "AMBER", "AMBER_STRICT", "RED"], weights=[5, 30, 50, 10, 5]
            )[0],
            "purpose": (
                "HEALTH_SAFETY"
                if seller.hss and rng.random() < 0.7
                else rng.choice(["IPR_ENFORCEMENT", "IPR_ENFORCEMENT", "FRAUD_PREVENTION"])
            ),
        }
        return SellerIndicator.parse(record)

    def seizure(self, member: str = "ipr-center", rights_holder: str | None = None) -> Event:
        rng = self.rng
        category = _pick(rng, CATEGORY_WEIGHTS)
        quantity = max(1, int(rng.lognormvariate(3, 1)))
        mean = MEAN_MSRP_USD.get(category, 10_000)
        return SeizureReport.parse(
            {
                "report_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                "source_member": member,
                "seized_on": (self.now - dt.timedelta(days=rng.randrange(1, 30))).date(),
                "product_category": category,
                "origin_economy": _pick(rng, ORIGIN_WEIGHTS),
                "transport_mode": _pick(rng, TRANSPORT_WEIGHTS),
                "msrp_usd_cents": int(rng.expovariate(1 / mean) * 100),
                "quantity": quantity,
                "hss": rng.random() < HSS_LINES.get(category, 0) / CATEGORY_WEIGHTS[category],
                "de_minimis": rng.random() < 0.6,
                "port_of_entry": rng.choice(["JFK", "LAX", "ORD", "MIA", "CVG"]),
                "rights_holder": rights_holder,
                "brands": [rng.choice(BRANDS)],
                "tlp": rng.choice(["AMBER", "AMBER", "RED"]),
                "purpose": "IPR_ENFORCEMENT",
            }
        )

    def stream(self, members: list[str], count: int) -> list[SellerIndicator]:
        """``count`` indicators from the given members, sellers recurring across them."""
        return [self.indicator(members[i % len(members)]) for i in range(count)]
