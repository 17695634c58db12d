"""The one error hierarchy of ``idp_adapter``.

Every failure of :meth:`idp_adapter.registry.IssuerRegistry.verify_bearer` is one of these.
The HTTP edge maps them to problem types; :attr:`InvalidToken.reason` is a stable code
for logs and metrics, never the token itself.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "PROOF_REASONS",
    "REASONS",
    "ConfigError",
    "IdentityNotAllowed",
    "IdpError",
    "IdpUnavailable",
    "InvalidProof",
    "InvalidToken",
]

#: Stable ``InvalidToken.reason`` codes (``bad_nonce``/``stale_auth``: ID tokens only;
#: ``not_access_token``: an ID token or another typed JWT presented as a bearer token;
#: ``sender_constrained``: a DPoP- or certificate-bound token presented without its proof;
#: ``binding_mismatch``: the proof's key or the client certificate is not the bound one).
REASONS: Final = frozenset(
    {
        "malformed",
        "unknown_issuer",
        "alg_not_allowed",
        "unknown_kid",
        "bad_signature",
        "expired",
        "not_yet_valid",
        "issued_in_future",
        "bad_audience",
        "missing_claim",
        "replayed",
        "bad_nonce",
        "stale_auth",
        "not_access_token",
        "sender_constrained",
        "binding_mismatch",
    }
)

#: Stable :attr:`InvalidProof.reason` codes (RFC 9449 §4.3 checks, in order).
PROOF_REASONS: Final = frozenset(
    {
        "missing",
        "malformed",
        "bad_type",
        "alg_not_allowed",
        "bad_key",
        "bad_signature",
        "wrong_method",
        "wrong_url",
        "stale",
        "bad_ath",
        "replayed",
        "nonce",
    }
)


class IdpError(Exception):
    """Base class of every error raised by ``idp_adapter``."""


class InvalidToken(IdpError):
    """The token failed verification (RFC 7519 §7.2, RFC 9068 §4, OIDC Core §3.1.3.7).

    ``reason`` is one of :data:`REASONS`; the message may add detail for the log.
    """

    def __init__(self, reason: str, detail: str | None = None) -> None:
        if reason not in REASONS:
            raise ValueError(f"unknown InvalidToken reason {reason!r}")
        self.reason = reason
        super().__init__(f"{reason}: {detail}" if detail else reason)


class InvalidProof(IdpError):
    """A DPoP proof (RFC 9449 §4.3) failed a check; ``reason`` is one of :data:`PROOF_REASONS`.
    ``nonce`` (reason ``nonce``) is the fresh server nonce to send back (RFC 9449 §9)."""

    def __init__(self, reason: str, detail: str | None = None, *, nonce: str | None = None) -> None:
        if reason not in PROOF_REASONS:
            raise ValueError(f"unknown InvalidProof reason {reason!r}")
        self.reason = reason
        self.nonce = nonce
        super().__init__(f"{reason}: {detail}" if detail else reason)


class IdentityNotAllowed(IdpError):
    """The token is valid, but the identity fails ``required_claims`` or lacks a claim that
    the subject mapping needs. The message names the claim."""


class IdpUnavailable(IdpError):
    """Discovery or the JWKS could not be fetched, or the answer was invalid."""


class ConfigError(IdpError, ValueError):
    """An :class:`~idp_adapter.settings.IssuerSettings` value is invalid; the message names
    the issuer and the setting."""
