"""Independent checks of issued certificates with pkilint, OpenSSL and cryptography.

pkilint's exit code is the number of findings at or above ``-s``, so every run is parsed
(JSON output) and compared with the exact list of expected finding codes.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from ca.authority import Chain, IssuingCA, build_crl
from ca.profiles import LegalPerson, Level, NaturalPerson
from tests.support.pkilint import ETSI_TYPES, SHORT_TERM_FINDINGS, lint, lint_together, write_pem


def _subject(kind: str, natural: NaturalPerson, legal: LegalPerson) -> NaturalPerson | LegalPerson:
    return natural if kind == "natural" else legal


@pytest.mark.parametrize("level", list(Level))
@pytest.mark.parametrize("kind", ["natural", "legal"])
def test_leaf_passes_pkilint_except_short_term_findings(
    tmp_path: Path,
    issuing_ca: IssuingCA,
    issuing_key: ec.EllipticCurvePrivateKey,
    leaf_key: ec.EllipticCurvePrivateKey,
    natural_person: NaturalPerson,
    legal_person: LegalPerson,
    kind: str,
    level: Level,
) -> None:
    subject = _subject(kind, natural_person, legal_person)
    leaf = issuing_ca.issue(issuing_key, leaf_key.public_key(), subject, level)
    leaf_pem = write_pem(tmp_path, "leaf.pem", leaf)
    issuer_pem = write_pem(tmp_path, "issuer.pem", issuing_ca.chain.issuing)
    expected_type = ETSI_TYPES[(kind, level)]

    detected, typed, pkix, chain = lint_together(
        ("lint_etsi_cert", "-d", "-o", "-s", "WARNING", leaf_pem),
        ("lint_etsi_cert", "-t", expected_type, "-s", "WARNING", leaf_pem),
        ("lint_pkix_cert", "-s", "WARNING", leaf_pem),
        ("lint_pkix_signer_signee_cert_chain", issuer_pem, leaf_pem),
    )
    assert detected[1].strip() == expected_type
    assert detected[0] == SHORT_TERM_FINDINGS
    assert typed[0] == SHORT_TERM_FINDINGS
    assert pkix[0] == []
    assert chain[0] == []


def test_qualified_differs_from_qes_only_in_the_qscd_claim(
    tmp_path: Path,
    issuing_ca: IssuingCA,
    issuing_key: ec.EllipticCurvePrivateKey,
    leaf_key: ec.EllipticCurvePrivateKey,
    natural_person: NaturalPerson,
) -> None:
    """Linting a QCP-n certificate under the QCP-n-qscd rules finds exactly the QSCD gap.

    This applies EN 319 412-5 QCS-5-01 (QcCompliance, QcType esign) to the ``qualified``
    level, which pkilint cannot select on its own, and shows the harness reports findings.
    """
    leaf = issuing_ca.issue(issuing_key, leaf_key.public_key(), natural_person, Level.QUALIFIED)
    leaf_pem = write_pem(tmp_path, "leaf.pem", leaf)
    codes, _ = lint(
        "lint_etsi_cert", "-t", "QCP-N-QSCD-EIDAS-FINAL-CERTIFICATE", "-s", "WARNING", leaf_pem
    )
    assert codes == sorted(
        [
            *SHORT_TERM_FINDINGS,
            "etsi.en_319_412_2.qcs-5.2-2.mismatched_policy_identifier_for_certificate_type",
            "etsi.en_319_412_5.qcs-5.01.qc_sscd_qualified_statement_absent",
        ]
    )


def test_ca_certificates_pass_pkilint(tmp_path: Path, chain: Chain) -> None:
    """RFC 5280 lint of both CA certificates and of the root->issuing link.

    pkilint 0.13 has no ETSI CA-certificate types (lint_etsi_cert is end-entity only), so the
    CA certificates get the PKIX linters.
    """
    root_pem = write_pem(tmp_path, "root.pem", chain.root)
    issuing_pem = write_pem(tmp_path, "issuing.pem", chain.issuing)
    assert lint("lint_pkix_cert", "-s", "WARNING", root_pem)[0] == []
    assert lint("lint_pkix_cert", "-s", "WARNING", issuing_pem)[0] == []
    assert lint("lint_pkix_signer_signee_cert_chain", root_pem, issuing_pem)[0] == []


def test_crl_passes_pkilint(
    tmp_path: Path,
    chain: Chain,
    root_key: ec.EllipticCurvePrivateKey,
    clock: Callable[[], datetime],
) -> None:
    crl = build_crl(root_key, chain.root, clock(), timedelta(days=7), revoked=[4242])
    path = tmp_path / "root.crl"
    path.write_bytes(crl.public_bytes(serialization.Encoding.PEM))
    assert lint("lint_crl", "-t", "CRL", "-p", "PKIX", "-s", "WARNING", path)[0] == []


def _openssl_verify(tmp_path: Path, chain: Chain, leaf: Path, at: int, *extra: str) -> str:
    openssl = shutil.which("openssl")
    assert openssl, "openssl is required for the independent chain check"
    root = write_pem(tmp_path, "root.pem", chain.root)
    issuing = write_pem(tmp_path, "issuing.pem", chain.issuing)
    proc = subprocess.run(
        [
            *(openssl, "verify", "-x509_strict", "-attime", str(at), "-CAfile", str(root)),
            *("-untrusted", str(issuing), *extra, str(leaf)),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    return proc.stdout + proc.stderr if proc.returncode else "OK"


@pytest.mark.parametrize("kind", ["natural", "legal"])
def test_openssl_and_cryptography_verify_the_chain(
    tmp_path: Path,
    issuing_ca: IssuingCA,
    issuing_key: ec.EllipticCurvePrivateKey,
    leaf_key: ec.EllipticCurvePrivateKey,
    natural_person: NaturalPerson,
    legal_person: LegalPerson,
    clock: Callable[[], datetime],
    kind: str,
) -> None:
    subject = _subject(kind, natural_person, legal_person)
    leaf = issuing_ca.issue(issuing_key, leaf_key.public_key(), subject, Level.QES)
    leaf_pem = write_pem(tmp_path, "leaf.pem", leaf)
    inside = int(clock().timestamp())
    assert _openssl_verify(tmp_path, issuing_ca.chain, leaf_pem, inside) == "OK"
    # Eleven minutes later the certificate has expired: OpenSSL must say so.
    expired = _openssl_verify(tmp_path, issuing_ca.chain, leaf_pem, inside + 660)
    assert "certificate has expired" in expired

    leaf.verify_directly_issued_by(issuing_ca.chain.issuing)
    issuing_ca.chain.issuing.verify_directly_issued_by(issuing_ca.chain.root)


def test_openssl_honours_the_root_crl_for_the_issuing_ca(
    tmp_path: Path,
    chain: Chain,
    root_key: ec.EllipticCurvePrivateKey,
    clock: Callable[[], datetime],
) -> None:
    """The issuing CA certificate stays revocation-checked through the root's CRL."""
    issuing = write_pem(tmp_path, "issuing-leaf.pem", chain.issuing)
    at = int(clock().timestamp())
    for revoked, expected in (([], "OK"), ([chain.issuing.serial_number], "revoked")):
        crl = build_crl(root_key, chain.root, clock(), timedelta(days=7), revoked=revoked)
        crl_path = tmp_path / "root.crl"
        crl_path.write_bytes(crl.public_bytes(serialization.Encoding.PEM))
        result = _openssl_verify(
            tmp_path, chain, issuing, at, "-crl_check", "-CRLfile", str(crl_path)
        )
        assert expected in result
