"""Typed event models for SDK users, in lockstep with the Avro schemas.

Avro checks shapes; these models add what Avro cannot express: e-mail, URL, phone and
country syntax, the confidence range, times that are not in the future (beyond a clock
skew allowance), at least one seller identifier, and normalization of every identifier
(see :mod:`broker.normalize`). ``tests/unit/test_events.py`` proves each model has the
fields, optionality and enum symbols of its type's latest schema version.
"""

from __future__ import annotations

import datetime as dt
import uuid
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Self

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from broker.errors import EventValidationError
from broker.normalize import (
    normalize_account_id,
    normalize_country,
    normalize_display_name,
    normalize_email,
    normalize_ip,
    normalize_phone,
    normalize_text,
    normalize_url,
    registrable_domain,
)

#: How far in the future a timestamp may be before it is refused (producer clocks drift).
CLOCK_SKEW = dt.timedelta(minutes=5)

MEMBER_ID_PATTERN = r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$"


class Tlp(StrEnum):
    """TLP 2.0; AMBER_STRICT is TLP:AMBER+STRICT."""

    CLEAR = "CLEAR"
    GREEN = "GREEN"
    AMBER = "AMBER"
    AMBER_STRICT = "AMBER_STRICT"
    RED = "RED"


class ProductCategory(StrEnum):
    WEARING_APPAREL_ACCESSORIES = "WEARING_APPAREL_ACCESSORIES"
    HANDBAGS_WALLETS = "HANDBAGS_WALLETS"
    FOOTWEAR = "FOOTWEAR"
    WATCHES_JEWELRY = "WATCHES_JEWELRY"
    CONSUMER_ELECTRONICS = "CONSUMER_ELECTRONICS"
    CONSUMER_PRODUCTS = "CONSUMER_PRODUCTS"
    PHARMACEUTICALS_PERSONAL_CARE = "PHARMACEUTICALS_PERSONAL_CARE"
    AUTOMOTIVE_AEROSPACE = "AUTOMOTIVE_AEROSPACE"
    LABELS_TAGS = "LABELS_TAGS"
    TOYS = "TOYS"
    COMPUTERS_ACCESSORIES = "COMPUTERS_ACCESSORIES"
    CELL_PHONES_ACCESSORIES = "CELL_PHONES_ACCESSORIES"
    OTHER = "OTHER"


class SharingPurpose(StrEnum):
    IPR_ENFORCEMENT = "IPR_ENFORCEMENT"
    HEALTH_SAFETY = "HEALTH_SAFETY"
    FRAUD_PREVENTION = "FRAUD_PREVENTION"
    LAW_ENFORCEMENT = "LAW_ENFORCEMENT"
    OTHER = "OTHER"


class EvidenceKind(StrEnum):
    TEST_BUY = "TEST_BUY"
    RIGHTS_HOLDER_CONFIRMATION = "RIGHTS_HOLDER_CONFIRMATION"
    SEIZURE_REFERENCE = "SEIZURE_REFERENCE"
    LISTING_CAPTURE = "LISTING_CAPTURE"
    CUSTOMER_COMPLAINT = "CUSTOMER_COMPLAINT"
    OTHER = "OTHER"


class EnforcementKind(StrEnum):
    LISTING_REMOVED = "LISTING_REMOVED"
    ACCOUNT_SUSPENDED = "ACCOUNT_SUSPENDED"
    FUNDS_FROZEN = "FUNDS_FROZEN"
    SHIPMENT_SEIZED = "SHIPMENT_SEIZED"
    REFERRED_TO_LAW_ENFORCEMENT = "REFERRED_TO_LAW_ENFORCEMENT"
    OTHER = "OTHER"


class SightingKind(StrEnum):
    SEEN_TOO = "SEEN_TOO"
    ACTED_ON = "ACTED_ON"
    FALSE_POSITIVE = "FALSE_POSITIVE"
    EXPIRED = "EXPIRED"


class RetractionReason(StrEnum):
    MISTAKE = "MISTAKE"
    APPEAL_WON = "APPEAL_WON"
    DUPLICATE = "DUPLICATE"
    SUPERSEDED = "SUPERSEDED"
    OTHER = "OTHER"


class TransportMode(StrEnum):
    EXPRESS = "EXPRESS"
    MAIL = "MAIL"
    CARGO = "CARGO"
    OTHER = "OTHER"


def _millis_utc(value: dt.datetime) -> dt.datetime:
    """UTC, truncated to milliseconds: exactly what timestamp-millis can carry."""
    value = value.astimezone(dt.UTC)
    return value.replace(microsecond=value.microsecond // 1000 * 1000)


def _not_in_future(value: dt.datetime) -> dt.datetime:
    if value > dt.datetime.now(dt.UTC) + CLOCK_SKEW:
        raise ValueError(
            f"{value.isoformat()} is in the future (beyond the {CLOCK_SKEW} clock-skew allowance)"
        )
    return value


Timestamp = Annotated[AwareDatetime, AfterValidator(_millis_utc)]
PastTimestamp = Annotated[Timestamp, AfterValidator(_not_in_future)]
MemberId = Annotated[str, Field(pattern=MEMBER_ID_PATTERN)]
Text = Annotated[str, AfterValidator(normalize_text), Field(min_length=1, max_length=4096)]
Country = Annotated[str, AfterValidator(normalize_country)]
AccountId = Annotated[str, AfterValidator(normalize_account_id), Field(max_length=512)]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=True)


class PostalAddress(_Model):
    lines: list[Text] = Field(default_factory=list, max_length=8)
    city: Text | None = None
    region: Text | None = None
    postal_code: Text | None = None
    country: Country | None = None


class Evidence(_Model):
    kind: EvidenceKind
    reference: Text
    description: Text | None = None


class SellerIdentity(_Model):
    """A seller's identifiers, normalized so that every member derives the same values."""

    account_id: AccountId | None = None
    display_name: Annotated[str, AfterValidator(normalize_display_name)] | None = None
    store_url: Annotated[str, AfterValidator(normalize_url)] | None = None
    store_domain: Annotated[str, AfterValidator(registrable_domain)] | None = None
    email: Annotated[str, AfterValidator(normalize_email)] | None = None
    phone: str | None = None
    addresses: list[PostalAddress] = Field(default_factory=list, max_length=16)
    country: Country | None = None
    payment_accounts: list[AccountId] = Field(default_factory=list, max_length=64)
    merchant_ids: list[AccountId] = Field(default_factory=list, max_length=64)
    ip_addresses: list[Annotated[str, AfterValidator(normalize_ip)]] = Field(
        default_factory=list, max_length=256
    )
    device_ids: list[AccountId] = Field(default_factory=list, max_length=256)

    @model_validator(mode="after")
    def _derive_and_require(self) -> Self:
        # The phone's national form is read in the seller's country; the domain follows the URL.
        if self.phone is not None:
            object.__setattr__(self, "phone", normalize_phone(self.phone, self.country))
        if self.store_url is not None:
            # Checked even when the domain is given: a treatment generalizes the URL to it.
            url_domain = registrable_domain(self.store_url)
            if self.store_domain is None:
                object.__setattr__(self, "store_domain", url_domain)
        if not any(getattr(self, name) for name in SELLER_IDENTIFIERS):
            raise ValueError(
                "at least one seller identifier is required: " + ", ".join(SELLER_IDENTIFIERS)
            )
        return self


#: The fields of SellerIdentity that identify a seller (country alone does not).
SELLER_IDENTIFIERS = (
    "account_id",
    "display_name",
    "store_url",
    "store_domain",
    "email",
    "phone",
    "addresses",
    "payment_accounts",
    "merchant_ids",
    "ip_addresses",
    "device_ids",
)


class Event(_Model):
    """Base of every event; ``avro_type`` names its schema in the catalog."""

    avro_type: ClassVar[str]

    source_member: MemberId

    def to_avro(self) -> dict[str, Any]:
        """The record as the codec writes it (enums as symbols, UUIDs as text)."""
        record = self.model_dump(mode="python")
        return avro_values(record)  # type: ignore[no-any-return]

    @classmethod
    def from_avro(cls, record: dict[str, Any]) -> Self:
        """Validate a decoded record (a reader may drop fields it does not model)."""
        return cls.parse(record)

    @classmethod
    def parse(cls, data: Any) -> Self:
        """Validate ``data``; every problem is named in one EventValidationError."""
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            problems = [
                (".".join(str(p) for p in err["loc"]) or "<record>", err["msg"])
                for err in exc.errors()
            ]
            listed = "; ".join(f"{where}: {msg}" for where, msg in problems)
            raise EventValidationError(
                f"invalid {cls.avro_type}: {listed}", problems=problems
            ) from None


_PLAIN_TYPES = frozenset({str, int, bool, float, type(None), dt.datetime, dt.date, bytes})


def avro_values(value: Any) -> Any:
    """Plain values as the codec writes them and JSON carries them: enums as symbols,
    UUIDs as text."""
    # Most leaves are plain: checked inline, so only containers, enums and UUIDs cost a
    # call (a record has some thirty leaves, and the router converts every one it routes).
    plain = _PLAIN_TYPES
    if type(value) in plain:
        return value
    if isinstance(value, dict):
        return {k: v if type(v) in plain else avro_values(v) for k, v in value.items()}
    if isinstance(value, list):
        return [v if type(v) in plain else avro_values(v) for v in value]
    if isinstance(value, StrEnum):
        return value.value
    if isinstance(value, uuid.UUID):
        return str(value)
    return value


class SellerIndicator(Event):
    avro_type: ClassVar[str] = "SellerIndicator"

    indicator_id: uuid.UUID
    observed_at: PastTimestamp
    published_at: PastTimestamp
    seller: SellerIdentity
    product_categories: list[ProductCategory] = Field(min_length=1, max_length=16)
    brands: list[Text] = Field(default_factory=list, max_length=64)
    evidence: list[Evidence] = Field(default_factory=list, max_length=64)
    confidence: int = Field(ge=0, le=100)
    hss: bool
    tlp: Tlp
    purpose: SharingPurpose
    expires_at: Timestamp | None = None

    @model_validator(mode="after")
    def _times_in_order(self) -> Self:
        if self.observed_at > self.published_at:
            raise ValueError("observed_at is after published_at")
        if self.expires_at is not None and self.expires_at <= self.published_at:
            raise ValueError("expires_at must be after published_at")
        return self


class EnforcementAction(Event):
    avro_type: ClassVar[str] = "EnforcementAction"

    action_id: uuid.UUID
    indicator_id: uuid.UUID
    taken_at: PastTimestamp
    kind: EnforcementKind
    details: Text | None = None
    tlp: Tlp


class Sighting(Event):
    avro_type: ClassVar[str] = "Sighting"

    sighting_id: uuid.UUID
    indicator_id: uuid.UUID
    observed_at: PastTimestamp
    kind: SightingKind
    note: Text | None = None
    tlp: Tlp


class Retraction(Event):
    avro_type: ClassVar[str] = "Retraction"

    retraction_id: uuid.UUID
    indicator_id: uuid.UUID
    retracted_at: PastTimestamp
    reason: RetractionReason
    explanation: Text | None = None
    tlp: Tlp


class SeizureReport(Event):
    avro_type: ClassVar[str] = "SeizureReport"

    report_id: uuid.UUID
    seized_on: dt.date
    product_category: ProductCategory
    origin_economy: Country
    transport_mode: TransportMode
    msrp_usd_cents: int = Field(ge=0)
    quantity: int = Field(ge=1)
    hss: bool
    de_minimis: bool
    port_of_entry: Text | None = None
    rights_holder: MemberId | None = None
    brands: list[Text] = Field(default_factory=list, max_length=64)
    tlp: Tlp
    purpose: SharingPurpose

    @field_validator("seized_on")
    @classmethod
    def _not_future_date(cls, value: dt.date) -> dt.date:
        if value > (dt.datetime.now(dt.UTC) + CLOCK_SKEW).date():
            raise ValueError(f"{value.isoformat()} is in the future")
        return value


#: Every event model by its Avro type name.
EVENT_TYPES: dict[str, type[Event]] = {
    model.avro_type: model
    for model in (SellerIndicator, EnforcementAction, Sighting, Retraction, SeizureReport)
}


def parse_event(type_name: str, data: Any) -> Event:
    """Validate ``data`` as the event type ``type_name``."""
    try:
        model = EVENT_TYPES[type_name]
    except KeyError:
        known = ", ".join(sorted(EVENT_TYPES))
        raise EventValidationError(f"unknown event type {type_name!r} (known: {known})") from None
    return model.parse(data)


def parse_typed_event(data: Any) -> tuple[str, Event]:
    """A JSON object naming its event type under ``"type"``, the way the CLIs, policy test
    cases and impact previews write records."""
    if not isinstance(data, dict):
        raise EventValidationError(f"a record must be a JSON object, found {type(data).__name__}")
    body = dict(data)
    type_name = body.pop("type", None)
    if not isinstance(type_name, str):
        known = ", ".join(sorted(EVENT_TYPES))
        raise EventValidationError(f'the record needs a "type" key naming its event type ({known})')
    return type_name, parse_event(type_name, body)
