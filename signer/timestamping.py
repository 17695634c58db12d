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

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from asn1crypto import cms, tsp
from cryptography import x509

from ca.tsa import TimeStampAuthority
from signer.errors import SignerError
from signer.formats.cms import Timestamper
from signer.hsm import HsmSession

__all__ = [
    "BuiltinTimeStamps",
    "TimeStampClockSkew",
    "TimeStampSource",
    "TimeStampUnavailable",
    "checked",
    "gen_time",
]


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
        skew = abs(gen_time(token) - clock())
        if skew > max_skew:
            raise TimeStampClockSkew(
                f"time-stamp genTime is {skew.total_seconds():.1f} s from the signer's clock "
                f"(at most {max_skew.total_seconds():g} s allowed)"
            )
        return token

    return stamp
