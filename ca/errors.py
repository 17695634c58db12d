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

    The message is ``"<field>: <reason>"`` and names the offending field (a dataclass field
    name such as ``country``), also available as :attr:`field`. ``ProfileError("field:
    reason")`` with a single pre-formatted message is accepted too.
    """

    def __init__(self, field: str, reason: str | None = None) -> None:
        if reason is None:
            field, _, reason = field.partition(":")
            reason = reason.strip()
        super().__init__(f"{field}: {reason}" if reason else field)
        self.field = field
        self.reason = reason


class PolicyError(CaError):
    """The issuance settings are invalid (for example a validity longer than 10 minutes)."""
