"""The end-to-end demo of the example consortium (``make demo``, ``make demo-check``):
development only, off the router's and the SDK's import paths."""
