"""Member-side publishing SDK and CLIs (see issue 6)."""
