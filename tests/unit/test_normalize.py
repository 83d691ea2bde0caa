from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from broker import normalize as nz
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
