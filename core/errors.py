"""The one exception type users see: its message is printed as a single line."""


class CodecError(Exception):
    """A user-facing failure (bad input, corrupt container, wrong weights...)."""
