"""Identifier normalization shared by every party, so one seller yields one value.

Every function is idempotent (``f(f(x)) == f(x)``) and raises ``ValueError`` with a
readable message when the input is not a valid identifier of its kind. Match tokens
(keyed hashes) are computed over these normalized forms.
"""

from __future__ import annotations

import ipaddress
import re
import unicodedata
from functools import lru_cache
from urllib.parse import urlsplit

import phonenumbers
import pycountry
import tldextract

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_SPACES = re.compile(r"\s+")
# "mailto:x", "javascript:y": a scheme without "//" (a dotted host before ":port" is not one)
_OTHER_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+-]*:(?!//)")
# ISO 3166-1 alpha-2, plus XK (Kosovo), which customs and carriers use in practice.
COUNTRY_CODES = frozenset(c.alpha_2 for c in pycountry.countries) | {"XK"}


@lru_cache(maxsize=1)
def _domain_extractor() -> tldextract.TLDExtract:
    # The public suffix list snapshot shipped with tldextract: never fetched at run time.
    # Private suffixes on: seller.myshopify.com is the seller's own store, not myshopify.com.
    return tldextract.TLDExtract(
        suffix_list_urls=(), cache_dir=None, include_psl_private_domains=True
    )


#: Reserved for documentation and testing (RFC 2606, RFC 6761): not on the public suffix
#: list, yet ``shop.example`` is as registrable in examples as ``shop.com`` is in life.
RESERVED_TLDS = frozenset({"example", "test", "invalid"})
_DEFAULT_PORTS = {"http": 80, "https": 443}


def _without_format_characters(text: str) -> str:
    """Without Unicode format characters (category Cf: zero-width space and joiners, soft
    hyphen, byte-order mark, bidirectional marks): invisible, they would make one
    identifier into many different values and match tokens."""
    if text.isascii():
        return text
    return "".join(ch for ch in text if unicodedata.category(ch) != "Cf")


def normalize_text(value: str) -> str:
    """NFKC, without format characters, trimmed, inner whitespace collapsed to one space
    (case kept)."""
    text = _without_format_characters(unicodedata.normalize("NFKC", value))
    return _SPACES.sub(" ", text).strip()


def normalize_display_name(value: str) -> str:
    """Display names compare case-insensitively: NFKC, case-folded, whitespace collapsed."""
    name = normalize_text(value).casefold()
    if not name:
        raise ValueError("display name is empty")
    return name


def normalize_account_id(value: str) -> str:
    """Account, merchant, payment and device ids: trimmed, otherwise exactly as issued."""
    ident = normalize_text(value)
    if not ident:
        raise ValueError("identifier is empty")
    return ident


def _idna(host: str) -> str:
    try:
        return host.encode("idna").decode("ascii")
    except UnicodeError as exc:
        raise ValueError(f"{host!r} is not a valid domain name") from exc


@lru_cache(maxsize=65_536)  # sellers recur: the router sees the same values often
def normalize_email(value: str) -> str:
    """Lower-cased, trimmed; the domain in IDNA (punycode) form. ``mailto:`` links and
    ``<angle brackets>`` are unwrapped: one address, however it was pasted."""
    email = normalize_text(value).lower()
    if email.startswith("<") and email.endswith(">"):
        email = email[1:-1].strip()
    if email.startswith("mailto:"):
        email = email.removeprefix("mailto:").partition("?")[0].strip()
    if not _EMAIL.match(email):
        raise ValueError(f"{value!r} is not an e-mail address (expected local@domain.tld)")
    local, _, domain = email.rpartition("@")
    return f"{local}@{_idna(domain.rstrip('.'))}"


@lru_cache(maxsize=65_536)  # sellers recur: the router sees the same values often
def normalize_phone(value: str, default_region: str | None = None) -> str:
    """E.164 (``+<country code><number>``); a national number needs ``default_region``."""
    try:
        number = phonenumbers.parse(value, default_region)
    except phonenumbers.NumberParseException as exc:
        region = f" (region {default_region})" if default_region else ""
        raise ValueError(f"{value!r} is not a phone number{region}: {exc}") from exc
    if not phonenumbers.is_possible_number(number):
        raise ValueError(f"{value!r} is not a possible phone number")
    return str(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164))


@lru_cache(maxsize=65_536)  # sellers recur: the router sees the same values often
def normalize_url(value: str) -> str:
    """An http(s) URL with lower-case scheme and host; no credentials, no fragment."""
    text = normalize_text(value)
    if _OTHER_SCHEME.match(text):
        raise ValueError(f"{value!r} is not an http(s) URL")
    if "://" not in text:
        text = "https://" + text
    parts = urlsplit(text)
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{value!r} is not an http(s) URL")
    host = _idna(parts.hostname.rstrip("."))
    scheme = parts.scheme.lower()
    port = None if parts.port == _DEFAULT_PORTS[scheme] else parts.port
    netloc = host if port is None else f"{host}:{port}"
    path = parts.path or "/"
    query = f"?{parts.query}" if parts.query else ""
    return f"{scheme}://{netloc}{path}{query}"


@lru_cache(maxsize=65_536)  # sellers recur: the router sees the same values often
def registrable_domain(value: str) -> str:
    """The registrable domain of a URL or host: ``shop.Example.co.uk`` -> ``example.co.uk``."""
    text = normalize_text(value)
    host = urlsplit(text if "://" in text else "//" + text).hostname
    if not host:
        raise ValueError(f"{value!r} has no host name")
    host = _idna(host.rstrip("."))
    labels = host.lower().split(".")
    if len(labels) >= 2 and labels[-1] in RESERVED_TLDS and all(labels):
        return ".".join(labels[-2:])
    extracted = _domain_extractor()(host)
    domain = extracted.top_domain_under_public_suffix
    if not domain:
        raise ValueError(f"{value!r} has no registrable domain (is it an IP or a bare suffix?)")
    return domain.lower()


def normalize_country(value: str) -> str:
    """ISO 3166-1 alpha-2, upper case."""
    code = normalize_text(value).upper()
    if code not in COUNTRY_CODES:
        raise ValueError(f"{value!r} is not an ISO 3166-1 alpha-2 country code")
    return code


def normalize_ip(value: str) -> str:
    """Canonical text of an IPv4 or IPv6 address (IPv6 compressed, lower case)."""
    try:
        return str(ipaddress.ip_address(normalize_text(value)))
    except ValueError as exc:
        raise ValueError(f"{value!r} is not an IP address") from exc
