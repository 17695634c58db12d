"""Who answers OCSP requests for what after rollovers (signer.signing.revocation): each issuing
CA generation in its own name, through its own delegated responder certificate (RFC 6960
§4.2.2.2), about the TSA certificates it issued; the root's responder about every issuing CA
generation, pending and past ones too; nobody about a generation without a responder
certificate or of a root `qes init --force` replaced (``unauthorized``, §2.3).

Pure: certificates made with the production ``ca`` functions, the requests read by
:func:`ca.ocsp.ask` as the service reads them; nothing is signed (no HSM, no database)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp

from ca.authority import build_issuing_certificate
from ca.ocsp import Question, ask, build_responder_certificate
from ca.tsa import build_tsa_certificate
from signer.formats.ltv import ocsp_request
from signer.signing.revocation import Responders, RevocationStatus
from signer.storage.authority import Generation
from tests.support.pki import NAMES, POLICY, Pki, make_pki

DAY = timedelta(days=1)


@dataclass(frozen=True)
class Rolled:
    """Root, issuing g1 (past), g2 (current), g3 (pending), one from a replaced root; TSA g1
    (by issuing g1) and TSA g2 (by g2)."""

    pki: Pki
    issuing: tuple[x509.Certificate, ...]
    keys: tuple[ec.EllipticCurvePrivateKey, ...]
    tsa: tuple[x509.Certificate, x509.Certificate]
    other: Pki  # another root (`qes init --force`) and its issuing CA
    responder_key: ec.EllipticCurvePrivateKey

    @property
    def replaced(self) -> x509.Certificate:
        """An issuing CA of the replaced root, with a responder certificate stored."""
        return self.other.chain.issuing


def _rolled() -> Rolled:
    pki = make_pki()
    now = pki.clock()
    keys = [pki.issuing_key, *(ec.generate_private_key(ec.SECP256R1()) for _ in range(2))]
    issuing = [pki.chain.issuing] + [
        build_issuing_certificate(
            pki.root_key, pki.chain.root, k.public_key(), NAMES, POLICY, now, 900 * DAY
        )
        for k in keys[1:]
    ]
    other = make_pki()
    second_tsa = _tsa_from(keys[1], issuing[1], pki)
    return Rolled(
        pki,
        tuple(issuing),
        tuple(keys),
        (pki.tsa_certificate, second_tsa),
        other,
        ec.generate_private_key(ec.SECP256R1()),
    )


def _tsa_from(key: ec.EllipticCurvePrivateKey, issuer: x509.Certificate, pki: Pki) -> Any:
    tsa_key = ec.generate_private_key(ec.SECP256R1())
    return build_tsa_certificate(
        key, issuer, tsa_key.public_key(), NAMES, "Example Time-Stamping Unit 2",
        ca_issuers_url=POLICY.ca_issuers_url, crl_url="http://pki.example.com/2.crl",
        now=pki.clock(), lifetime=365 * DAY, key_usage=100 * DAY,
    )  # fmt: skip


def _responder(r: Rolled, key: ec.EllipticCurvePrivateKey, ca: x509.Certificate) -> Any:
    return build_responder_certificate(
        key, ca, r.responder_key.public_key(), NAMES, "OCSP", now=r.pki.clock(), lifetime=90 * DAY
    )


def _status(r: Rolled, with_responders: tuple[int, ...] = (0, 1, 2)) -> RevocationStatus:
    """The replica of issuing g2 and TSA g2; responder certificates of the generations
    ``with_responders`` (indices into ``r.issuing``) and of the replaced root's issuing CA."""
    other = r.other
    stale = build_responder_certificate(
        other.issuing_key, other.chain.issuing, r.responder_key.public_key(), NAMES, "OCSP",
        now=other.clock(), lifetime=90 * DAY,
    )  # fmt: skip
    replaced = (other.chain.issuing, stale)
    mine = tuple((r.issuing[i], _responder(r, r.keys[i], r.issuing[i])) for i in with_responders)
    responders = Responders(_responder(r, r.pki.root_key, r.pki.chain.root), (*mine, replaced))
    states = [(now := r.pki.clock()) - DAY, now, None]
    generations = [
        Generation("issuing", n + 1, f"ca-g{n + 1}", c, states[n], now if n == 0 else None)
        for n, c in enumerate(r.issuing)
    ]
    generations.append(Generation("issuing", 4, "ca-old", other.chain.issuing, now - 9 * DAY))
    return RevocationStatus(
        hsm=None, store=None, settings=None, root_crls=None,  # type: ignore[arg-type]
        chain=r.pki.chain, tsa=r.tsa[1], responders=responders, clock=r.pki.clock,
        issuing_crl=(r.issuing[1], "ca-g2"), tsa_issued=r.tsa,
        issuing_generations=tuple(generations),
    )  # fmt: skip


def _asked(status: RevocationStatus, cert: x509.Certificate, issuer: x509.Certificate) -> Any:
    return ask(ocsp_request(cert, issuer), status._issuers)


def _status_of(question: Question) -> str:
    """What the answer will say (good, revoked or unknown), before any revocation."""
    return "good" if question.request.serial_number in question.about.issued else "unknown"


@pytest.fixture(scope="module")
def rolled() -> Rolled:
    return _rolled()


def test_each_issuing_generation_answers_for_its_own_tsa_certificates(rolled: Rolled) -> None:
    status = _status(rolled)
    for n, tsa in enumerate(rolled.tsa):
        question = _asked(status, tsa, rolled.issuing[n])
        assert isinstance(question, Question)
        assert question.about.issuer == rolled.issuing[n]
        assert question.about.responder.issuer == rolled.issuing[n].subject
        question.about.responder.verify_directly_issued_by(rolled.issuing[n])
        assert question.about.extra == (rolled.issuing[n],)
        assert _status_of(question) == "good"
    # TSA g2 named under issuing g1's or pending g3's CertID: they did not issue it (§2.2)
    for n in (0, 2):
        question = _asked(status, rolled.tsa[1], rolled.issuing[n])
        assert isinstance(question, Question) and _status_of(question) == "unknown"


def test_the_root_answers_for_every_issuing_generation(rolled: Rolled) -> None:
    status = _status(rolled)
    for ca in rolled.issuing:  # past, current, pending
        question = _asked(status, ca, rolled.pki.chain.root)
        assert isinstance(question, Question)
        assert question.about.issuer == rolled.pki.chain.root
        assert _status_of(question) == "good"
    # an issuing CA of another root is not the root's to answer about: unknown
    question = _asked(status, rolled.replaced, rolled.pki.chain.root)
    assert isinstance(question, Question) and _status_of(question) == "unknown"


def test_no_responder_certificate_or_a_replaced_root_is_unauthorized(rolled: Rolled) -> None:
    status = _status(rolled, with_responders=(1, 2))  # issuing g1 never got one
    for cert, issuer in (
        (rolled.tsa[0], rolled.issuing[0]),
        (rolled.tsa[0], rolled.replaced),  # a stored responder of a replaced root's CA
    ):
        refusal = _asked(status, cert, issuer)
        assert isinstance(refusal, bytes)
        answer = ocsp.load_der_ocsp_response(refusal)
        assert answer.response_status == ocsp.OCSPResponseStatus.UNAUTHORIZED
    question = _asked(status, rolled.tsa[1], rolled.issuing[1])
    assert isinstance(question, Question) and _status_of(question) == "good"
