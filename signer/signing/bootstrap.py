"""`qes init`: create the CA keys inside the HSM and their certificates, the built-in
TSA's key and certificate (RFC 3161 §2.3, STANDARDS.md §3) unless an external TSA is configured,
and the OCSP responder's key with its two delegated responder certificates (RFC 6960 §4.2.2.2).

Idempotent: when the keys exist and the stored certificates match them, nothing changes. It
never replaces an existing key unless ``force`` is given. A missing TSA key (a CA made before
the TSA existed) is created without ``force``: that replaces nothing; a TSA certificate that
does not match its key or the current issuing CA is re-issued for the same key. The
transparency-log key (``[log] key_label``) is created when absent and never replaced, even
with ``force``: checkpoints already published must stay verifiable. For development, the log
privacy key file is created in the data directory when no privacy key is configured
(:mod:`signer.translog.log`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from ca.authority import Chain, build_issuing_certificate, build_root_certificate
from ca.ocsp import RESPONDER_LIFETIME, RESPONDER_RENEW_BEFORE, build_responder_certificate
from signer.errors import SignerError
from signer.keys import Hsm, HsmSession
from signer.settings.config import Settings
from signer.signing.revocation import Responders, load_responders, save_responders
from signer.signing.rollover import issue_tsa_certificate
from signer.storage.authority import CaCertificateStore, Generation
from signer.storage.policy import PolicyStore
from signer.translog.admin import AdminLog, certificate_target
from signer.translog.log import (
    ensure_dev_privacy_key,
    log_verifier,
    make_log_key,
    privacy_key_path,
)


class AlreadyInitialised(SignerError):
    slug = "already-initialised"
    title = "CA keys exist; use --force to replace them"


@dataclass(frozen=True)
class InitResult:
    chain: Chain
    created: bool
    tsa: x509.Certificate | None = None
    tsa_created: bool = False
    ocsp: Responders | None = None
    ocsp_created: bool = False


@dataclass(frozen=True)
class StoredCertificates:
    """What the database holds: the root, the current issuing CA and TSA certificates and
    their key labels (None: the configured ones; later generations have their own, see
    :mod:`signer.signing.rollover`), and every issuing CA certificate that ever issued."""

    root: x509.Certificate | None
    issuing: x509.Certificate | None
    tsa: x509.Certificate | None
    ocsp: Responders | None = None
    issuing_label: str | None = None
    tsa_label: str | None = None
    issuers: tuple[tuple[x509.Certificate, str], ...] = ()  # (certificate, key label)


def _same_key(cert: x509.Certificate | None, session: HsmSession, label: str) -> bool:
    if cert is None:
        return False
    raw = PublicFormat.SubjectPublicKeyInfo
    held = session.token_key(label).public_key().public_bytes(Encoding.DER, raw)
    return cert.public_key().public_bytes(Encoding.DER, raw) == held


def make_ca(
    session: HsmSession,
    settings: Settings,
    now: datetime,
    *,
    force: bool,
    stored: StoredCertificates,
) -> InitResult:
    """Runs on the HSM worker thread: decide, create keys, build and sign the certificates.
    The issuing CA's OCSP responder certificate comes from the issuing CA generation that
    issued the TSA certificate (the one its CRL and OCSP answers are about)."""
    chain, created = _make_chain(session, settings, now, force=force, stored=stored)
    issuing_label = stored.issuing_label or settings.ca.issuing_label
    if created:
        issuing_label = settings.ca.issuing_label
    current = (chain, issuing_label)
    tsa, tsa_created = None, False
    if settings.tsa.url is None:
        tsa, tsa_created = _make_tsa(
            session, settings, now, current, force=force or created, stored=stored
        )
    answering = current
    for cert, label in stored.issuers:
        if tsa is not None and not _issued_by(tsa, chain.issuing) and _issued_by(tsa, cert):
            answering = (Chain(issuing=cert, root=chain.root), label)
    ocsp, ocsp_created = _make_ocsp(
        session, settings, now, answering, force=force or created, stored=stored.ocsp
    )
    return InitResult(chain, created, tsa, tsa_created, ocsp, ocsp_created)


def _make_chain(
    session: HsmSession,
    settings: Settings,
    now: datetime,
    *,
    force: bool,
    stored: StoredCertificates,
) -> tuple[Chain, bool]:
    ca = settings.ca
    labels = (ca.root_label, stored.issuing_label or ca.issuing_label)
    have = [session.has_token_key(label) for label in labels]
    root, issuing = stored.root, stored.issuing
    if (
        all(have)
        and not force
        and root is not None
        and issuing is not None
        and _same_key(root, session, labels[0])
        and _same_key(issuing, session, labels[1])
    ):
        return Chain(issuing=issuing, root=root), False
    if any(have) and not force:
        which = [lbl for lbl, h in zip(labels, have, strict=True) if h]
        raise AlreadyInitialised(
            f"HSM already holds {', '.join(which)} without matching certificates; "
            "run `qes init --force` to replace the CA keys"
        )
    root_key = session.create_token_key(ca.root_label, ca.curve, replace=force)
    issuing_key = session.create_token_key(ca.issuing_label, ca.curve, replace=force)
    root = build_root_certificate(root_key, ca.names, now, ca.root_lifetime)
    issuing = build_issuing_certificate(
        root_key, root, issuing_key.public_key(), ca.names, ca.policy, now, ca.issuing_lifetime
    )
    return Chain(issuing=issuing, root=root), True


def _make_tsa(
    session: HsmSession,
    settings: Settings,
    now: datetime,
    issuer: tuple[Chain, str],
    *,
    force: bool,
    stored: StoredCertificates,
) -> tuple[x509.Certificate, bool]:
    """The TSA key (created when missing, replaced with ``force``) and a certificate for it
    from the current issuing CA (``issuer``: the chain and the issuing CA's key label); kept
    when it matches the key and was issued by the current or an earlier issuing CA."""
    chain, issuing_label = issuer
    label = stored.tsa_label or settings.tsa.label
    if force or not session.has_token_key(label):
        label = settings.tsa.label
        session.create_token_key(label, settings.ca.curve, replace=True)
    elif (
        stored.tsa is not None
        and _same_key(stored.tsa, session, label)
        and any(_issued_by(stored.tsa, ca) for ca in (chain.issuing, *dict(stored.issuers)))
    ):
        return stored.tsa, False
    cert = issue_tsa_certificate(session, settings, now, chain.issuing, issuing_label, label)
    return cert, True


def _make_ocsp(
    session: HsmSession,
    settings: Settings,
    now: datetime,
    issuer: tuple[Chain, str],
    *,
    force: bool,
    stored: Responders | None,
) -> tuple[Responders, bool]:
    """The OCSP responder key (created when missing, replaced with ``force``) and its two
    delegated responder certificates, one from each CA (RFC 6960 §4.2.2.2: the responder
    certificate is issued by the CA of the certificates it answers for). Kept while they
    match the key and the current CAs and have more than a third of their life left: with
    id-pkix-ocsp-nocheck they cannot be revoked, so they are short-lived and renewed here."""
    ca = settings.ca
    chain, issuing_label = issuer
    if force or not session.has_token_key(ca.ocsp_label):
        session.create_token_key(ca.ocsp_label, ca.curve, replace=True)
    elif stored is not None and all(
        _same_key(cert, session, ca.ocsp_label)
        and _issued_by(cert, issuer)
        and cert.not_valid_after_utc - now > RESPONDER_RENEW_BEFORE
        for cert, issuer in ((stored.root, chain.root), (stored.issuing, chain.issuing))
    ):
        return stored, False
    public_key = session.token_key(ca.ocsp_label).public_key()

    def issue(issuer_label: str, issuer: x509.Certificate) -> x509.Certificate:
        return build_responder_certificate(
            session.token_key(issuer_label),
            issuer,
            public_key,
            ca.names,
            ca.ocsp_common_name,
            now=now,
            lifetime=min(RESPONDER_LIFETIME, issuer.not_valid_after_utc - now),
        )

    made = Responders(
        root=issue(ca.root_label, chain.root), issuing=issue(issuing_label, chain.issuing)
    )
    return made, True


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


async def _stored(
    store: CaCertificateStore, settings: Settings
) -> tuple[StoredCertificates, dict[str, Generation | None]]:
    """What the database holds now, and the current generation of each role."""
    ca, tsa = settings.ca, settings.tsa
    issuing = await store.generations("issuing", ca.issuing_label)
    current = {
        "root": await store.current("root", ca.root_label),
        "issuing": next((g for g in issuing if g.state == "current"), None),
        "tsa": await store.current("tsa", tsa.label),
    }
    held = {role: g.certificate if g else None for role, g in current.items()}
    stored = StoredCertificates(
        root=held["root"],
        issuing=held["issuing"],
        tsa=held["tsa"],
        ocsp=await load_responders(store, settings),
        issuing_label=current["issuing"].key_label if current["issuing"] else None,
        tsa_label=current["tsa"].key_label if current["tsa"] else None,
        issuers=tuple((g.certificate, g.key_label) for g in issuing if g.state != "pending"),
    )
    return stored, current


async def init_ca(
    hsm: Hsm, store: CaCertificateStore, settings: Settings, now: datetime, *, force: bool
) -> InitResult:
    stored, before = await _stored(store, settings)
    result: InitResult = await hsm.run(
        lambda s: make_ca(s, settings, now, force=force, stored=stored)
    )
    if result.created:
        await store.save(settings.ca.root_label, result.chain.root, now)
        await store.save(settings.ca.issuing_label, result.chain.issuing, now)
    if result.tsa is not None and result.tsa_created:
        await store.save(settings.tsa.label, result.tsa, now)
    if result.ocsp is not None and result.ocsp_created:
        await save_responders(store, settings, result.ocsp, now)
    labels = {
        "root": settings.ca.root_label,
        "issuing": settings.ca.issuing_label,
        "tsa": settings.tsa.label,
    }
    for role, cert in replaced(result):  # what it replaces stays in the trust bundle
        if role in labels:  # the CAs and the TSA have generations; responders are renewed
            await store.replace(role, before[role], Generation(role, 1, labels[role], cert), now)
    return result


def replaced(result: InitResult) -> tuple[tuple[str, x509.Certificate], ...]:
    """The CA certificates `qes init` made anew (new keys), by role: root and issuing CA
    together, the TSA (when it is this service's own), the two delegated OCSP responder
    certificates (one key, RFC 6960 §4.2.2.2)."""
    made: list[tuple[str, x509.Certificate]] = []
    if result.created:
        made += [("root", result.chain.root), ("issuing", result.chain.issuing)]
    if result.tsa is not None and result.tsa_created:
        made.append(("tsa", result.tsa))
    if result.ocsp is not None and result.ocsp_created:
        made += [("ocsp-root", result.ocsp.root), ("ocsp-issuing", result.ocsp.issuing)]
    return tuple(made)


async def log_replaced(store: PolicyStore, audit: AdminLog, result: InitResult) -> int:
    """`qes init --force`: one ``ca-replace`` admin entry per new certificate (its role,
    serial and SHA-256), in one transaction (ETSI EN 319 411-1 §6.4.5: CA key changes are
    logged). The HSM keys are already replaced: a key ceremony is not transactional with the
    database, so the entries follow the replacement at once. How many were logged."""
    acts = [
        audit.act("ca-replace", certificate_target(cert), detail=role)
        for role, cert in replaced(result)
    ]
    await store.record(acts)
    return len(acts)


@dataclass(frozen=True)
class LogInitResult:
    key_created: bool
    vkey: str
    privacy_key_file: str | None

    def describe(self) -> str:
        verb = "created" if self.key_created else "already present"
        line = f"log key {verb}; checkpoint verifier key: {self.vkey}"
        if self.privacy_key_file:
            line += f"\nlog privacy key written to {self.privacy_key_file} (development only)"
        return line


async def init_log(hsm: Hsm, settings: Settings) -> LogInitResult:
    """Create the log key when absent (never replaced) and the development privacy key."""

    def make(session: HsmSession) -> tuple[bool, str]:
        created = make_log_key(session, settings.log, force=False)
        return created, log_verifier(session, settings.log).vkey()

    created, vkey = await hsm.run(make)
    written = ensure_dev_privacy_key(settings)
    path = str(privacy_key_path(settings)) if written else None
    return LogInitResult(key_created=created, vkey=vkey, privacy_key_file=path)
