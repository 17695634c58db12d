"""Revoking the issuing CA and TSA certificates, and what every replica publishes about them:
each CA's CRL (RFC 5280 §5) and OCSP answers (RFC 6960).

Only the long-lived certificates are revoked: the issuing CA's (an entry on the root's CRL,
answered for by the root's delegated OCSP responder) and the TSA's (on the CRL of the issuing
CA generation that certified it, answered for by that generation's own responder). The
10-minute leaves carry ``noRevAvail`` and are never revoked (RFC 9608; :mod:`ca.extensions`
says why).

A revocation is one row in PostgreSQL (:mod:`signer.storage.revocations`), so every replica
sees it on its next CRL or OCSP request: the CRL caches key on the revocation state's version
(:meth:`RevocationStatus.version`), and OCSP reads the state on every request.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cached_property
from typing import Literal

import structlog
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from ca.authority import Chain, build_crl
from ca.errors import CaError
from ca.ocsp import IssuerStatus, Question, ask, try_later
from ca.revocation import Revocation, reason_from_name
from signer.errors import ConfigError, DatabaseUnavailable, HsmUnavailable, SignerError
from signer.keys import Hsm, HsmSession
from signer.settings.config import Settings
from signer.signing.ceremony import (
    authority_key_identifier,
    issued_by,
    issuing_responder_label,
    key_identifier,
    responder_label,
)
from signer.signing.rollover import load_authorities
from signer.storage.authority import CaCertificateStore, Generation, RootCrlStore, StoredCrl
from signer.storage.revocations import ROLES, RevocationStore, StoredRevocation
from signer.translog.admin import AdminLog, certificate_target

log = structlog.get_logger(__name__)

#: nextUpdate of a CRL (RFC 5280 §5.1.2.5): a week after thisUpdate. The service re-signs at
#: least hourly, so a relying party's copy is never older than it needs to be.
CRL_NEXT_UPDATE = timedelta(days=7)
#: How long a replica publishes one signed CRL before it signs the next (well inside nextUpdate).
CRL_REFRESH = timedelta(hours=1)
#: nextUpdate of an OCSP answer (RFC 6960 §4.2.2.1): how long a client may rely on it.
OCSP_VALIDITY = timedelta(hours=1)
#: How long a replica embeds one signed OCSP answer in B-LT data before it signs the next.
OCSP_REFRESH = timedelta(minutes=10)
CaName = Literal["root", "issuing"]


class RevocationRefused(SignerError):
    """The revocation asked for cannot be made (unknown certificate, reason or date)."""

    slug = "revocation-refused"
    title = "Revocation refused"
    status = 400


class RootCrlMissing(SignerError):
    """No CRL of the current root was imported from the key ceremony."""

    slug = "root-crl-missing"
    title = "The root's CRL is not available"
    status = 503


class AlreadyRevoked(RevocationRefused):
    slug = "already-revoked"
    title = "The certificate is already revoked"


@dataclass(frozen=True)
class Responders:
    """The delegated OCSP responder certificates for the one responder key (RFC 6960
    §4.2.2.2): ``root`` answers for what the root issued (the issuing CA generations);
    ``issuing`` pairs each issuing CA generation that has one with its own, which answers for
    the TSA certificates that generation issued (a past generation's still vouch for old
    time-stamps)."""

    root: x509.Certificate
    issuing: tuple[tuple[x509.Certificate, x509.Certificate], ...]

    def of(self, ca: x509.Certificate) -> x509.Certificate | None:
        """The responder certificate the issuing CA generation ``ca`` issued, or None."""
        return next((r for issuer, r in self.issuing if issuer == ca), None)


async def load_responders(
    store: CaCertificateStore,
    settings: Settings,
    root: x509.Certificate,
    issuing: Iterable[x509.Certificate],
) -> Responders | None:
    """The root's responder certificate and those of the issuing CA generations ``issuing``
    that ``root`` (the current one) issued (:func:`load_issuing_responders`; those of a CA
    that `qes init --force` replaced stay stored, unused); None while the root's or every
    issuing one is missing (before `qes init`)."""
    cert = await store.load(responder_label(settings, "root"))
    ours = [ca for ca in issuing if issued_by(ca, root)]
    found = await load_issuing_responders(store, settings, ours)
    return None if cert is None or not found else Responders(cert, found)


async def load_issuing_responders(
    store: CaCertificateStore, settings: Settings, issuing: Iterable[x509.Certificate]
) -> tuple[tuple[x509.Certificate, x509.Certificate], ...]:
    """(generation, its responder certificate) for each of ``issuing`` that has one stored
    (:func:`issuing_responder_label`), each checked to be issued by it. A CA made before
    each generation had its own stored one under ``responder_label(settings, "issuing")``:
    it still serves the generation that issued it until `qes init` renews it there."""
    legacy = await store.load(responder_label(settings, "issuing"))
    found = []
    for ca in issuing:
        cert = await store.load(issuing_responder_label(settings, ca))
        for candidate in (cert, legacy):
            if candidate is not None and issued_by(candidate, ca):
                found.append((ca, candidate))
                break
    return tuple(found)


async def save_issuing_responder(
    store: CaCertificateStore,
    settings: Settings,
    issuing: x509.Certificate,
    cert: x509.Certificate,
    now: datetime,
) -> None:
    """The responder certificate ``cert`` of the issuing CA generation ``issuing``, made
    online (the root's comes from the key ceremony: :mod:`signer.signing.ceremony`)."""
    await store.save(issuing_responder_label(settings, issuing), cert, now)


@dataclass(frozen=True)
class RevocationOrder:
    """What `qes ca revoke` asks: ``which`` is a role (``issuing``, ``tsa``) or a serial in
    hex (as ``openssl x509 -serial`` prints it; colons and ``0x`` allowed); ``reason`` an
    RFC 5280 §5.3.1 name; ``invalidity_date`` since when the key is known or suspected to be
    compromised (§5.3.2); ``actor`` who revokes (the operator's account)."""

    which: str
    reason: str
    actor: str
    invalidity_date: datetime | None = None


async def revoke(
    certs: CaCertificateStore,
    store: RevocationStore,
    settings: Settings,
    order: RevocationOrder,
    now: datetime,
    audit: AdminLog | None = None,
) -> StoredRevocation:
    """Revoke the issuing CA or TSA certificate at ``now``: stored durably (every replica's
    CRLs and OCSP answers carry it from their next request on) and logged. Raises
    :class:`RevocationRefused` for an unknown certificate or reason or an impossible date,
    :class:`AlreadyRevoked` when the certificate was revoked before (the first stands).
    With ``audit`` the act is a ``certificate-revoke`` entry of the transparency log (EN 319
    411-1 §6.4.5), stored with the revocation in one transaction."""
    targets = await _targets(certs, settings)
    role, cert, issuer = _choose(targets, order.which)
    try:
        revocation = Revocation(
            serial=cert.serial_number,
            revoked_at=now,
            reason=reason_from_name(order.reason),
            invalidity_date=order.invalidity_date,
        )
    except CaError as exc:
        raise RevocationRefused(str(exc)) from exc
    issuer_key_id = _key_id(issuer)
    stored = StoredRevocation(role, issuer_key_id, cert, revocation, order.actor)
    logged = None
    if audit is not None:
        detail = f"{role} {revocation.reason.value}"
        logged = audit.act("certificate-revoke", certificate_target(cert), detail=detail, at=now)
    if not await store.add(stored, logged):
        raise AlreadyRevoked(f"{role} certificate {cert.serial_number:x} was revoked before")
    log.warning(  # an admin act on the CA: always worth an operator's eyes
        "ca_certificate_revoked",
        role=role,
        serial=format(cert.serial_number, "x"),
        subject=cert.subject.rfc4514_string(),
        issuer=issuer.subject.rfc4514_string(),
        reason=revocation.reason.value,
        revoked_at=revocation.revoked_at.isoformat(),
        invalidity_date=None if order.invalidity_date is None else str(order.invalidity_date),
        revoked_by=order.actor,
    )
    return stored


async def _targets(
    certs: CaCertificateStore, settings: Settings
) -> dict[str, tuple[x509.Certificate, x509.Certificate]]:
    """What may be revoked, as (certificate, its issuer's certificate): under ``issuing`` and
    ``tsa`` the current generations, under ``issuing g<n>`` and ``tsa g<n>`` every generation
    (a past TSA key is revoked as any other: its certificate still vouches for old tokens)."""
    try:
        a = await load_authorities(certs, settings)
    except ConfigError as exc:
        raise RevocationRefused(str(exc)) from None
    found = {f"issuing g{g.number}": (g.certificate, a.root) for g in a.issuing}
    for g in a.tsa:
        try:
            found[f"tsa g{g.number}"] = (g.certificate, a.issuer_of(g.certificate).certificate)
        except ConfigError:  # from a CA that `qes init --force` replaced: nothing signs for it
            continue
    found["issuing"] = (a.issuing_ca.certificate, a.root)
    tsa = a.current("tsa")
    if tsa is not None:
        found["tsa"] = (tsa.certificate, a.issuer_of(tsa.certificate).certificate)
    return found


def _choose(
    targets: dict[str, tuple[x509.Certificate, x509.Certificate]], which: str
) -> tuple[str, x509.Certificate, x509.Certificate]:
    if which in targets:
        return which, *targets[which]
    if which in ROLES:
        raise RevocationRefused(f"{which}: this service has no such certificate")
    digits = which.strip().lower().removeprefix("0x").replace(":", "")
    try:
        serial = int(digits, 16)
    except ValueError:
        raise RevocationRefused(
            f"{which[:60]!r}: give a role ({', '.join(ROLES)}) or a serial in hex"
        ) from None
    for name, (cert, issuer) in targets.items():
        if cert.serial_number == serial:
            return name.split()[0], cert, issuer
    raise RevocationRefused(
        f"serial {serial:x} is the certificate of no issuing CA or TSA generation"
    )


@dataclass(frozen=True)
class RevocationStatus:
    """What each replica publishes: the CAs' CRLs and OCSP answers, signed in the HSM.

    ``tsa`` is the built-in TSA's certificate (None with an external TSA); ``responders`` the
    OCSP responder certificates (None until `qes init` made them: then every OCSP request is
    answered ``unauthorized``). ``issuing_crl`` is the issuing CA generation whose CRL is
    published as the issuing CA's (``/ca/issuing.crl``), as (certificate, HSM key label): the
    one that issued the TSA certificate in use (a CRL comes from the certificate's issuer,
    RFC 5280 §6.3.3), which after `qes ca switch issuing` is still the old one until the TSA
    is rolled too (:mod:`signer.signing.rollover`). OCSP answers for every issuing CA
    generation, each with its own responder certificate (:meth:`_issuers`).
    """

    hsm: Hsm
    store: RevocationStore
    settings: Settings
    chain: Chain
    tsa: x509.Certificate | None
    responders: Responders | None
    clock: Callable[[], datetime]
    issuing_crl: tuple[x509.Certificate, str]
    root_crls: RootCrlStore
    #: Every TSA generation's certificate: OCSP answers ``good`` or ``revoked`` about each in
    #: the name of the issuing CA generation that issued it (a past TSA's certificate still
    #: vouches for the tokens it signed), ``unknown`` about anything else (RFC 6960 §2.2).
    tsa_issued: tuple[x509.Certificate, ...] = ()
    #: Every issuing CA generation (pending, current, past): each publishes its own CRL and
    #: answers OCSP requests about what it issued.
    issuing_generations: tuple[Generation, ...] = ()
    #: The issuing CA's CRL last published, and the OCSP answer per request embedded in B-LT
    #: data: (revocation state version, when signed, DER).
    _published: dict[str, tuple[int, datetime, bytes]] = field(
        default_factory=dict, repr=False, compare=False
    )

    async def published_crl(self, ca: CaName) -> bytes:
        """The CRL of ``ca`` this replica publishes. The root's is the newest one signed
        offline in the key ceremony and imported (:meth:`root_crl`): the service never holds
        the root key. The issuing CA's is re-signed (:meth:`crl`) at most every
        :data:`CRL_REFRESH`, and at once when the revocation state changed (its version is
        read from PostgreSQL each time, so a revocation made anywhere is on every replica's
        next CRL). Served at ``/ca/*.crl`` and embedded as B-LT validation data, so neither a
        download nor a signature costs an HSM operation and a CRL number of its own."""
        if ca == "root":
            return (await self.root_crl()).der
        return await self._published_as(ca, CRL_REFRESH, lambda: self.crl(ca))

    async def published_answer(self, request_der: bytes) -> bytes:
        """The OCSP answer to ``request_der`` that B-LT validation data embeds: as
        :meth:`ocsp`, but a signed answer is reused for :data:`OCSP_REFRESH` (well inside its
        :data:`OCSP_VALIDITY`) unless the revocation state changed meanwhile, so signing a
        B-LT PDF costs no HSM operation for it. Refusals and ``tryLater`` are never kept."""
        return await self._respond(request_der, reuse_as="ocsp:" + request_der.hex())

    async def _published_as(
        self, key: str, refresh: timedelta, make: Callable[[], Awaitable[bytes]]
    ) -> bytes:
        """What was published under ``key``, made anew when older than ``refresh`` or when
        the revocation state's version changed since."""
        version = await self.version()
        cached = self._published.get(key)
        now = self.clock()
        if cached is None or cached[0] != version or now - cached[1] >= refresh:
            cached = (version, now, await make())
            self._published[key] = cached
        return cached[2]

    async def version(self) -> int:
        """Grows with every revocation: the key of any cache of what this class makes."""
        return await self.store.version()

    async def root_crl(self) -> StoredCrl:
        """The newest root CRL imported for the current root; :class:`RootCrlMissing` when
        none was (a CA made before the offline root: run the CRL ceremony)."""
        found = await self.root_crls.newest(key_identifier(self.chain.root))
        if found is None:
            raise RootCrlMissing(
                "no root CRL imported: `qes ca request crl`, `qes ca root crl`, `qes ca import`"
            )
        return found

    async def crl(self, ca: CaName) -> bytes:
        """A fresh DER CRL of the issuing CA (RFC 5280 §5): thisUpdate now, nextUpdate a week
        later, the next stored CRL number, and an entry for each certificate it revoked. The
        root's is never signed here (:meth:`published_crl`)."""
        if ca == "root":
            return (await self.root_crl()).der
        return await self._sign_crl(*self.issuing_crl)

    def issuing_generation(self, key_id: bytes) -> tuple[x509.Certificate, str] | None:
        """The issuing CA generation (certificate, key label) whose subjectKeyIdentifier is
        ``key_id``, or None."""
        found = [g for g in self.issuing_generations if _key_id(g.certificate) == key_id]
        return (found[0].certificate, found[0].key_label) if found else None

    async def issuing_generation_crl(self, key_id: bytes) -> bytes | None:
        """The CRL of the issuing CA generation whose subjectKeyIdentifier is ``key_id``, as
        published (re-signed as :meth:`published_crl` does), or None when no generation has
        it: the CRL distribution point of every TSA certificate names its own issuer's
        (:func:`signer.signing.rollover.issuing_url`), so a TSA certified by a past issuing CA
        can still be revoked and checked."""
        found = self.issuing_generation(key_id)
        if found is None:
            return None
        issuer, label = found
        return await self._published_as(
            f"issuing:{key_id.hex()}", CRL_REFRESH, lambda: self._sign_crl(issuer, label)
        )

    async def _sign_crl(self, issuer: x509.Certificate, label: str) -> bytes:
        key_id = _key_id(issuer)
        now = self.clock()
        revoked = await self.store.revoked_by(key_id)
        number = await self.store.next_crl_number(key_id, now)

        def sign(session: HsmSession) -> bytes:
            crl = build_crl(
                session.token_key(label), issuer, now, CRL_NEXT_UPDATE, revoked, crl_number=number
            )
            return crl.public_bytes(Encoding.DER)

        return await self.hsm.run(sign)

    async def ocsp(self, request_der: bytes) -> bytes:
        """A DER OCSPResponse to a DER OCSPRequest (RFC 6960 §4.2): refusals unsigned and
        without an HSM hop; ``tryLater`` when the database or the HSM is unavailable."""
        return await self._respond(request_der)

    async def _respond(self, request_der: bytes, reuse_as: str | None = None) -> bytes:
        """:meth:`ocsp`, with the signed answer kept under ``reuse_as`` when given."""
        question = ask(request_der, self._issuers)
        if isinstance(question, bytes):
            return question
        try:
            if reuse_as is None:
                return await self._answer(question)
            return await self._published_as(reuse_as, OCSP_REFRESH, lambda: self._answer(question))
        except (DatabaseUnavailable, HsmUnavailable) as exc:
            log.warning("ocsp_try_later", error=str(exc))
            return try_later()

    @cached_property
    def _issuers(self) -> list[IssuerStatus]:
        """Who answers for what (fixed for a replica's life: built once, not per request; the
        revocations are read per request, :meth:`_answer`): the root's responder for every
        issuing CA generation the root issued, pending and past ones too; each issuing CA
        generation's own responder (RFC 6960 §4.2.2.2) for the TSA certificates it issued. A
        generation without a responder certificate, or of a root that `qes init --force`
        replaced, is answered for by no one (``unauthorized``, §2.3)."""
        if self.responders is None:
            return []
        root = self.chain.root
        generations = [g.certificate for g in self.issuing_generations]
        generations = generations or list(dict.fromkeys((self.chain.issuing, self.issuing_crl[0])))
        ours = [c for c in generations if authority_key_identifier(c) == _key_id(root)]
        statuses = [
            IssuerStatus(root, self.responders.root, dict.fromkeys(c.serial_number for c in ours))
        ]
        for ca in ours:
            responder = self.responders.of(ca)
            if responder is not None:
                issued = [c for c in self.tsa_issued if authority_key_identifier(c) == _key_id(ca)]
                serials = dict.fromkeys(c.serial_number for c in issued)
                statuses.append(IssuerStatus(ca, responder, serials, (ca,)))
        return statuses

    async def _answer(self, question: Question) -> bytes:
        about = question.about
        revoked = await self.store.revoked_by(_key_id(about.issuer))
        issued = {**about.issued, **{r.serial: r for r in revoked}}
        question = dataclasses.replace(question, about=dataclasses.replace(about, issued=issued))
        label, now = self.settings.ca.ocsp_label, self.clock()
        return await self.hsm.run(
            lambda session: question.answer(session.token_key(label), now, OCSP_VALIDITY)
        )


_key_id = key_identifier
