"""The verified identity behind a token."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

__all__ = ["Principal"]


@dataclass(frozen=True)
class Principal:
    """Who presented the token, as far as the signer is concerned.

    ``issuer``/``subject`` are ``iss``/``sub`` (RFC 7519 §4.1.1-2, unique together per OIDC
    Core §2); ``client_id`` is RFC 9068 §2.2 ``client_id`` or OIDC ``azp``; ``attributes``
    is the rendered subject mapping (certificate-subject fields); ``token_id`` is ``jti``.
    ``acr``/``amr``/``auth_time`` follow OIDC Core §2 when the token carries them.
    ``email`` is the ``email`` claim only when ``email_verified`` is true (OIDC Core §5.1,
    §5.7: an unverified address identifies nobody). ``groups`` is the issuer's group claim
    (``groups_claim``, default ``groups``), as ``roles``; the signing policy matches both.
    ``jkt``/``x5t_s256`` bind the token to a key the sender must prove (:mod:`.binding`).
    """

    issuer: str
    issuer_name: str
    subject: str
    client_id: str | None
    subject_type: Literal["natural", "legal"]
    attributes: Mapping[str, str]
    profiles: tuple[str, ...]
    default_profile: str
    roles: frozenset[str]
    token_id: str | None
    expires_at: datetime
    acr: str | None = None
    amr: tuple[str, ...] = ()
    auth_time: datetime | None = None
    email: str | None = None
    groups: frozenset[str] = frozenset()
    #: RFC 7800 ``cnf`` of a sender-constrained token: ``jkt`` (RFC 9449 §6.1, the DPoP key's
    #: RFC 7638 thumbprint) and ``x5t#S256`` (RFC 8705 §3.1, the client certificate's SHA-256).
    jkt: str | None = None
    x5t_s256: str | None = None
