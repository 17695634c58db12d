"""The key ceremony's two sides (issue 15 item 1): the offline root and the online CA.

The root key lives in a token of its own (``[offline]``, :mod:`signer.settings.offline`) that
the running service never opens; everything the root signs is made here, on the offline side,
from files carried across the air gap (ETSI EN 319 411-1 §6.5.1 via EN 319 401 §7.5: CA keys
are generated and used in a recorded, witnessed ceremony):

1. offline ``qes ca root create``: the root key and its self-signed certificate
   (:class:`RootSide`, step ``root-create``); the certificate goes to the online side;
2. online ``qes ca import root.pem`` stores it (step ``certificate-import``);
3. online ``qes ca request issuing|ocsp-root``: a new key in the online HSM and its PKCS#10
   request (:class:`OnlineSide`, step ``key-create``);
4. offline ``qes ca root sign``: the root checks the request's proof of possession and issues
   with the CA's own profile (:mod:`ca.requests`; step ``certificate-sign``);
5. online ``qes ca import CERT``: checked against the stored root and the requested HSM key,
   stored as the issuing CA (current when it is the first, else pending until `qes ca switch
   issuing`) or as the root's OCSP responder certificate (step ``certificate-import``);
6. the root's CRL likewise: online ``qes ca request crl`` (number and entries), offline
   ``qes ca root crl`` (step ``crl-sign``), online ``qes ca import root.crl`` (``crl-import``);
7. on either machine, each witness ``qes ca witness`` with the head of the sheet they signed
   (step ``witness-attest``, :func:`signer.translog.ceremony.witness_attest`).

Every step is a line of one hash-chained transcript (:mod:`ca.ceremony`) that travels with the
files; the online side logs its own steps as ``ca-ceremony`` admin entries in the transaction
of the act, and `qes ca transcript import` logs the offline ones.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID

from ca.authority import build_root_certificate
from ca.ceremony import CeremonyError
from ca.ocsp import RESPONDER_LIFETIME, build_responder_certificate
from ca.requests import (
    CrlRequest,
    build_request,
    certificate_sha256,
    issue_from_request,
    sha256_hex,
    sign_crl_request,
    spki_sha256,
    verify_root_crl,
)
from signer.errors import SignerError
from signer.keys import Hsm, HsmSession
from signer.settings.config import CaSettings, Settings
from signer.storage.authority import (
    CaCertificateStore,
    Generation,
    RootCrlStore,
    StoredCrl,
    generation_label,
)
from signer.storage.policy import LoggedAction, PolicyStore
from signer.storage.revocations import RevocationStore
from signer.translog.admin import AdminLog, certificate_target
from signer.translog.ceremony import TranscriptFile, ceremony_act

log = structlog.get_logger(__name__)

#: nextUpdate of a root CRL signed in the ceremony (RFC 5280 §5.1.2.5): the root is offline,
#: so its CRL is long-lived; `qes ca root crl --next-update-days` chooses another.
ROOT_CRL_NEXT_UPDATE = timedelta(days=90)
#: How long before that nextUpdate the next root CRL is due (alert, log, `qes init`).
ROOT_CRL_LEAD = timedelta(days=14)


class AlreadyInitialised(SignerError):
    slug = "already-initialised"
    title = "CA keys exist; use --force to replace them"


class CeremonyRefused(SignerError):
    """A ceremony step that cannot be made (the message says why)."""

    slug = "ceremony-refused"
    title = "Key ceremony step refused"
    status = 400


def _cert_facts(cert: x509.Certificate) -> dict[str, str]:
    return {
        "subject": cert.subject.rfc4514_string(),
        "serial": format(cert.serial_number, "x"),
        "certificate_sha256": certificate_sha256(cert),
        "spki_sha256": spki_sha256(cert.public_key()),
        "not_after": cert.not_valid_after_utc.isoformat(),
    }


def holds_key(session: HsmSession, label: str, cert: x509.Certificate) -> bool:
    """Whether the token key ``label`` exists and is the key of ``cert``."""
    if not session.has_token_key(label):
        return False
    return spki_sha256(session.token_key(label).public_key()) == spki_sha256(cert.public_key())


#: What to do about a root key found in the online HSM (a CA made before the offline root).
ROOT_KEY_ONLINE_ACTION = (
    "replace the root through a ceremony on a token of its own, then `qes ca retire-root`"
    " (README, Key ceremony)"
)


async def root_key_online(hsm: Hsm, label: str, root: x509.Certificate) -> bool:
    """Whether the online HSM holds the key of the current ``root`` under ``label`` (a CA made
    before the offline root): the service logs ``root_key_online`` at start while it does,
    since whoever takes the service over could then sign as the root (EN 319 411-1 §6.5.1)."""
    held = await hsm.run(lambda session: holds_key(session, label, root))
    if held:
        log.warning("root_key_online", key_label=label, action=ROOT_KEY_ONLINE_ACTION)
    return held


@dataclass(frozen=True)
class RootSide:
    """The offline side: the root token (``hsm``, never the service's), the CA's names and
    lifetimes, the transcript and who acts."""

    hsm: Hsm
    ca: CaSettings
    transcript: TranscriptFile
    actor: str
    clock: Callable[[], datetime]

    def _record(self, step: str, facts: Mapping[str, str]) -> None:
        facts = {**facts, "token": self.hsm.settings.token_label, "key_label": self.ca.root_label}
        self.transcript.append(step, self.actor, self.clock(), facts)

    async def create(
        self, existing: x509.Certificate | None, *, force: bool
    ) -> tuple[x509.Certificate, bool]:
        """The root key and self-signed certificate (RFC 5280 §4.2.1.9), or ``existing`` when
        the token holds its key; (certificate, made now). Refused when the token holds a root
        key that ``existing`` does not match, unless ``force`` (a new root: a new CA)."""
        ca, now = self.ca, self.clock()

        def make(session: HsmSession) -> tuple[x509.Certificate, bool]:
            if not force and existing is not None and holds_key(session, ca.root_label, existing):
                return existing, False
            if not force and session.has_token_key(ca.root_label):
                raise AlreadyInitialised(
                    f"the root token already holds {ca.root_label} without a matching root"
                    " certificate; --force replaces it (a new root: a new CA)"
                )
            key = session.create_token_key(ca.root_label, ca.curve, replace=force)
            return build_root_certificate(key, ca.names, now, ca.root_lifetime), True

        cert, made = await self.hsm.run(make)
        if made:
            self._record("root-create", _cert_facts(cert))
        return cert, made

    async def sign(self, root: x509.Certificate, csr: bytes, role: str) -> x509.Certificate:
        """The root's certificate for the key requested in ``csr`` as ``role``
        (:func:`ca.requests.issue_from_request`), after checking the root key is ``root``'s."""
        ca, now = self.ca, self.clock()

        def issue(session: HsmSession) -> x509.Certificate:
            if not holds_key(session, ca.root_label, root):
                raise CeremonyRefused(f"the root token's {ca.root_label} is not this root's key")
            return issue_from_request(
                role,
                session.token_key(ca.root_label),
                root,
                csr,
                ca.names,
                ca.policy,
                ocsp_common_name=ca.ocsp_common_name,
                now=now,
                lifetime=ca.issuing_lifetime,
            )

        try:
            cert = await self.hsm.run(issue)
        except CeremonyError as exc:
            raise CeremonyRefused(str(exc)) from None
        self._record(
            "certificate-sign", {**_cert_facts(cert), "role": role, "csr_sha256": sha256_hex(csr)}
        )
        return cert

    async def crl(
        self, root: x509.Certificate, request: CrlRequest, next_update: timedelta
    ) -> bytes:
        """The root's CRL (RFC 5280 §5) for ``request``, valid until ``next_update`` from now:
        at least a day, and not past the root's own end (a CRL its issuer cannot outlive)."""
        ca, now = self.ca, self.clock()
        end = root.not_valid_after_utc
        if next_update < timedelta(days=1) or now + next_update > end:
            raise CeremonyRefused(
                f"next update: from 1 day to the root's end ({end:%Y-%m-%d},"
                f" {(end - now).days} days from now)"
            )

        def sign(session: HsmSession) -> bytes:
            if not holds_key(session, ca.root_label, root):
                raise CeremonyRefused(f"the root token's {ca.root_label} is not this root's key")
            crl = sign_crl_request(
                session.token_key(ca.root_label), root, request, now, next_update
            )
            return crl.public_bytes(Encoding.DER)

        try:
            der = await self.hsm.run(sign)
        except CeremonyError as exc:
            raise CeremonyRefused(str(exc)) from None
        self._record("crl-sign", _crl_facts(x509.load_der_x509_crl(der), der))
        return der


def _crl_facts(crl: x509.CertificateRevocationList, der: bytes) -> dict[str, str]:
    number = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    assert crl.next_update_utc is not None
    return {
        "crl_number": str(number),
        "crl_sha256": sha256_hex(der),
        "entries": str(len(list(crl))),
        "issuer": crl.issuer.rfc4514_string(),
        "next_update": crl.next_update_utc.isoformat(),
    }


def issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    """Whether ``issuer`` signed ``cert`` (name chaining and signature, RFC 5280 §6.1.3)."""
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _is_responder(cert: x509.Certificate) -> bool:
    try:
        usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return False
    return ExtendedKeyUsageOID.OCSP_SIGNING in usage


def responder_label(settings: Settings, ca: str) -> str:
    """Where a responder certificate is stored (the key itself is ``ca.ocsp_label``): the
    root's under ``root``; under ``issuing`` the one issuing CA responder certificate a CA
    made before each generation had its own (:func:`issuing_responder_label`), still read."""
    return f"{settings.ca.ocsp_label}@{ca}"


def issuing_responder_label(settings: Settings, issuing: x509.Certificate) -> str:
    """Where the responder certificate of the issuing CA generation ``issuing`` is stored:
    one per generation, by its subjectKeyIdentifier (RFC 5280 §4.2.1.2)."""
    return f"{responder_label(settings, 'issuing')}:{key_identifier(issuing).hex()}"


def issue_responder_certificate(
    session: HsmSession,
    ca: CaSettings,
    issuing: x509.Certificate,
    issuing_label: str,
    now: datetime,
) -> x509.Certificate:
    """On the HSM thread: a delegated OCSP responder certificate for the one responder key
    ``ca.ocsp_label`` from the issuing CA generation ``issuing`` (its online key
    ``issuing_label``): RFC 6960 §4.2.2.2, issued by the CA whose certificates it answers
    for; :data:`ca.ocsp.RESPONDER_LIFETIME`, cut to the generation's end."""
    return build_responder_certificate(
        session.token_key(issuing_label),
        issuing,
        session.token_key(ca.ocsp_label).public_key(),
        ca.names,
        ca.ocsp_common_name,
        now=now,
        lifetime=min(RESPONDER_LIFETIME, issuing.not_valid_after_utc - now),
    )


@dataclass(frozen=True)
class OnlineSide:
    """The online side: the service's HSM and database, the transcript, who acts (``audit``).
    Never opens the root token: the root is only ever its stored certificate."""

    hsm: Hsm
    certs: CaCertificateStore
    policy: PolicyStore
    revocations: RevocationStore
    crls: RootCrlStore
    settings: Settings
    audit: AdminLog
    transcript: TranscriptFile

    def _record(self, step: str, facts: Mapping[str, str]) -> LoggedAction:
        """Append ``step`` to the transcript; its admin act, for the transaction of the act."""
        facts = {**facts, "token": self.hsm.settings.token_label}
        actor = self.audit.actor_subject.removeprefix("cli:")
        made = self.transcript.append(step, actor, self.audit.clock(), facts)
        return ceremony_act(self.audit, made)

    async def root(self) -> x509.Certificate:
        root = await self.certs.load(self.settings.ca.root_label)
        if root is None:
            raise CeremonyRefused("no root certificate stored: `qes ca import root.pem` first")
        return root

    async def _issuing_label(self, fresh: bool) -> str:
        """The key label a new issuing CA gets: the configured one for the first, else the
        next generation's, also for a replacing `qes init --force` (``fresh``): the replaced
        issuing CA keeps its key, to go on signing its CRL, the distribution point of the TSA
        certificates it certified (RFC 5280 §6.3.3; README "Rollover")."""
        base = self.settings.ca.issuing_label
        known = await self.certs.generations("issuing", base)
        if not fresh and any(g.state == "pending" for g in known):
            raise CeremonyRefused("issuing: a generation is pending: `qes ca switch issuing` first")
        return _next_label(base, known)

    async def request(self, role: str, *, fresh: bool = False) -> tuple[bytes, str]:
        """A key for ``role`` (``issuing``: a new one; ``ocsp-root``: the OCSP responder's,
        made when missing) and its DER PKCS#10 request (RFC 2986); (request, key label)."""
        ca = self.settings.ca
        if role == "issuing":
            label, subject = await self._issuing_label(fresh), ca.names.issuing_name()
        elif role == "ocsp-root":
            label, subject = ca.ocsp_label, ca.names.service_name(ca.ocsp_common_name)
        else:
            raise CeremonyRefused(f"{role[:40]!r}: request 'issuing' or 'ocsp-root'")

        def make(session: HsmSession) -> bytes:
            if role == "issuing" or fresh or not session.has_token_key(label):
                session.create_token_key(label, ca.curve, replace=True)
            return build_request(session.token_key(label), subject)

        csr = await self.hsm.run(make)
        key = x509.load_der_x509_csr(csr).public_key()
        facts = {"role": role, "key_label": label, "subject": subject.rfc4514_string()}
        facts |= {"spki_sha256": spki_sha256(key), "csr_sha256": sha256_hex(csr)}
        await self.policy.record_once(self._record("key-create", facts))
        log.warning("ca_key_requested", role=role, key_label=label, spki=facts["spki_sha256"])
        return csr, label

    async def import_root(self, cert: x509.Certificate, *, replace: bool = False) -> bool:
        """Store the root certificate made offline; False when it is stored already. Another
        root is refused unless ``replace`` (`qes init --force`: a new CA; the old root stays
        in the trust bundle's history)."""
        label = self.settings.ca.root_label
        if not issued_by(cert, cert):
            raise CeremonyRefused("root: not a self-signed certificate")
        stored = await self.certs.load(label)
        if stored == cert:
            return False
        if stored is not None and not replace:
            raise CeremonyRefused(
                "another root is stored: a new root is a new CA (qes init --force)"
            )
        before = await self.certs.current("root", label)
        logged = self._record("certificate-import", {**_cert_facts(cert), "role": "root"})
        await self._store_current("root", label, cert, before, logged)
        return True

    async def _store_current(
        self,
        role: str,
        label: str,
        cert: x509.Certificate,
        before: Generation | None,
        logged: LoggedAction,
        key_label: str | None = None,
    ) -> None:
        """``cert`` becomes ``role``'s current certificate, stored under the configured
        ``label``, its key under ``key_label`` (default ``label``); the one ``before`` stays in
        the history (:meth:`CaCertificateStore.replace`)."""
        at = logged.action.acted_at
        await self.certs.save_logged(label, cert, at, logged)
        await self.certs.replace(role, before, Generation(role, 1, key_label or label, cert), at)

    async def import_certificate(self, cert: x509.Certificate, *, replace: bool = False) -> str:
        """Take in what the root signed: the root itself (:meth:`import_root`), the OCSP
        responder's certificate for the root, or an issuing CA (current when there is none or
        it replaces a key under the configured label, else pending). Each must chain to the
        stored root and certify the key the online HSM holds under the requested label; with
        ``replace`` (`qes init --force`) the issuing CA is current at once. What was done, in
        words; importing the same certificate again changes nothing."""
        if cert.issuer == cert.subject and issued_by(cert, cert):
            made = await self.import_root(cert)
            return "root stored" if made else "root already stored"
        root = await self.root()
        if not issued_by(cert, root):
            raise CeremonyRefused("certificate: not issued by the stored root")
        if _is_responder(cert):
            return await self._import_responder(cert)
        return await self._import_issuing(cert, replace)

    async def _held_under(self, cert: x509.Certificate, labels: tuple[str, ...]) -> str:
        """Which of ``labels`` names the online key ``cert`` certifies (the requested one)."""

        def find(session: HsmSession) -> str | None:
            return next((lbl for lbl in labels if holds_key(session, lbl, cert)), None)

        found = await self.hsm.run(find)
        if found is None:
            raise CeremonyRefused(
                f"certificate: its key is not the requested one (none of {', '.join(labels)})"
            )
        return found

    async def _import_responder(self, cert: x509.Certificate) -> str:
        label = responder_label(self.settings, "root")
        if await self.certs.load(label) == cert:
            return "OCSP responder certificate (root) already stored"
        await self._held_under(cert, (self.settings.ca.ocsp_label,))
        logged = self._record("certificate-import", {**_cert_facts(cert), "role": "ocsp-root"})
        await self.certs.save_logged(label, cert, logged.action.acted_at, logged)
        return "OCSP responder certificate (root) stored"

    async def _import_issuing(self, cert: x509.Certificate, replace: bool) -> str:
        base = self.settings.ca.issuing_label
        known = await self.certs.generations("issuing", base)
        if any(g.certificate == cert for g in known):
            return "issuing CA already stored"
        current = next((g for g in known if g.state == "current"), None)
        label = await self._held_under(cert, (base, _next_label(base, known)))
        facts = {**_cert_facts(cert), "role": "issuing", "key_label": label}
        if current is None or label == base or replace:  # the first, or `qes init --force`
            logged = self._record("certificate-import", facts)
            await self._store_current("issuing", base, cert, current, logged, key_label=label)
            return f"issuing CA stored as current (key {label})"
        number = max(g.number for g in known) + 1
        pending = Generation("issuing", number, label, cert)
        step = self._record("certificate-import", facts)
        at = step.action.acted_at
        rolled = self.audit.act(
            "ca-rollover", certificate_target(cert), detail=f"issuing g{number}", at=at
        )
        if not await self.certs.add_pending(known, pending, rolled, at, step=step):
            raise CeremonyRefused("issuing: another generation became pending first")
        await self._responder_for(pending, at)
        return f"pending: issuing g{number} (`qes ca switch issuing` makes it current)"

    async def _responder_for(self, g: Generation, at: datetime) -> None:
        """The delegated OCSP responder certificate of the new issuing CA generation ``g``,
        made at once with its online key, so the responder answers for what it issues from
        its first day (RFC 6960 §4.2.2.2). Not while the responder key does not exist yet
        (`qes init` makes it, and the certificates of every generation)."""
        ca = self.settings.ca

        def make(session: HsmSession) -> x509.Certificate | None:
            if not session.has_token_key(ca.ocsp_label):
                return None
            return issue_responder_certificate(session, ca, g.certificate, g.key_label, at)

        cert = await self.hsm.run(make)
        if cert is not None:
            await self.certs.save(issuing_responder_label(self.settings, g.certificate), cert, at)
            log.info(
                "ocsp_responder_certificate_made",
                generation=g.number,
                serial=f"{cert.serial_number:x}",
            )

    async def retire_root(self) -> tuple[Generation, ...]:
        """Destroy every key of a replaced root that the online HSM still holds (a CA made
        before the offline root kept its root key there; `qes init --force` with ``[offline]``
        naming a token of its own replaced it, but its certificate stays a trust anchor in the
        trust bundle's history, so its key must not outlive it online: RFC 3647 §6.2.10, EN 319
        411-1 §6.5.1 via EN 319 401 §7.5). Each destruction is a ``key-destroy`` step of the
        transcript, logged. Refused while the current root's key is online (replace it first)
        and when no past root's key is there; the roots whose keys were destroyed."""
        base = self.settings.ca.root_label
        roots = await self.certs.generations("root", base)
        self.transcript.read()  # a broken transcript refuses before anything is destroyed

        def destroy(session: HsmSession) -> tuple[Generation, ...]:
            if any(
                holds_key(session, g.key_label, g.certificate)
                for g in roots
                if g.state == "current"
            ):
                raise CeremonyRefused(
                    f"the online HSM's {base} is the current root's key: replace the root first"
                    " (qes init --force with [offline] naming a token of its own)"
                )
            held = tuple(
                g
                for g in roots
                if g.state == "past" and holds_key(session, g.key_label, g.certificate)
            )
            for g in held:
                session.destroy_token_key(g.key_label)
            return held

        destroyed = await self.hsm.run(destroy)
        if not destroyed:
            raise CeremonyRefused("the online HSM holds no root key of this CA: nothing to retire")
        for g in destroyed:
            facts = {**_cert_facts(g.certificate), "role": "root", "key_label": g.key_label}
            await self.policy.record_once(self._record("key-destroy", facts))
            log.warning("ca_root_key_destroyed", key_label=g.key_label, spki=facts["spki_sha256"])
        return destroyed

    async def request_crl(self) -> CrlRequest:
        """What the root's next CRL must say (RFC 5280 §5): the next CRL number of the stored
        root (reserved now, so numbers only grow) and every revocation of what it issued."""
        root = await self.root()
        key_id = key_identifier(root)
        revoked = await self.revocations.revoked_by(key_id)
        number = await self.revocations.next_crl_number(key_id, self.audit.clock())
        return CrlRequest(certificate_sha256(root), number, tuple(revoked))

    async def import_crl(self, der: bytes) -> StoredCrl:
        """Store the root's CRL signed offline, once its signature verifies against the stored
        root (RFC 5280 §6.3.3); served from then on as the root's CRL. Refused when it is
        older than the CRL stored (a lower number); the same CRL again changes nothing."""
        root = await self.root()
        try:
            crl, _ = verify_root_crl(der, (root,))
        except CeremonyError as exc:
            raise CeremonyRefused(str(exc)) from None
        der = crl.public_bytes(Encoding.DER)
        number = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
        assert crl.next_update_utc is not None
        stored = StoredCrl(
            key_identifier(root), number, crl.last_update_utc, crl.next_update_utc, der
        )
        newest = await self.crls.newest(stored.issuer_key_id)
        if newest is not None and newest.der == der:
            return newest
        if newest is not None and newest.number >= number:
            raise CeremonyRefused(f"CRL {number}: not newer than the stored CRL {newest.number}")
        logged = self._record("crl-import", _crl_facts(crl, der))
        await self.crls.add(stored, logged.action.acted_at, logged)
        return stored


def _next_label(base: str, known: tuple[Generation, ...]) -> str:
    """The key label of the issuing CA generation after ``known`` (the configured one first)."""
    return generation_label(base, max((g.number for g in known), default=0) + 1)


def key_identifier(cert: x509.Certificate) -> bytes:
    """The subjectKeyIdentifier of a CA certificate (RFC 5280 §4.2.1.2): a CRL's scope."""
    return cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest


def authority_key_identifier(cert: x509.Certificate) -> bytes | None:
    """The keyIdentifier of a certificate's authorityKeyIdentifier (RFC 5280 §4.2.1.1): the
    :func:`key_identifier` of the CA generation that issued it; None when it names none."""
    try:
        aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    except x509.ExtensionNotFound:
        return None
    return aki.key_identifier
