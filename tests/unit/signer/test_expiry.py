"""The watch on the CA, TSA and OCSP responder certificates' ends (signer.signing.expiry)."""

from __future__ import annotations

from datetime import timedelta

import structlog

from ca.ocsp import RESPONDER_RENEW_BEFORE, build_responder_certificate
from ca.tsa import key_usage_period
from signer import metrics
from signer.signing import expiry
from signer.signing.revocation import Responders
from tests.support.pki import NAMES, TSA_KEY_USAGE, make_pki

DAY = timedelta(days=1)


def _gauge(gauge: object, role: str) -> float:
    return gauge.labels(role)._value.get()  # type: ignore[attr-defined]


def test_renewal_is_due_a_lead_before_the_end_and_says_what_to_do() -> None:
    pki = make_pki()
    now = pki.clock()
    key = pki.signer()[0]
    responders = Responders(
        *(
            build_responder_certificate(
                k, c, key.public_key(), NAMES, "OCSP", now=now, lifetime=90 * DAY
            )
            for k, c in ((pki.root_key, pki.chain.root), (pki.issuing_key, pki.chain.issuing))
        )
    )
    tsa = pki.tsa().certificate
    watched = expiry.watched(pki.chain, tsa, responders)
    assert [w.role for w in watched] == ["root", "issuing", "tsa", "ocsp-root", "ocsp-issuing"]
    assert [w.role for w in expiry.watched(pki.chain, None, None)] == ["root", "issuing"]

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
