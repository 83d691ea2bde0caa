"""Record signatures (broker.signing): what verifies, what is named when not."""

from __future__ import annotations

from pathlib import Path

import pytest

from broker.errors import ProvenanceError
from broker.policy.engine import PolicySet
from broker.policy.loader import load_policies
from broker.signing import SignatureVerifier, header_map, sign_record
from policies.demo_keys import demo_signing_key, public_b64


def test_signatures_verify_and_name_what_is_wrong(policies: PolicySet) -> None:
    verifier = SignatureVerifier(policies.registry)
    value = b"\x00\x00\x00\x00\x01payload"
    headers = header_map(sign_record(value, demo_signing_key("platform-a"), "platform-a-sig-2026"))
    assert verifier.verify(value, headers, "platform-a") == "platform-a-sig-2026"
    cases = {
        "signature.invalid": (value + b"!", headers, "platform-a"),
        "signature.wrong_signer": (value, headers, "platform-b"),
        "signature.missing": (value, {}, "platform-a"),
        "signature.unknown_key": (value, {**headers, "action.kid": b"nobody-1"}, "platform-a"),
    }
    for reason, (data, hdrs, source) in cases.items():
        with pytest.raises(ProvenanceError) as info:
            verifier.verify(data, hdrs, source)
        assert info.value.reason == reason


def test_records_signed_before_a_rotation_still_verify(policy_copy: Path) -> None:
    members = policy_copy / "members.yaml"
    new_key = demo_signing_key("platform-a-2027")
    text = members.read_text().replace(
        "      - kid: platform-a-sig-2026\n",
        f"      - kid: platform-a-sig-2027\n        public_key: {public_b64(new_key)}\n"
        "      - kid: platform-a-sig-2026\n",
    )
    members.write_text(text)
    verifier = SignatureVerifier(load_policies(policy_copy).registry)
    for key, kid in (
        (demo_signing_key("platform-a"), "platform-a-sig-2026"),
        (new_key, "platform-a-sig-2027"),
    ):
        assert verifier.verify(b"v", header_map(sign_record(b"v", key, kid)), "platform-a") == kid
