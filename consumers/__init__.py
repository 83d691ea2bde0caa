"""Recipient-side feed reading SDK and CLIs (see issue 6)."""
