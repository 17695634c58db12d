"""`qes init`: the CA keys and their certificates, the built-in TSA's key and certificate
(RFC 3161 §2.3, STANDARDS.md §3) unless an external TSA is configured, and the OCSP responder's
key with its delegated responder certificates (RFC 6960 §4.2.2.2): the root's, and one from
each issuing CA generation (pending, current and past) that lacks a fresh one.

The root's key lives in the offline root token (:mod:`signer.settings.offline`), never in the
service's HSM: `qes init` is the one-machine path of the key ceremony
(:mod:`signer.signing.ceremony`), running its steps in sequence with both tokens present
(root create, issuing key request, root sign, import; the root's responder certificate and
CRL likewise), each a step of the transcript. Without the root token it does only what needs
no root (TSA, the issuing CA generations' responders, the log key) and says what waits for a
ceremony.

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

from ca.authority import Chain
from ca.ocsp import renewal_due
from signer.errors import ConfigError
from signer.keys import Hsm, HsmSession
from signer.settings.config import Settings
from signer.signing.ceremony import (
    ROOT_CRL_LEAD,
    ROOT_CRL_NEXT_UPDATE,
    AlreadyInitialised,
    OnlineSide,
    RootSide,
    holds_key,
    issue_responder_certificate,
    issued_by,
    key_identifier,
    responder_label,
)
from signer.signing.revocation import (
    Responders,
    load_issuing_responders,
    load_responders,
    save_issuing_responder,
)
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


@dataclass(frozen=True)
class InitResult:
    chain: Chain
    created: bool
    tsa: x509.Certificate | None = None
    tsa_created: bool = False
    ocsp: Responders | None = None
    ocsp_created: bool = False
    #: What still needs the offline root (no root token given): e.g. "root CRL".
    root_due: tuple[str, ...] = ()
    #: The online HSM holds the current root's key (a CA made before the offline root, or
    #: ``[offline]`` naming the online token): README "Key ceremony" says how to move it out.
    root_key_online: bool = False


@dataclass(frozen=True)
class StoredCertificates:
    """What the database holds: the root, the current issuing CA and TSA certificates and
    their key labels (None: the configured ones; later generations have their own, see
    :mod:`signer.signing.rollover`), and every issuing CA certificate that ever issued."""

    root: x509.Certificate | None
    issuing: x509.Certificate | None
    tsa: x509.Certificate | None
    ocsp_root: x509.Certificate | None = None  # the root's responder (from the ceremony)
    #: (issuing CA generation, its responder certificate), made online
    ocsp_issuing: tuple[tuple[x509.Certificate, x509.Certificate], ...] = ()
    issuing_label: str | None = None
    tsa_label: str | None = None
    issuers: tuple[tuple[x509.Certificate, str], ...] = ()  # (certificate, key label)
    #: every issuing CA generation, pending ones too: (certificate, key label)
    generations: tuple[tuple[x509.Certificate, str], ...] = ()


@dataclass(frozen=True)
class Sides:
    """The key ceremony's two sides as `qes init` drives them on one machine: ``online``
    always; ``root`` (the offline root token) when its PIN is given, else only what needs no
    root is done (:attr:`InitResult.root_due` says what waits for a ceremony)."""

    online: OnlineSide
    root: RootSide | None


async def _holds(hsm: Hsm, label: str, cert: x509.Certificate | None) -> tuple[bool, bool]:
    """(the token holds a key ``label``, it is ``cert``'s key)."""

    def probe(session: HsmSession) -> tuple[bool, bool]:
        return session.has_token_key(label), cert is not None and holds_key(session, label, cert)

    return await hsm.run(probe)


async def _chain(sides: Sides, stored: StoredCertificates, *, force: bool) -> tuple[Chain, bool]:
    """The root (offline token) and the current issuing CA (online HSM): kept when both keys
    exist and match the stored certificates; refused when a key exists without its
    certificate (unless ``force``); else made anew through the ceremony's steps in sequence
    (root create and import, issuing key request, root sign, import)."""
    online, ca = sides.online, sides.online.settings.ca
    issuing_label = stored.issuing_label or ca.issuing_label
    held = [await _holds(online.hsm, issuing_label, stored.issuing)]
    if sides.root is not None:
        held.insert(0, await _holds(sides.root.hsm, ca.root_label, stored.root))
    kept = stored.root is not None and stored.issuing is not None
    if kept and not force and all(match for _, match in held):
        assert stored.root is not None and stored.issuing is not None
        return Chain(issuing=stored.issuing, root=stored.root), False
    if any(have for have, _ in held) and not force:
        labels = [ca.root_label, issuing_label][-len(held) :]
        which = [lbl for lbl, (have, _) in zip(labels, held, strict=True) if have]
        raise AlreadyInitialised(
            f"HSM already holds {', '.join(which)} without matching certificates; "
            "run `qes init --force` to replace the CA keys"
        )
    if sides.root is None:
        raise ConfigError(
            "the CA needs its root: give the offline root token's PIN ($QES_ROOT_PIN or"
            " offline.pin_file) to `qes init`, or run the key ceremony (README)"
        )
    root, _ = await sides.root.create(None, force=True)
    await online.import_root(root, replace=True)
    csr, _ = await online.request("issuing", fresh=True)
    issuing_cert = await sides.root.sign(root, csr, "issuing")
    await online.import_certificate(issuing_cert, replace=True)
    issuing = await online.certs.current("issuing", ca.issuing_label)
    assert issuing is not None
    return Chain(issuing=issuing.certificate, root=root), True


def _responder_fresh(
    cert: x509.Certificate | None,
    issuer: x509.Certificate,
    session: HsmSession,
    label: str,
    now: datetime,
) -> bool:
    """A stored responder certificate is kept while it is the responder key's, from
    ``issuer``, and not due for renewal (:func:`ca.ocsp.renewal_due`: RFC 6960 §4.2.2.2.1,
    with id-pkix-ocsp-nocheck it cannot be revoked, so it is short-lived and renewed once a
    third of its life is left, unless it already ends with its CA)."""
    return (
        cert is not None
        and holds_key(session, label, cert)
        and issued_by(cert, issuer)
        and not renewal_due(cert, issuer, now)
    )


def _answering(
    cert: x509.Certificate, label: str, root: x509.Certificate, session: HsmSession, now: datetime
) -> bool:
    """Whether the issuing CA generation ``cert`` (its key ``label``) gets a responder
    certificate: issued by the current ``root`` (not one `qes init --force` replaced), valid
    at ``now``, and its key still in the HSM."""
    valid = cert.not_valid_before_utc <= now < cert.not_valid_after_utc
    return valid and issued_by(cert, root) and holds_key(session, label, cert)


#: Responder certificates made now: (issuing CA generation, its new responder certificate).
_Made = tuple[tuple[x509.Certificate, x509.Certificate], ...]


@dataclass(frozen=True)
class _OnlineServices:
    """On the HSM thread: the TSA (unless external) and the OCSP responder key with the
    issuing CA generations' responder certificates, made in ``session`` at ``now`` from what
    the database holds (``stored``); ``force`` replaces their keys."""

    session: HsmSession
    settings: Settings
    now: datetime
    stored: StoredCertificates
    force: bool

    def make(self, chain: Chain) -> tuple[x509.Certificate | None, bool, _Made, bool]:
        """The TSA and the responder certificates: (TSA, made now, (issuing CA generation,
        responder certificate made now) pairs, the root's responder is due)."""
        issuing_label = self.stored.issuing_label or self.settings.ca.issuing_label
        tsa, tsa_created = None, False
        if self.settings.tsa.url is None:
            tsa, tsa_created = self._tsa((chain, issuing_label))
        made, root_due = self._ocsp(chain)
        return tsa, tsa_created, made, root_due

    def _tsa(self, issuer: tuple[Chain, str]) -> tuple[x509.Certificate, bool]:
        """The TSA key (created when missing, replaced with ``force``) and a certificate for
        it from the current issuing CA (``issuer``: the chain and the issuing CA's key label);
        kept when it matches the key and was issued by the current or an earlier issuing CA."""
        session, settings, stored = self.session, self.settings, self.stored
        chain, issuing_label = issuer
        label = stored.tsa_label or settings.tsa.label
        if self.force or not session.has_token_key(label):
            label = settings.tsa.label
            session.create_token_key(label, settings.ca.curve, replace=True)
        elif (
            stored.tsa is not None
            and holds_key(session, label, stored.tsa)
            and any(issued_by(stored.tsa, ca) for ca in (chain.issuing, *dict(stored.issuers)))
        ):
            return stored.tsa, False
        cert = issue_tsa_certificate(
            session, settings, self.now, chain.issuing, issuing_label, label
        )
        return cert, True

    def _ocsp(self, chain: Chain) -> tuple[_Made, bool]:
        """The OCSP responder key (created when missing, replaced with ``force``) and a
        delegated responder certificate from each issuing CA generation that lacks a fresh one
        (RFC 6960 §4.2.2.2: issued by the CA of the certificates it answers for), made with
        that generation's online key: a past one still answers for the TSA certificates it
        issued, a pending one from its first day (:func:`_answering` says which generations);
        ((generation, certificate made now) ..., the root's responder certificate must be made
        anew too). The root's comes from the key ceremony."""
        session, stored, now, ca = self.session, self.stored, self.now, self.settings.ca
        if self.force or not session.has_token_key(ca.ocsp_label):
            session.create_token_key(ca.ocsp_label, ca.curve, replace=True)
        root_due = not _responder_fresh(stored.ocsp_root, chain.root, session, ca.ocsp_label, now)
        have = dict(stored.ocsp_issuing)
        made = []
        for issuing, label in stored.generations:
            if not _answering(issuing, label, chain.root, session, now):
                continue
            if _responder_fresh(have.get(issuing), issuing, session, ca.ocsp_label, now):
                continue
            made.append((issuing, issue_responder_certificate(session, ca, issuing, label, now)))
        return tuple(made), root_due


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
        ocsp_root=await store.load(responder_label(settings, "root")),
        ocsp_issuing=await load_issuing_responders(
            store, settings, (g.certificate for g in issuing)
        ),
        issuing_label=current["issuing"].key_label if current["issuing"] else None,
        tsa_label=current["tsa"].key_label if current["tsa"] else None,
        issuers=tuple((g.certificate, g.key_label) for g in issuing if g.state != "pending"),
        generations=tuple((g.certificate, g.key_label) for g in issuing),
    )
    return stored, current


async def init_ca(sides: Sides, now: datetime, *, force: bool) -> InitResult:
    """`qes init`: the root and issuing CA through the ceremony (:func:`_chain`), then online
    the TSA and the issuing CA generations' OCSP responder certificates, then through the
    ceremony again the root's OCSP responder certificate and the root's CRL when they are
    missing, replaced or due."""
    online = sides.online
    settings, store = online.settings, online.certs
    stored, before = await _stored(store, settings)
    chain, created = await _chain(sides, stored, force=force)
    stored, _ = await _stored(store, settings)
    made = await online.hsm.run(
        lambda s: _OnlineServices(s, settings, now, stored, force or created).make(chain)
    )
    tsa, tsa_created, responders, root_responder_due = made
    if tsa is not None and tsa_created:
        await store.save(settings.tsa.label, tsa, now)
        await store.replace(
            "tsa", before["tsa"], Generation("tsa", 1, settings.tsa.label, tsa), now
        )
    for issuing, responder in responders:
        await save_issuing_responder(store, settings, issuing, responder, now)
    due = await _root_products(sides, chain, root_responder_due, force or created)
    ocsp = await load_responders(store, settings, chain.root, (c for c, _ in stored.generations))
    ocsp_created = bool(responders) or "ocsp-root" in due[1]
    _, online_root = await _holds(online.hsm, settings.ca.root_label, chain.root)
    return InitResult(chain, created, tsa, tsa_created, ocsp, ocsp_created, due[0], online_root)


async def _root_products(
    sides: Sides, chain: Chain, responder_due: bool, replaced: bool
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Through the ceremony: the root's OCSP responder certificate when ``responder_due``,
    the root's CRL when there is none for this root, it is due (:data:`expiry.ROOT_CRL_LEAD`)
    or the CA was ``replaced``. (what waits for the root token, what was made)."""
    online, root = sides.online, sides.root
    crl = await online.crls.newest(key_identifier(chain.root))
    crl_due = replaced or crl is None or crl.next_update - online.audit.clock() < ROOT_CRL_LEAD
    wanted = (("ocsp-root",) if responder_due else ()) + (("root CRL",) if crl_due else ())
    if root is None:
        return wanted, ()
    if responder_due:
        csr, _ = await online.request("ocsp-root")
        await online.import_certificate(await root.sign(chain.root, csr, "ocsp-root"))
    if crl_due:
        der = await root.crl(chain.root, await online.request_crl(), ROOT_CRL_NEXT_UPDATE)
        await online.import_crl(der)
    return (), wanted


def replaced(result: InitResult) -> tuple[tuple[str, x509.Certificate], ...]:
    """The CA certificates `qes init` made anew (new keys), by role: root and issuing CA
    together, the TSA (when it is this service's own), the delegated OCSP responder
    certificates of the root and the new issuing CA (one key, RFC 6960 §4.2.2.2)."""
    made: list[tuple[str, x509.Certificate]] = []
    if result.created:
        made += [("root", result.chain.root), ("issuing", result.chain.issuing)]
    if result.tsa is not None and result.tsa_created:
        made.append(("tsa", result.tsa))
    if result.ocsp is not None and result.ocsp_created:
        made.append(("ocsp-root", result.ocsp.root))
        issuing = result.ocsp.of(result.chain.issuing)
        made += [("ocsp-issuing", issuing)] if issuing is not None else []
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
