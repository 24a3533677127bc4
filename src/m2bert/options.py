"""What every configuration shares: the start-up error type.

A ``ConfigError`` is a user's configuration problem found before heavy work starts; the CLIs print it as
one line and exit 2 (``m2bert.cli``).
"""
from __future__ import annotations


class ConfigError(ValueError):
    """A configuration problem found at start-up, before any heavy work."""
