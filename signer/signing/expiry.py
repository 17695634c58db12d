"""The certificates the service stands on, watched for their end (issue 15, items 2 and 3).

Root, issuing CA, built-in TSA and the delegated OCSP responder certificates (the root's, and
one per issuing CA generation) each have a *renewal lead*: how long before its end the
operator must act. The end is ``notAfter``, but for the TSA the end of its key's
privateKeyUsagePeriod (:func:`ca.tsa.key_usage_period`): after it the TSA refuses to
time-stamp, so the key must be rolled (`qes ca rollover tsa`, `qes ca switch tsa`) before then.
The responders (RFC 6960 §4.2.2.2.1, id-pkix-ocsp-nocheck, so short-lived and never revoked)
are renewed by ``qes init`` once a third of their life is left
(``ca.ocsp.RESPONDER_RENEW_BEFORE``), unless one already ends with its CA (renewing gains
nothing: it is not watched, its CA's end is); the TSA key must be replaced while time-stamps
made under it can still be validated and extended (EN 319 421 §7.7.4, key life cycle; ETSI TS
119 312 for lengths); the issuing CA and the root must be rolled while their successors can
still be distributed as trust anchors (EN 319 411-1 §6.3.6 key changeover). Each worker
exports ``qes_certificate_not_after_timestamp_seconds`` and
``qes_certificate_renew_by_timestamp_seconds`` per role (``ocsp-issuing`` is the current
issuing CA generation's responder, ``ocsp-issuing-g<n>`` that of each other generation; the
alert rule ``QesSignerCertificateRenewalDue`` fires once ``time()`` passes the second), and
logs ``certificate_renewal_due`` at start and every hour while one is due, naming what to run.

The root's CRL is signed offline in the key ceremony (:mod:`signer.signing.ceremony`), so no
replica can renew it: each worker reads the newest imported one every hour, exports its
nextUpdate (RFC 5280 §5.1.2.5) as ``qes_root_crl_next_update_timestamp_seconds`` and logs
``root_crl_renewal_due`` from :data:`ROOT_CRL_LEAD` before it (the alert rule
``QesSignerRootCrlDue`` fires then too): after nextUpdate relying parties treat the issuing
CA's revocation status as unknown (§6.3.3), and the B-LT validation data carries a stale CRL.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog
from cryptography import x509

from ca.authority import Chain
from ca.ocsp import RESPONDER_RENEW_BEFORE, renewable
from ca.tsa import key_usage_period
from signer import metrics, periodic
from signer.signing.ceremony import ROOT_CRL_LEAD
from signer.signing.revocation import Responders
from signer.storage.authority import Generation, StoredCrl

log = structlog.get_logger(__name__)
CHECK_SECONDS = 3600.0

#: How long before ``notAfter`` each role's certificate must be replaced (module docstring).
RENEWAL_LEAD: dict[str, timedelta] = {
    "root": timedelta(days=3 * 365),
    "issuing": timedelta(days=365),
    "tsa": timedelta(days=90),
    "ocsp-root": RESPONDER_RENEW_BEFORE,
    "ocsp-issuing": RESPONDER_RENEW_BEFORE,
}
#: What the operator does when a role's renewal is due (README "Certificate ends").
ACTION: dict[str, str] = {
    "root": "make a new root and distribute it to relying parties as a trust anchor",
    "issuing": "roll the issuing CA before it expires (`qes ca rollover issuing`, then"
    " `qes ca switch issuing`): no certificate can outlive it",
    "tsa": "roll the TSA key before its usage period ends: `qes ca rollover tsa`, then"
    " `qes ca switch tsa`",
    "ocsp-root": "renew the root's OCSP responder certificate in the key ceremony: `qes init`"
    " with the root token, or `qes ca request ocsp-root`, `qes ca root sign` (offline),"
    " `qes ca import`",
    "ocsp-issuing": "run `qes init`: it renews the OCSP responder certificates",
}


ROOT_CRL_ACTION = (
    "sign the root's next CRL in the key ceremony: `qes ca request crl` (online),"
    " `qes ca root crl` (offline), `qes ca import` (online)"
)


@dataclass(frozen=True)
class Watched:
    """One certificate the service relies on, under its role; ``generation`` tells apart
    the responder certificates of issuing CA generations other than the current one."""

    role: str
    certificate: x509.Certificate
    generation: int | None = None

    @property
    def name(self) -> str:
        """The role as exported and logged: ``ocsp-issuing-g2`` for a generation's."""
        return self.role if self.generation is None else f"{self.role}-g{self.generation}"

    @property
    def not_after(self) -> datetime:
        return self.certificate.not_valid_after_utc

    @property
    def ends(self) -> datetime:
        """When it can no longer serve: ``notAfter``, or for the TSA its key usage's end."""
        if self.role == "tsa":
            return key_usage_period(self.certificate)[1]
        return self.not_after

    @property
    def renew_by(self) -> datetime:
        """The moment the operator must have replaced it."""
        return self.ends - RENEWAL_LEAD[self.role]


def watched(
    chain: Chain,
    tsa: x509.Certificate | None,
    responders: Responders | None,
    generations: Sequence[Generation],
) -> tuple[Watched, ...]:
    """The service's certificates by role: no TSA with an external one, no responders before
    ``qes init`` made them; the responder certificate of each issuing CA generation in
    ``generations`` (numbered unless it is the current one's), but none that ends with its CA
    (:func:`ca.ocsp.renewable`)."""
    found = [Watched("root", chain.root), Watched("issuing", chain.issuing)]
    if tsa is not None:
        found.append(Watched("tsa", tsa))
    if responders is not None:
        found.append(Watched("ocsp-root", responders.root))
        numbers = {g.certificate: g.number for g in generations}
        for ca, responder in responders.issuing:
            if renewable(responder, ca):
                number = None if ca == chain.issuing else numbers.get(ca)
                found.append(Watched("ocsp-issuing", responder, number))
    return tuple(found)


def check(certificates: Iterable[Watched], now: datetime) -> list[Watched]:
    """Export both timestamps of each certificate and log each one whose renewal is due;
    return those."""
    due = []
    for w in certificates:
        metrics.CERT_NOT_AFTER.labels(w.name).set(w.not_after.timestamp())
        metrics.CERT_RENEW_BY.labels(w.name).set(w.renew_by.timestamp())
        if now >= w.renew_by:
            due.append(w)
            log.warning(
                "certificate_renewal_due",
                role=w.name,
                not_after=w.not_after.isoformat(),
                ends=w.ends.isoformat(),
                days_left=max((w.ends - now).days, 0),
                serial=f"{w.certificate.serial_number:x}",
                action=ACTION[w.role],
            )
    return due


def check_root_crl(crl: StoredCrl, now: datetime) -> bool:
    """Export the root CRL's nextUpdate and log when a new one is due; whether it is."""
    metrics.ROOT_CRL_NEXT_UPDATE.set(crl.next_update.timestamp())
    if now < crl.next_update - ROOT_CRL_LEAD:
        return False
    log.warning(
        "root_crl_renewal_due",
        crl_number=crl.number,
        next_update=crl.next_update.isoformat(),
        days_left=max((crl.next_update - now).days, 0),
        action=ROOT_CRL_ACTION,
    )
    return True


async def run(
    certificates: tuple[Watched, ...],
    clock: Callable[[], datetime],
    every: float = CHECK_SECONDS,
    root_crl: Callable[[], Awaitable[StoredCrl]] | None = None,
) -> None:
    """:func:`check` (and with ``root_crl``, :func:`check_root_crl` on what it reads) now and
    every ``every`` seconds, until cancelled."""

    async def round_() -> None:
        check(certificates, clock())
        if root_crl is not None:
            check_root_crl(await root_crl(), clock())

    await periodic.every(every, round_, failed="certificate_check_failed")
