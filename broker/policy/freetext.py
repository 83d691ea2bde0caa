"""Identifiers inside free text get the treatment their structured field gets.

A rule that hashes ``seller.email`` for a recipient means little if the same address
reaches that recipient in clear inside ``display_name``, an evidence description or a
retraction's ``explanation``. So every free-text value delivered in clear is scanned for
identifiers (e-mail addresses, phone numbers, URLs and domains, IP addresses, payment
card and IBAN numbers), and each one found is replaced in place by what the recipient's
rules do to that kind of identifier in its structured field: its match token where
``seller.email`` is hashed (the same token, so it still correlates), its general form,
its mask, or ``[email withheld]`` where the field is dropped or encrypted. Detection uses
well-kept libraries where they exist (phonenumbers finds phone numbers in text; the
e-mail, URL and IP candidates found by pattern are checked with the normalizers and
:mod:`ipaddress`). Pure code.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import phonenumbers

from broker.match_tokens import MatchTokenKey, match_token
from broker.normalize import (
    normalize_email,
    normalize_ip,
    normalize_phone,
    normalize_url,
    registrable_domain,
)
from broker.policy.model import Treatment
from broker.policy.treatments import generalize, mask

#: Each kind of identifier found in text, and the structured field whose treatment it gets.
STRUCTURED: dict[str, str] = {
    "email": "seller.email",
    "phone": "seller.phone",
    "url": "seller.store_url",
    "domain": "seller.store_domain",
    "ip": "seller.ip_addresses",
    "payment": "seller.payment_accounts",
}
#: Treatable paths that are identifiers themselves (treated as fields, not scanned).
IDENTIFIER_FIELDS = frozenset(
    {
        *STRUCTURED.values(),
        "seller.account_id",
        "seller.merchant_ids",
        "seller.device_ids",
        "seller.addresses",
        "seller.country",
    }
)

_EMAIL = re.compile(r"(?:mailto:)?[\w.+-]+@[\w-]+(?:\.[\w-]+)+", re.IGNORECASE)
_URL = re.compile(r"https?://[^\s<>\"']+", re.IGNORECASE)
_DOMAIN = re.compile(
    r"(?<![\w@.-])(?:[a-z0-9](?:[a-z0-9-]*[a-z0-9])?\.)+[a-z]{2,}(?![\w-])", re.IGNORECASE
)
_IPV4 = re.compile(r"(?<![\d.])\d{1,3}(?:\.\d{1,3}){3}(?![\d.])")
_IPV6 = re.compile(r"(?<![\w:])[0-9a-f]{0,4}(?::[0-9a-f]{0,4}){2,7}(?![\w:])", re.IGNORECASE)
_CARD = re.compile(r"(?<!\d)\d(?:[ -]?\d){12,18}(?!\d)")
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}\b")


@dataclass(frozen=True, slots=True)
class Found:
    start: int
    end: int
    kind: str  # a key of STRUCTURED
    normalized: str  # the identifier in its normalized form (what tokens are made of)


def find_identifiers(text: str) -> list[Found]:
    """Identifiers in ``text``, without overlaps (earlier and longer ones win)."""
    candidates: list[Found] = []
    for match in _EMAIL.finditer(text):
        _add(candidates, match, "email", normalize_email)
    for match in _URL.finditer(text):
        url = match.group().rstrip(".,;:!?)")  # sentence punctuation is not the URL's
        try:
            candidates.append(
                Found(match.start(), match.start() + len(url), "url", normalize_url(url))
            )
        except ValueError:
            continue
    for match in _IPV4.finditer(text):
        _add(candidates, match, "ip", normalize_ip)
    for match in _IPV6.finditer(text):
        if match.group().count(":") >= 2:
            _add(candidates, match, "ip", normalize_ip)
    for match in _CARD.finditer(text):
        digits = re.sub(r"\D", "", match.group())
        if _luhn(digits):
            candidates.append(Found(match.start(), match.end(), "payment", digits))
    for match in _IBAN.finditer(text):
        compact = match.group().replace(" ", "")
        if _iban_valid(compact):
            candidates.append(Found(match.start(), match.end(), "payment", compact))
    for number in phonenumbers.PhoneNumberMatcher(text, None):
        try:
            normalized = normalize_phone(number.raw_string)
        except ValueError:
            continue
        candidates.append(Found(number.start, number.end, "phone", normalized))
    for match in _DOMAIN.finditer(text):
        _add(candidates, match, "domain", registrable_domain)
    chosen: list[Found] = []
    for found in sorted(candidates, key=lambda f: (f.start, -(f.end - f.start))):
        if all(found.start >= c.end or found.end <= c.start for c in chosen):
            chosen.append(found)
    return sorted(chosen, key=lambda f: f.start)


def _add(
    out: list[Found], match: re.Match[str], kind: str, normalize: Callable[[str], str]
) -> None:
    try:
        value = normalize(match.group())
    except (ValueError, UnicodeError):
        return
    out.append(Found(match.start(), match.end(), kind, value))


def _luhn(digits: str) -> bool:
    if not 13 <= len(digits) <= 19:
        return False
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char)
        if position % 2:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def _iban_valid(iban: str) -> bool:
    rearranged = iban[4:] + iban[:4]
    number = "".join(str(int(ch, 36)) for ch in rearranged)
    return int(number) % 97 == 1


def scrub(text: str, treatments: Mapping[str, Treatment], match_key: MatchTokenKey) -> str:
    """``text`` with each identifier found replaced as ``treatments`` (kind -> the
    treatment of its structured field for this recipient) says; a kind not listed is
    withheld."""
    found = find_identifiers(text)
    if not found:
        return text
    out, last = [], 0
    for item in found:
        out.append(text[last : item.start])
        out.append(
            _replacement(
                item,
                treatments.get(item.kind, Treatment.DROP),
                match_key,
                text[item.start : item.end],
            )
        )
        last = item.end
    out.append(text[last:])
    return "".join(out)


def _replacement(item: Found, treatment: Treatment, match_key: MatchTokenKey, original: str) -> str:
    path = STRUCTURED[item.kind]
    if treatment is Treatment.KEEP:
        return original
    if treatment is Treatment.HASH:
        # The structured field's token kind, so a token in text matches the field's.
        return match_token(match_key, path.rpartition(".")[2], item.normalized)
    if treatment is Treatment.MASK:
        return mask(item.normalized)
    if treatment is Treatment.GENERALIZE and item.kind in ("email", "phone", "url", "ip"):
        value = item.normalized
        if item.kind == "ip":
            value = str(ipaddress.ip_address(value))
        return str(generalize(path, value))
    return f"[{item.kind} withheld]"
