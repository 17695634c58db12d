"""The watch on the CA, TSA and OCSP responder certificates' ends (signer.signing.expiry)."""

from __future__ import annotations

from datetime import timedelta

import structlog
from cryptography.hazmat.primitives.asymmetric import ec

from ca.authority import Chain, build_issuing_certificate
from ca.ocsp import RESPONDER_RENEW_BEFORE, build_responder_certificate
from ca.tsa import key_usage_period
from signer import metrics
from signer.signing import expiry
from signer.signing.revocation import Responders
from signer.storage.authority import Generation
from tests.support.pki import NAMES, POLICY, TSA_KEY_USAGE, make_pki

DAY = timedelta(days=1)


def _gauge(gauge: object, role: str) -> float:
    return gauge.labels(role)._value.get()  # type: ignore[attr-defined]


def test_renewal_is_due_a_lead_before_the_end_and_says_what_to_do() -> None:
    pki = make_pki()
    now = pki.clock()
    key = pki.signer()[0]
    root_responder, issuing_responder = (
        build_responder_certificate(
            k, c, key.public_key(), NAMES, "OCSP", now=now, lifetime=90 * DAY
        )
        for k, c in ((pki.root_key, pki.chain.root), (pki.issuing_key, pki.chain.issuing))
    )
    responders = Responders(root_responder, ((pki.chain.issuing, issuing_responder),))
    tsa = pki.tsa().certificate
    generations = (Generation("issuing", 1, "ca", pki.chain.issuing, now),)
    watched = expiry.watched(pki.chain, tsa, responders, generations)
    assert [w.role for w in watched] == ["root", "issuing", "tsa", "ocsp-root", "ocsp-issuing"]
    assert [w.name for w in watched] == [w.role for w in watched]
    assert [w.role for w in expiry.watched(pki.chain, None, None, ())] == ["root", "issuing"]

    with structlog.testing.capture_logs() as logs:
        assert expiry.check(watched, now) == []
    assert logs == []
    for w in watched:
        assert _gauge(metrics.CERT_NOT_AFTER, w.role) == w.not_after.timestamp()
        assert _gauge(metrics.CERT_RENEW_BY, w.role) == w.renew_by.timestamp()
    responder_end = responders.root.not_valid_after_utc
    assert watched[3].renew_by == responder_end - RESPONDER_RENEW_BEFORE

    # a second before the responders' renewal time nothing is due; at it, both are
    just_before = responder_end - RESPONDER_RENEW_BEFORE - timedelta(seconds=1)
    assert expiry.check(watched, just_before) == []
    at = just_before + timedelta(seconds=1)
    with structlog.testing.capture_logs() as logs:
        due = expiry.check(watched, at)
    assert [w.role for w in due] == ["ocsp-root", "ocsp-issuing"]
    assert [(e["event"], e["log_level"], e["role"]) for e in logs] == [
        ("certificate_renewal_due", "warning", "ocsp-root"),
        ("certificate_renewal_due", "warning", "ocsp-issuing"),
    ]
    assert logs[0]["days_left"] == RESPONDER_RENEW_BEFORE.days
    assert "qes init" in logs[0]["action"]

    # the TSA's end is its key usage period's, well before notAfter; its lead is 90 days: due
    # then, and still due (and logged) after the key may no longer sign
    usage_end = key_usage_period(tsa)[1]
    assert usage_end == tsa.not_valid_before_utc + TSA_KEY_USAGE < tsa.not_valid_after_utc
    assert watched[2].renew_by == usage_end - 90 * DAY
    assert "tsa" not in [w.role for w in expiry.check(watched, usage_end - 91 * DAY)]
    assert "tsa" in [w.role for w in expiry.check(watched, usage_end - 90 * DAY)]
    with structlog.testing.capture_logs() as logs:
        assert "tsa" in [w.role for w in expiry.check(watched, usage_end + DAY)]
    (tsa_log,) = [e for e in logs if e["role"] == "tsa"]
    assert tsa_log["days_left"] == 0 and tsa_log["ends"] == usage_end.isoformat()
    assert "qes ca rollover tsa" in tsa_log["action"]


def test_every_issuing_generations_responder_is_watched_under_its_number() -> None:
    """The current issuing CA generation's responder is ``ocsp-issuing``, each other one's
    ``ocsp-issuing-g<n>`` (its own gauge and log line); one that ends with its CA (cut to it:
    renewing gains nothing) is not watched, its CA's end is."""
    pki = make_pki()
    now = pki.clock()
    key = pki.signer()[0]
    short_key = ec.generate_private_key(ec.SECP256R1())
    short = build_issuing_certificate(  # a pending generation that ends in 40 days
        pki.root_key, pki.chain.root, short_key.public_key(), NAMES, POLICY, now, 40 * DAY
    )
    past = pki.chain.issuing
    current = build_issuing_certificate(
        pki.root_key, pki.chain.root, pki.tsa_key.public_key(), NAMES, POLICY, now, 900 * DAY
    )
    made = [
        build_responder_certificate(k, c, key.public_key(), NAMES, "OCSP", now=now, lifetime=d)
        for k, c, d in (
            (pki.root_key, pki.chain.root, 90 * DAY),
            (pki.issuing_key, past, 90 * DAY),
            (pki.tsa_key, current, 90 * DAY),
            (short_key, short, 40 * DAY - timedelta(seconds=1)),
        )
    ]
    responders = Responders(made[0], ((past, made[1]), (current, made[2]), (short, made[3])))
    generations = (
        Generation("issuing", 1, "ca", past, now - DAY, now),
        Generation("issuing", 2, "ca-g2", current, now),
        Generation("issuing", 3, "ca-g3", short),
    )
    chain = Chain(issuing=current, root=pki.chain.root)
    watched = expiry.watched(chain, None, responders, generations)
    assert [(w.name, w.certificate) for w in watched[2:]] == [
        ("ocsp-root", made[0]),
        ("ocsp-issuing-g1", made[1]),
        ("ocsp-issuing", made[2]),
    ]
    at = made[1].not_valid_after_utc - RESPONDER_RENEW_BEFORE
    with structlog.testing.capture_logs() as logs:
        due = expiry.check(watched, at)
    assert [w.name for w in due] == ["ocsp-root", "ocsp-issuing-g1", "ocsp-issuing"]
    assert [e["role"] for e in logs] == [w.name for w in due]
    assert _gauge(metrics.CERT_RENEW_BY, "ocsp-issuing-g1") == at.timestamp()
