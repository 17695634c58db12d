"""Rolling the issuing CA and the built-in TSA without breaking the past (issue 15 item 2).

EN 319 411-1 §6.3.6 (CA key changeover) and EN 319 421 §7.7.4 (TSU key life cycle) ask that a
new key takes over before the old one must stop, and that what the old one signed stays
verifiable. Here that is two operator commands, each an admin act in the transparency log:

- a **pending** generation: a new HSM key labelled ``<label>-g<n>`` and its certificate,
  stored in PostgreSQL (:class:`signer.storage.authority.Generation`) while the current one
  still serves. The TSA's comes from the current issuing CA (`qes ca rollover tsa`); the
  issuing CA's from the offline root, through the key ceremony (`qes ca request issuing`,
  `qes ca root sign`, `qes ca import`: :mod:`signer.signing.ceremony`), so no online command
  ever touches the root key. Replicas list it in the trust bundle from their next
  start, so relying parties can take it in before it is used;
- `qes ca switch issuing|tsa` makes it **current** and the old one **past**, in one
  transaction. Replicas take the new generation on their next start (a rolling restart): what
  a replica signs with is fixed for its life (:func:`load_authorities` at start).

Every generation's certificate stays in the trust bundle forever with the period in which it
issued (``issued_from``, ``issued_until``). The old issuing CA's key stays in the HSM: it
still signs its CRL (the CRL of a certificate must come from its issuer, RFC 5280 §6.3.3) and
its OCSP responder's certificate (RFC 6960 §4.2.2.2) for the TSA certificates it issued, and
no leaf it issued needs either (RFC 9608). The old TSA key stays too, unused: its
privateKeyUsagePeriod ends anyway.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import structlog
from cryptography import x509
from cryptography.exceptions import InvalidSignature

from ca.authority import Chain
from ca.tsa import build_tsa_certificate
from signer.errors import ConfigError, SignerError
from signer.keys import Hsm, HsmSession
from signer.settings.config import Settings
from signer.signing.ceremony import key_identifier
from signer.storage.authority import (
    ROLLED_ROLES,
    CaCertificateStore,
    Generation,
    generation_label,
)
from signer.storage.policy import LoggedAction
from signer.translog.admin import AdminLog, certificate_target

log = structlog.get_logger(__name__)


class RolloverRefused(SignerError):
    """The rollover or switch asked for cannot be made now (the message says why)."""

    slug = "rollover-refused"
    title = "CA rollover refused"
    status = 400


@dataclass(frozen=True)
class Authorities:
    """The root and every generation of the issuing CA and of the built-in TSA (none with an
    external TSA), oldest first: what the service signs with now and what it ever did."""

    root: x509.Certificate
    issuing: tuple[Generation, ...]
    tsa: tuple[Generation, ...] = ()
    roots: tuple[Generation, ...] = ()  # the root's history (`qes init --force`)

    def __post_init__(self) -> None:
        if self.current("issuing") is None:
            raise ConfigError("no current issuing CA in the database: run `qes init` first")

    @property
    def history(self) -> tuple[Generation, ...]:
        """Every generation of the root, the issuing CA and the TSA, oldest first per role."""
        return (*self.roots, *self.issuing, *self.tsa)

    def current(self, role: str) -> Generation | None:
        found = [g for g in self._of(role) if g.state == "current"]
        return found[0] if found else None

    def _of(self, role: str) -> tuple[Generation, ...]:
        return self.issuing if role == "issuing" else self.tsa

    @property
    def issuing_ca(self) -> Generation:
        current = self.current("issuing")
        assert current is not None  # __post_init__
        return current

    @property
    def chain(self) -> Chain:
        """The current issuing CA and the root: what new certificates chain to."""
        return Chain(issuing=self.issuing_ca.certificate, root=self.root)

    def issuer_of(self, cert: x509.Certificate) -> Generation:
        """The issuing CA generation that signed ``cert`` (a TSA certificate)."""
        for g in reversed(self.issuing):
            try:
                cert.verify_directly_issued_by(g.certificate)
            except (ValueError, TypeError, InvalidSignature):
                continue
            return g
        raise ConfigError("certificate: issued by none of the issuing CA generations")


async def load_authorities(store: CaCertificateStore, settings: Settings) -> Authorities:
    """Every generation from PostgreSQL; raises :class:`ConfigError` before `qes init`."""
    root = await store.load(settings.ca.root_label)
    issuing = await store.generations("issuing", settings.ca.issuing_label)
    if root is None or not issuing:
        raise ConfigError("no CA certificates in the database: run `qes init` first")
    tsa = () if settings.tsa.url is not None else await store.generations("tsa", settings.tsa.label)
    roots = await store.generations("root", settings.ca.root_label)
    return Authorities(root=root, issuing=issuing, tsa=tsa, roots=roots)


def _make(
    session: HsmSession, settings: Settings, now: datetime, a: Authorities, label: str
) -> x509.Certificate:
    """On the HSM thread: the new TSA key (a leftover under ``label`` from a rollover that
    failed before it was stored is replaced: no generation names it) and its certificate
    from the current issuing CA."""
    session.create_token_key(label, settings.ca.curve, replace=True)
    current = a.issuing_ca
    return issue_tsa_certificate(
        session, settings, now, current.certificate, current.key_label, label
    )


def issuing_url(template: str, issuing: x509.Certificate) -> str:
    """``template`` (``ca.issuing_crl_url``, ``ca.issuing_certificate_url``) for the issuing CA
    generation ``issuing``: ``{key_id}`` is its subjectKeyIdentifier in hex (RFC 5280
    §4.2.1.2), so a TSA certificate names its own issuer's CRL and certificate for as long as it
    lives, whichever issuing CA is current by then."""
    return template.replace("{key_id}", key_identifier(issuing).hex())


def issue_tsa_certificate(
    session: HsmSession,
    settings: Settings,
    now: datetime,
    issuing: x509.Certificate,
    issuing_label: str,
    tsa_label: str,
) -> x509.Certificate:
    """A TSA certificate for the key ``tsa_label`` from the issuing CA ``issuing`` (its key
    ``issuing_label``): ``tsa.lifetime``, cut to the issuing CA's end, and a key usage period
    ``tsa.key_usage`` cut in the same proportion (EN 319 421 §7.7.4); its CRL distribution
    point and caIssuers are that issuing CA's own (:func:`issuing_url`)."""
    tsa = settings.tsa
    lifetime = min(tsa.lifetime, issuing.not_valid_after_utc - now)
    return build_tsa_certificate(
        session.token_key(issuing_label),
        issuing,
        session.token_key(tsa_label).public_key(),
        settings.ca.names,
        tsa.common_name,
        ca_issuers_url=issuing_url(settings.ca.issuing_certificate_url, issuing),
        crl_url=issuing_url(settings.ca.issuing_crl_url, issuing),
        now=now,
        lifetime=lifetime,
        key_usage=min(tsa.key_usage, lifetime * (tsa.key_usage / tsa.lifetime)),
    )


async def rollover(
    hsm: Hsm,
    store: CaCertificateStore,
    settings: Settings,
    role: str,
    now: datetime,
    audit: AdminLog,
) -> Generation:
    """`qes ca rollover ROLE`: a pending generation of ``role`` beside the current one, stored
    with its ``ca-rollover`` admin act in one transaction. Raises :class:`RolloverRefused`
    for an unknown role, an external TSA, or when a pending generation exists already."""
    if role == "issuing":
        raise RolloverRefused(
            "issuing: its certificate comes from the offline root: `qes ca request issuing`,"
            " `qes ca root sign` (offline), `qes ca import` make the pending generation"
        )
    if role not in ROLLED_ROLES:
        raise RolloverRefused(f"{role[:40]!r}: roll 'tsa' (the issuing CA: the key ceremony)")
    if settings.tsa.url is not None:
        raise RolloverRefused("tsa: the service uses an external TSA (tsa.url)")
    a = await load_authorities(store, settings)
    known = a.tsa
    if not known:
        raise RolloverRefused(f"{role}: nothing to roll yet: run `qes init` first")
    waiting = [g for g in known if g.state == "pending"]
    if waiting:
        raise RolloverRefused(
            f"{role}: generation {waiting[0].number} is pending: `qes ca switch {role}` first"
        )
    number = max(g.number for g in known) + 1
    label = generation_label(settings.tsa.label, number)
    cert = await hsm.run(lambda s: _make(s, settings, now, a, label))
    pending = Generation(role, number, label, cert)
    logged = audit.act("ca-rollover", certificate_target(cert), detail=f"{role} g{number}", at=now)
    if not await store.add_pending(known, pending, logged, now):
        raise RolloverRefused(f"{role}: another rollover made a pending generation first")
    log.warning(
        "ca_generation_pending",
        role=role,
        generation=number,
        key_label=label,
        serial=format(cert.serial_number, "x"),
        subject=cert.subject.rfc4514_string(),
    )
    return pending


async def switch(
    store: CaCertificateStore, settings: Settings, role: str, now: datetime, audit: AdminLog
) -> tuple[Generation, Generation]:
    """`qes ca switch ROLE`: the pending generation of ``role`` becomes current at ``now``
    and the current one past, with the ``ca-switch`` admin act, in one transaction; (ended,
    started). Raises :class:`RolloverRefused` when nothing is pending."""
    if role not in ROLLED_ROLES:
        raise RolloverRefused(f"{role[:40]!r}: switch 'issuing' or 'tsa'")

    def act(new: Generation) -> LoggedAction:
        target = certificate_target(new.certificate)
        return audit.act("ca-switch", target, detail=f"{role} g{new.number}", at=now)

    switched = await store.switch(role, now, act)
    if switched is None:
        raise RolloverRefused(f"{role}: nothing pending: run `qes ca rollover {role}` first")
    ended, started = switched
    log.warning(
        "ca_generation_switched",
        role=role,
        ended=ended.number,
        started=started.number,
        key_label=started.key_label,
        serial=format(started.certificate.serial_number, "x"),
        at=now.isoformat(),
    )
    return switched
