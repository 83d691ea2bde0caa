"""base64url without padding (broker.base64url): the one text form of keys, salts,
commitments, tokens and sealed values."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from broker import base64url


@given(data=st.binary(max_size=80))
def test_decoding_undoes_encoding_and_the_text_is_the_standard_unpadded_form(data: bytes) -> None:
    text = base64url.encode(data)
    assert base64url.decode(text) == data
    assert text == base64.urlsafe_b64encode(data).rstrip(b"=").decode()
    assert base64url.decode(base64.urlsafe_b64encode(data).decode()) == data, "padded too"


@pytest.mark.parametrize("text", ["ab+c", "ab/c", "ab c", "a.bc", "abc\n"])
def test_a_character_outside_the_alphabet_is_refused_not_skipped(text: str) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - binascii.Error is a ValueError
        base64url.decode(text)
