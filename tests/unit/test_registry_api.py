"""The registry's routes, as Confluent's clients call them (no HTTP needed here)."""

from __future__ import annotations

import json

import pytest

from broker.catalog import SchemaCatalog
from broker.registry import RegistryApi, RegistryError

API = RegistryApi(SchemaCatalog.load())


def test_schema_by_id_is_the_self_contained_schema() -> None:
    body = API.handle("/schemas/ids/6")
    schema = json.loads(body["schema"])
    assert schema["name"] == "SellerIndicator"
    assert schema["fields"][-1]["name"] == "expires_at"


def test_subjects_and_versions() -> None:
    assert "org.action.SellerIndicator" in API.handle("/subjects")
    assert API.handle("/subjects/org.action.SellerIndicator/versions") == [1, 2]
    latest = API.handle("/subjects/org.action.SellerIndicator/versions/latest")
    assert (latest["version"], latest["id"]) == (2, 6)
    first = API.handle("/subjects/org.action.SellerIndicator/versions/1?deleted=false")
    assert (first["version"], first["id"]) == (1, 1)
    assert API.handle("/schemas/ids/1/versions") == [
        {"subject": "org.action.SellerIndicator", "version": 1}
    ]


@pytest.mark.parametrize(
    ("path", "code"),
    [
        ("/schemas/ids/999", 40403),
        ("/subjects/org.action.Nope/versions", 40401),
        ("/subjects/org.action.SellerIndicator/versions/7", 40402),
        ("/subjects/org.action.SellerIndicator/versions/abc", 42202),
        ("/nowhere", 404),
    ],
)
def test_errors_use_confluent_codes(path: str, code: int) -> None:
    with pytest.raises(RegistryError) as info:
        API.handle(path)
    assert info.value.code == code
