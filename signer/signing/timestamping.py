"""Where signature-time-stamps come from, and the clock check every token passes.

A 10-minute certificate has expired before most verifiers see the signature, so each signature
is time-stamped in the same HSM hop right after it is made (STANDARDS.md §2, §4). The source is
the built-in TSA (its key a token object in the same HSM, so the token costs one more HSM
signature and no round trip) or, by configuration, an external RFC 3161 service.

Either way the token's genTime must agree with the signer's own clock within
``tsa.max_clock_skew``: a signer whose clock has drifted would otherwise issue certificates whose
validity does not contain the time the TSA vouches for, and the signature would not validate
(EN 319 122-1 §5.3, EN 319 421 §7.7.2 on the TSA's accuracy). A token that fails the check
refuses the signature, like any other failure inside the hop: the key is destroyed, nothing is
released.
"""

from __future__ import annotations

import secrets
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Protocol

from asn1crypto import cms, tsp
from cryptography import x509

from ca.tsa import HASH_ALGORITHMS, TimeStampAuthority, TimeStampResp
from signer import metrics
from signer.errors import ConfigError, SignerError
from signer.formats.cms import Timestamper
from signer.formats.tsp_verify import TokenRejected, verify_reply
from signer.keys import HsmSession

__all__ = [
    "BuiltinTimeStamps",
    "ExternalTimeStamps",
    "TimeStampClockSkew",
    "TimeStampSource",
    "TimeStampUnavailable",
    "checked",
    "gen_time",
    "reply_status",
]

#: Largest TimeStampResp read from an external TSA: a token with a few certificates is a few
#: KiB; anything far larger is not an answer to our request.
MAX_REPLY_OCTETS = 256 * 1024


class TimeStampUnavailable(SignerError):
    slug = "tsa-unavailable"
    title = "The time-stamp authority did not answer with a usable token"
    status = 503


class TimeStampClockSkew(SignerError):
    slug = "tsa-clock-skew"
    title = "The signer's clock and the time-stamp authority's disagree"
    status = 503


class TimeStampSource(Protocol):
    """Makes signature-time-stamp tokens for the signatures of one HSM hop."""

    @property
    def certificates(self) -> tuple[x509.Certificate, ...]:
        """What a relying party needs to check the tokens: the TSA certificate (built-in) or
        the external TSA's trust anchors."""
        ...

    def bind(self, session: HsmSession) -> Timestamper:
        """A :class:`~signer.formats.cms.Timestamper` usable on the calling worker thread,
        with any HSM key bound to ``session``."""
        ...


@dataclass(frozen=True)
class BuiltinTimeStamps:
    """The built-in TSA: :class:`ca.tsa.TimeStampAuthority` with its token key ``key_label``."""

    authority: TimeStampAuthority
    key_label: str

    @property
    def certificates(self) -> tuple[x509.Certificate, ...]:
        return (self.authority.certificate,)

    def bind(self, session: HsmSession) -> Timestamper:
        key = session.token_key(self.key_label)

        def stamp(digest: bytes, hash_algorithm: str, /) -> bytes:
            return self.authority.timestamp_digest(digest, hash_algorithm, key)

        return stamp

    def respond(self, session: HsmSession, request_der: bytes) -> bytes:
        """A DER TimeStampResp for a client's DER TimeStampReq (RFC 3161 §2.4), signed with the
        token key held by ``session``; malformed requests get a rejection reply, not an error."""
        return self.authority.respond(request_der, session.token_key(self.key_label))


def _random_nonce() -> int:
    return secrets.randbits(64)


@dataclass(frozen=True)
class ExternalTimeStamps:
    """An external RFC 3161 TSA at ``url`` (RFC 3161 §3.4, HTTP transport), whose tokens must
    chain to one of ``trust_anchors`` (self-signed roots), through ``intermediates`` or the
    certificates in the token.

    Each token is requested for the signature value it covers, on the HSM worker thread of the
    signing hop (blocking I/O is fine there and keeps the request's work in one hop), with a
    fresh 64-bit nonce and certReq true, and is embedded only after
    :func:`signer.formats.tsp_verify.verify_reply` accepted it; any failure is
    :class:`TimeStampUnavailable` naming why, so the key is destroyed and nothing is released.
    ``timeout`` bounds connecting and each read (urllib's socket timeout).
    """

    url: str
    trust_anchors: tuple[x509.Certificate, ...]
    intermediates: tuple[x509.Certificate, ...]
    timeout: float
    nonces: Callable[[], int] = field(default=_random_nonce, repr=False)

    def __post_init__(self) -> None:
        if not self.url.startswith(("http://", "https://")):
            raise ConfigError("tsa.url: must be an http(s) URL")
        if not self.trust_anchors:
            raise ConfigError("tsa.trust_anchor_file: holds no self-signed root certificate")

    @classmethod
    def from_pem(cls, url: str, pem_file: Path, timeout: float) -> ExternalTimeStamps:
        """From the PEM file of ``tsa.trust_anchor_file``: its self-signed certificates are the
        trust anchors, the others (the TSA's issuing CAs) intermediates, like OpenSSL's
        ``-CAfile``/``-untrusted``."""
        try:
            found = x509.load_pem_x509_certificates(pem_file.read_bytes())
        except (OSError, ValueError) as exc:
            raise ConfigError(f"tsa.trust_anchor_file: no PEM certificates ({exc})") from exc
        roots = tuple(c for c in found if c.subject == c.issuer)
        others = tuple(c for c in found if c.subject != c.issuer)
        return cls(url=url, trust_anchors=roots, intermediates=others, timeout=timeout)

    @property
    def certificates(self) -> tuple[x509.Certificate, ...]:
        return (*self.trust_anchors, *self.intermediates)

    def bind(self, session: HsmSession) -> Timestamper:
        return self.stamp

    def stamp(self, digest: bytes, hash_algorithm: str, /) -> bytes:
        """A verified DER TimeStampToken over ``digest`` from the external TSA."""
        if hash_algorithm not in HASH_ALGORITHMS:
            raise TimeStampUnavailable(f"hash algorithm {hash_algorithm!r} not supported")
        nonce = self.nonces()
        query = tsp.TimeStampReq(
            {
                "version": "v1",
                "message_imprint": {
                    "hash_algorithm": {"algorithm": hash_algorithm},
                    "hashed_message": digest,
                },
                "nonce": nonce,
                "cert_req": True,
            }
        ).dump()
        reply = self._post(query)
        try:
            verified = verify_reply(
                reply,
                digest=digest,
                hash_algorithm=hash_algorithm,
                nonce=nonce,
                trust_anchors=self.trust_anchors,
                intermediates=self.intermediates,
            )
        except TokenRejected as exc:
            raise TimeStampUnavailable(f"external TSA token refused: {exc}") from exc
        return verified.token

    def _post(self, query: bytes) -> bytes:
        # The scheme is checked in __post_init__: http(s) only.
        request = urllib.request.Request(  # noqa: S310
            self.url,
            data=query,
            method="POST",
            headers={
                "Content-Type": "application/timestamp-query",
                "Accept": "application/timestamp-reply",
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as answer:  # noqa: S310
                reply: bytes = answer.read(MAX_REPLY_OCTETS + 1)
        except urllib.error.HTTPError as exc:
            raise TimeStampUnavailable(f"external TSA answered HTTP {exc.code}") from exc
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise TimeStampUnavailable(f"external TSA unreachable: {exc}") from exc
        if len(reply) > MAX_REPLY_OCTETS:
            raise TimeStampUnavailable("external TSA reply is too large")
        return reply


def reply_status(reply: bytes) -> str:
    """The PKIStatus of a DER TimeStampResp (``granted``, ``rejection``, ...), for the log."""
    try:
        return str(TimeStampResp.load(reply)["status"]["status"].native)
    except (ValueError, TypeError, KeyError):
        return "unparsable"


def gen_time(token: bytes) -> datetime:
    """The genTime of a DER TimeStampToken (RFC 3161 §2.4.2)."""
    try:
        info = cms.ContentInfo.load(token)["content"]["encap_content_info"]["content"].parsed
        if not isinstance(info, tsp.TSTInfo):
            raise TypeError("not a TSTInfo")
        when = info["gen_time"].native
    except (ValueError, TypeError, KeyError) as exc:
        raise TimeStampUnavailable("the time-stamp token cannot be parsed") from exc
    if not isinstance(when, datetime):
        raise TimeStampUnavailable("the time-stamp token has no genTime")
    return when


def checked(
    timestamper: Timestamper, clock: Callable[[], datetime], max_skew: timedelta
) -> Timestamper:
    """``timestamper`` whose tokens must carry a genTime within ``max_skew`` of ``clock``."""

    def stamp(digest: bytes, hash_algorithm: str, /) -> bytes:
        token = timestamper(digest, hash_algorithm)
        metrics.TIMESTAMPS.inc()
        skew = abs(gen_time(token) - clock())
        if skew > max_skew:
            raise TimeStampClockSkew(
                f"time-stamp genTime is {skew.total_seconds():.1f} s from the signer's clock "
                f"(at most {max_skew.total_seconds():g} s allowed)"
            )
        return token

    return stamp
