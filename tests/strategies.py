"""Hypothesis strategies for valid events (already in normalized form)."""

from __future__ import annotations

import datetime as dt
import string
import uuid

from hypothesis import strategies as st

from broker import events as ev

_NOW = dt.datetime.now(dt.UTC)
_ALNUM = string.ascii_lowercase + string.digits

member_ids = st.from_regex(r"[a-z][a-z0-9-]{0,20}[a-z0-9]", fullmatch=True)
uuids = st.builds(uuid.uuid4)
past_times = st.datetimes(
    min_value=dt.datetime(2015, 1, 1), max_value=_NOW.replace(tzinfo=None) - dt.timedelta(days=1)
).map(lambda t: t.replace(tzinfo=dt.UTC, microsecond=t.microsecond // 1000 * 1000))
text = st.text(
    alphabet=st.characters(codec="utf-8", categories=("L", "N", "P")), min_size=1, max_size=40
)
account_ids = st.text(alphabet=_ALNUM + "-_", min_size=1, max_size=24)
emails = st.builds(
    lambda user, host, tld: f"{user}@{host}.{tld}",
    st.text(alphabet=_ALNUM + "._", min_size=1, max_size=12).filter(lambda s: s[0] != "."),
    st.text(alphabet=_ALNUM, min_size=1, max_size=12),
    st.sampled_from(["com", "net", "cn", "co.uk", "de"]),
)
phones = st.sampled_from(["+12025550143", "+442079460958", "+8613800138000", "+85291234567"])
ips = st.one_of(
    st.ip_addresses(v=4).map(str),
    st.ip_addresses(v=6).map(str),
)
countries = st.sampled_from(["US", "CN", "HK", "TR", "PH", "CO", "GB", "DE"])


@st.composite
def seller_identities(draw: st.DrawFn) -> ev.SellerIdentity:
    fields = {
        "account_id": draw(st.none() | account_ids),
        "display_name": draw(st.none() | text.map(str.casefold).filter(lambda s: s.strip())),
        "email": draw(st.none() | emails),
        "phone": draw(st.none() | phones),
        "country": draw(st.none() | countries),
        "payment_accounts": draw(st.lists(account_ids, max_size=3)),
        "merchant_ids": draw(st.lists(account_ids, max_size=2)),
        "ip_addresses": draw(st.lists(ips, max_size=3)),
        "device_ids": draw(st.lists(account_ids, max_size=2)),
    }
    if not any(v for k, v in fields.items() if k != "country"):
        fields["account_id"] = draw(account_ids)
    return ev.SellerIdentity(**fields)


@st.composite
def seller_indicators(draw: st.DrawFn) -> ev.SellerIndicator:
    observed = draw(past_times)
    published = observed + draw(
        st.timedeltas(min_value=dt.timedelta(0), max_value=dt.timedelta(hours=20))
    )
    expires = draw(st.none() | st.just(published + dt.timedelta(days=90)))
    return ev.SellerIndicator(
        indicator_id=draw(uuids),
        source_member=draw(member_ids),
        observed_at=observed,
        published_at=published,
        seller=draw(seller_identities()),
        product_categories=draw(
            st.lists(st.sampled_from(ev.ProductCategory), min_size=1, max_size=3)
        ),
        brands=draw(st.lists(text, max_size=3)),
        evidence=draw(
            st.lists(
                st.builds(
                    ev.Evidence, kind=st.sampled_from(ev.EvidenceKind), reference=account_ids
                ),
                max_size=2,
            )
        ),
        confidence=draw(st.integers(0, 100)),
        hss=draw(st.booleans()),
        tlp=draw(st.sampled_from(ev.Tlp)),
        purpose=draw(st.sampled_from(ev.SharingPurpose)),
        expires_at=expires,
    )


def seizure_reports() -> st.SearchStrategy[ev.SeizureReport]:
    return st.builds(
        ev.SeizureReport,
        report_id=uuids,
        source_member=st.just("ipr-center"),
        seized_on=st.dates(dt.date(2020, 1, 1), dt.date(2025, 12, 31)),
        product_category=st.sampled_from(ev.ProductCategory),
        origin_economy=countries,
        transport_mode=st.sampled_from(ev.TransportMode),
        msrp_usd_cents=st.integers(0, 10**12),
        quantity=st.integers(1, 10**6),
        hss=st.booleans(),
        de_minimis=st.booleans(),
        port_of_entry=st.none() | text,
        rights_holder=st.none() | member_ids,
        brands=st.lists(text, max_size=2),
        tlp=st.sampled_from(ev.Tlp),
        purpose=st.sampled_from(ev.SharingPurpose),
    )


def other_events() -> st.SearchStrategy[ev.Event]:
    return st.one_of(
        st.builds(
            ev.EnforcementAction,
            action_id=uuids,
            source_member=member_ids,
            indicator_id=uuids,
            taken_at=past_times,
            kind=st.sampled_from(ev.EnforcementKind),
            details=st.none() | text,
            tlp=st.sampled_from(ev.Tlp),
        ),
        st.builds(
            ev.Sighting,
            sighting_id=uuids,
            source_member=member_ids,
            indicator_id=uuids,
            observed_at=past_times,
            kind=st.sampled_from(ev.SightingKind),
            note=st.none() | text,
            tlp=st.sampled_from(ev.Tlp),
        ),
        st.builds(
            ev.Retraction,
            retraction_id=uuids,
            source_member=member_ids,
            indicator_id=uuids,
            retracted_at=past_times,
            reason=st.sampled_from(ev.RetractionReason),
            explanation=st.none() | text,
            tlp=st.sampled_from(ev.Tlp),
        ),
        seizure_reports(),
    )


def all_events() -> st.SearchStrategy[ev.Event]:
    return st.one_of(seller_indicators(), other_events())
