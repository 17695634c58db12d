"""Errors raised by the micro-CA.

One hierarchy for the package (DESIGN.md "Errors"): callers catch :class:`CaError` and chain
their own errors with ``raise ... from``.
"""

from __future__ import annotations

__all__ = ["CaError", "PolicyError", "ProfileError"]


class CaError(Exception):
    """Base class of every error raised by :mod:`ca`."""


class ProfileError(CaError):
    """The subject or claims cannot form a certificate valid under the profile.

    The message names the offending field (a dataclass field name such as ``country``).
    """

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class PolicyError(CaError):
    """The issuance settings are invalid (for example a validity longer than 10 minutes)."""
