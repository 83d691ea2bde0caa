from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from broker import normalize as nz
from broker.match_tokens import MatchTokenKey, match_token
from broker.policy.treatments import generalize
from tests.strategies import emails


@pytest.mark.parametrize(
    ("fn", "raw", "expected"),
    [
        (nz.normalize_email, "  John.Doe@Example.COM ", "john.doe@example.com"),
        (nz.normalize_email, "shop@bücher.de", "shop@xn--bcher-kva.de"),
        (nz.normalize_phone, "+1 (202) 555-0143", "+12025550143"),
        (nz.normalize_phone, "+86 138 0013 8000", "+8613800138000"),
        (nz.registrable_domain, "https://Shop.Example.co.uk/store?id=1", "example.co.uk"),
        (nz.registrable_domain, "deals.myshopify.com", "deals.myshopify.com"),
        (nz.registrable_domain, "WWW.Counterfeit-Shoes.CN.", "counterfeit-shoes.cn"),
        (nz.normalize_url, "Example.com/a/b#frag", "https://example.com/a/b"),
        (nz.normalize_country, " hk ", "HK"),
        (nz.normalize_ip, "2001:0DB8:0000::0001", "2001:db8::1"),
        (nz.normalize_display_name, " \uff22\uff25\uff33\uff34  Deals ", "best deals"),
    ],
)
def test_examples(fn: object, raw: str, expected: str) -> None:
    assert fn(raw) == expected  # type: ignore[operator]


def test_national_phone_needs_a_region() -> None:
    assert nz.normalize_phone("020 7946 0958", "GB") == "+442079460958"
    with pytest.raises(ValueError, match="not a phone number"):
        nz.normalize_phone("020 7946 0958")


@pytest.mark.parametrize(
    ("fn", "raw", "words"),
    [
        (nz.normalize_email, "no-at-sign", "not an e-mail address"),
        (nz.normalize_url, "mailto:x@y.z", "not an http(s) URL"),
        (nz.normalize_url, "javascript:alert(1)", "not an http(s) URL"),
        (nz.registrable_domain, "http://192.168.0.1/", "no registrable domain"),
        (nz.normalize_country, "USA", "ISO 3166-1 alpha-2"),
        (nz.normalize_ip, "1.2.3", "not an IP address"),
        (nz.normalize_display_name, "   ", "empty"),
    ],
)
def test_invalid_values_raise_value_error(fn: object, raw: str, words: str) -> None:
    with pytest.raises(ValueError, match=re.escape(words)):
        fn(raw)  # type: ignore[operator]


def test_urls_lose_credentials_and_keep_ports() -> None:
    assert nz.normalize_url("https://user:pw@Shop.example.com:8443/x") == (
        "https://shop.example.com:8443/x"
    )
    assert nz.normalize_url("shop.example.com:8080/x") == "https://shop.example.com:8080/x"


@given(emails)
def test_email_normalization_is_idempotent(raw: str) -> None:
    once = nz.normalize_email(raw.upper())
    assert nz.normalize_email(once) == once


@given(st.text(min_size=1, max_size=40).filter(str.strip))
def test_display_name_normalization_is_idempotent(raw: str) -> None:
    try:
        once = nz.normalize_display_name(raw)
    except ValueError:
        return
    assert nz.normalize_display_name(once) == once


@given(st.ip_addresses())
def test_ip_normalization_is_idempotent(address: object) -> None:
    once = nz.normalize_ip(str(address).upper())
    assert nz.normalize_ip(once) == once


# --- one identifier, one token, whatever its rendering ------------------------------------

FORMAT_CHARACTERS = [
    "\u200b",
    "\u200c",
    "\u200d",
    "\u00ad",
    "\ufeff",
    "\u200e",
    "\u200f",
    "\u202a",
    "\u2060",
]
KEY = MatchTokenKey(1, b"k" * 32)


def _sprinkle(text: str, marks: list[tuple[int, str]]) -> str:
    """``text`` with invisible format characters inserted at the given positions."""
    out = text
    for position, mark in sorted(marks, reverse=True):
        at = position % (len(out) + 1)
        out = out[:at] + mark + out[at:]
    return out


invisible = st.lists(st.tuples(st.integers(0, 60), st.sampled_from(FORMAT_CHARACTERS)), max_size=4)


@given(
    email=emails,
    marks=invisible,
    wrap=st.sampled_from(["", "mailto:", "<>", "mailto<>"]),
    upper=st.booleans(),
)
def test_an_email_in_any_rendering_gives_one_match_token(
    email: str, marks: list[tuple[int, str]], wrap: str, upper: bool
) -> None:
    rendered = _sprinkle(email.upper() if upper else email, marks)
    if "mailto" in wrap:
        rendered = "mailto:" + rendered + ("?subject=fake%20shoes" if upper else "")
    if "<>" in wrap:
        rendered = f"<{rendered}>"
    expected = match_token(KEY, "email", nz.normalize_email(email))
    assert match_token(KEY, "email", nz.normalize_email(rendered)) == expected


@given(account=st.text(alphabet="ABCdef0123456789-_", min_size=1, max_size=20), marks=invisible)
def test_an_account_id_with_invisible_characters_gives_one_token(
    account: str, marks: list[tuple[int, str]]
) -> None:
    expected = match_token(KEY, "account_id", nz.normalize_account_id(account))
    rendered = nz.normalize_account_id(_sprinkle(account, marks))
    assert match_token(KEY, "account_id", rendered) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("https://shop.example.com:443/x", "https://shop.example.com/x"),
        ("http://shop.example.com:80/x", "http://shop.example.com/x"),
        ("https://shop.example.com:80/x", "https://shop.example.com:80/x"),
        ("HTTPS://Sh\u200bop.example.com/", "https://shop.example.com/"),
    ],
)
def test_default_ports_are_dropped_and_others_kept(raw: str, expected: str) -> None:
    assert nz.normalize_url(raw) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("https://shop.example/item", "shop.example"),
        ("deals.fake-shoes.test", "fake-shoes.test"),
        ("a.b.invalid", "b.invalid"),
        ("https://www.example.com/", "example.com"),
    ],
)
def test_reserved_test_domains_are_registrable(raw: str, expected: str) -> None:
    """RFC 2606 and 6761 reserve these for examples and tests; a store URL on one is valid
    and generalizes like any other."""
    assert nz.registrable_domain(raw) == expected
    assert generalize("seller.store_url", raw if "://" in raw else f"https://{raw}/") == (
        f"https://{expected}/"
    )
