"""The built-in TSA: its certificate profile and RFC 3161 responses, judged by OpenSSL, pkilint
and rfc3161-client (STANDARDS.md §3, §5), not by our own parser."""

from __future__ import annotations

import hashlib
import subprocess
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
from asn1crypto import cms, core, tsp
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID
from rfc3161_client import (
    HashAlgorithm,
    TimestampRequestBuilder,
    VerificationError,
    VerifierBuilder,
    decode_timestamp_response,
)

from ca import der
from ca.errors import PolicyError
from ca.tsa import TimeStampAuthority, TsaError, build_tsa_certificate, key_usage_period
from tests.support.pki import (
    ISSUING_CRL_URL,
    NAMES,
    NOW,
    POLICY,
    TSA_KEY_USAGE,
    TSA_POLICY_OID,
    Pki,
    make_pki,
)
from tests.support.pkilint import lint

DOCUMENT = b"The quick brown fox jumps over the lazy dog.\n" * 20


class Response(core.Sequence):  # type: ignore[misc]
    """RFC 3161 §2.4.2 TimeStampResp, timeStampToken OPTIONAL (absent in rejections)."""

    _fields = [
        ("status", tsp.PKIStatusInfo),
        ("time_stamp_token", cms.ContentInfo, {"optional": True}),
    ]


@pytest.fixture(scope="module")
def pki() -> Pki:
    return make_pki()


@pytest.fixture(scope="module")
def files(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    directory = tmp_path_factory.mktemp("tsa")
    written = pki.write(directory)
    written["doc"] = directory / "doc.bin"
    written["doc"].write_bytes(DOCUMENT)
    return written


@pytest.fixture
def tsa(pki: Pki) -> TimeStampAuthority:
    pki.clock.now = NOW
    return pki.tsa()


def run(*cmd: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, check=False)


def openssl_query(tmp: Path, *options: str) -> Path:
    query = tmp / "req.tsq"
    done = run("openssl", "ts", "-query", *options, "-out", query)
    assert done.returncode == 0, done.stderr
    return query


def at_gen_time() -> str:
    return str(int((NOW + timedelta(seconds=1)).timestamp()))


# -- the TSA certificate --------------------------------------------------------------------


def test_certificate_profile(pki: Pki) -> None:
    cert = pki.tsa_certificate
    ext = cert.extensions
    usage = ext.get_extension_for_class(x509.KeyUsage)
    assert usage.critical and usage.value.digital_signature
    assert not (usage.value.content_commitment or usage.value.key_cert_sign)
    eku = ext.get_extension_for_class(x509.ExtendedKeyUsage)
    assert eku.critical and list(eku.value) == [ExtendedKeyUsageOID.TIME_STAMPING]
    aki = ext.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    issuing_ski = pki.chain.issuing.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    assert aki.key_identifier == issuing_ski.value.digest
    assert ext.get_extension_for_class(x509.SubjectKeyIdentifier).value == (
        x509.SubjectKeyIdentifier.from_public_key(pki.tsa_key.public_key())
    )
    (aia,) = ext.get_extension_for_class(x509.AuthorityInformationAccess).value
    assert aia.access_method == AuthorityInformationAccessOID.CA_ISSUERS
    assert aia.access_location.value == POLICY.ca_issuers_url
    (dp,) = ext.get_extension_for_class(x509.CRLDistributionPoints).value
    assert [n.value for n in dp.full_name or ()] == [ISSUING_CRL_URL]
    assert cert.issuer == pki.chain.issuing.subject
    assert cert.not_valid_after_utc <= pki.chain.issuing.not_valid_after_utc
    cert.verify_directly_issued_by(pki.chain.issuing)
    # The key signs for two of the certificate's three years (EN 319 421 §7.7.4).
    usage = ext.get_extension_for_class(x509.PrivateKeyUsagePeriod)
    assert not usage.critical
    start = cert.not_valid_before_utc
    assert usage.value.not_before is not None and usage.value.not_after is not None
    assert usage.value.not_before.replace(tzinfo=start.tzinfo) == start
    assert usage.value.not_after.replace(tzinfo=start.tzinfo) == start + TSA_KEY_USAGE
    assert key_usage_period(cert) == (start, start + TSA_KEY_USAGE)
    assert start + TSA_KEY_USAGE < cert.not_valid_after_utc


def test_certificate_passes_pkilint_and_openssl(pki: Pki, files: dict[str, Path]) -> None:
    done = run("openssl", "x509", "-in", files["tsa"], "-noout", "-text")
    assert "X509v3 Private Key Usage Period:" in done.stdout, done.stdout  # what pkilint reads
    codes, _ = lint("lint_pkix_cert", "-s", "WARNING", files["tsa"])
    assert codes == []
    codes, _ = lint("lint_pkix_signer_signee_cert_chain", files["issuing"], files["tsa"])
    assert codes == []
    done = run(
        "openssl", "verify", "-CAfile", files["root"], "-untrusted", files["issuing"],
        "-purpose", "timestampsign", "-attime", at_gen_time(), files["tsa"],
    )  # fmt: skip
    assert done.returncode == 0 and ": OK" in done.stdout, done.stdout + done.stderr


def test_certificate_must_end_inside_the_issuing_ca(pki: Pki) -> None:
    remaining = pki.chain.issuing.not_valid_after_utc - NOW
    with pytest.raises(PolicyError, match="outlive"):
        build_tsa_certificate(
            pki.issuing_key,
            pki.chain.issuing,
            ec.generate_private_key(ec.SECP256R1()).public_key(),
            NAMES,
            "Example TSU 2",
            ca_issuers_url=POLICY.ca_issuers_url,
            crl_url=ISSUING_CRL_URL,
            now=NOW,
            lifetime=remaining + timedelta(days=1),
            key_usage=timedelta(days=365),
        )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"issuing_key": "wrong"}, "does not match"),
        ({"crl_url": "ftp://pki.example.com/x.crl"}, "crl_url"),
        ({"common_name": " padded"}, "common_name"),
        ({"lifetime": timedelta(0)}, "lifetime"),
        ({"key_usage": timedelta(days=365)}, "key_usage: must be positive and shorter"),
        ({"key_usage": timedelta(0)}, "key_usage"),
    ],
)
def test_certificate_refuses_bad_settings(
    pki: Pki, change: dict[str, object], message: str
) -> None:
    arguments: dict[str, object] = {
        "issuing_key": pki.issuing_key,
        "issuing": pki.chain.issuing,
        "tsa_public_key": ec.generate_private_key(ec.SECP256R1()).public_key(),
        "names": NAMES,
        "common_name": "Example TSU 2",
        "ca_issuers_url": POLICY.ca_issuers_url,
        "crl_url": ISSUING_CRL_URL,
        "now": NOW,
        "lifetime": timedelta(days=365),
        "key_usage": timedelta(days=100),
    }
    arguments.update(change)
    if arguments["issuing_key"] == "wrong":
        arguments["issuing_key"] = pki.root_key
    with pytest.raises(PolicyError, match=message):
        build_tsa_certificate(**arguments)  # type: ignore[arg-type]


# -- configuration ---------------------------------------------------------------------------


def test_configuration_refuses_a_certificate_without_timestamping(pki: Pki) -> None:
    _, signer_cert = pki.signer()
    with pytest.raises(PolicyError, match="extendedKeyUsage"):
        pki.tsa(certificate=signer_cert)


@pytest.mark.parametrize(
    "overrides",
    [
        {"chain": ()},
        {"policy_oid": "not-an-oid"},
        {"accuracy": timedelta(0)},
        {"hash_algorithms": frozenset({"md5"})},
        {"hash_algorithms": frozenset()},
    ],
    ids=["empty-chain", "policy", "accuracy", "md5", "no-hash"],
)
def test_configuration_refuses_bad_values(pki: Pki, overrides: dict[str, object]) -> None:
    with pytest.raises(PolicyError):
        pki.tsa(**overrides)


def test_configuration_refuses_a_chain_that_does_not_issue_it(pki: Pki) -> None:
    with pytest.raises(PolicyError, match="chain"):
        pki.tsa(chain=(pki.chain.root,))


# -- responses judged by OpenSSL --------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ["sha256", "sha384", "sha512"])
def test_openssl_query_reply_verify(
    tsa: TimeStampAuthority, pki: Pki, files: dict[str, Path], tmp_path: Path, algorithm: str
) -> None:
    query = openssl_query(tmp_path, "-data", str(files["doc"]), f"-{algorithm}", "-cert")
    reply = tmp_path / "resp.tsr"
    reply.write_bytes(tsa.respond(query.read_bytes(), pki.tsa_key))
    text = run("openssl", "ts", "-reply", "-in", reply, "-text")
    assert text.returncode == 0, text.stderr
    assert "Status: Granted." in text.stdout
    assert f"Policy OID: {TSA_POLICY_OID}" in text.stdout
    assert f"Hash Algorithm: {algorithm}" in text.stdout
    assert "Accuracy: 0x01 seconds" in text.stdout
    assert "Time stamp: Mar  1 12:00:00.25 2026 GMT" in text.stdout
    assert "TSA: DirName:" in text.stdout and "CN=Example Time-Stamping Unit 1" in text.stdout
    common = ["-CAfile", files["root"], "-untrusted", files["issuing"], "-attime", at_gen_time()]
    by_query = run("openssl", "ts", "-verify", "-in", reply, "-queryfile", query, *common)
    assert by_query.returncode == 0 and "Verification: OK" in by_query.stdout, by_query.stderr
    by_data = run("openssl", "ts", "-verify", "-in", reply, "-data", files["doc"], *common)
    assert by_data.returncode == 0 and "Verification: OK" in by_data.stdout, by_data.stderr
    digest = hashlib.new(algorithm, DOCUMENT).hexdigest()
    by_digest = run("openssl", "ts", "-verify", "-in", reply, "-digest", digest, *common)
    assert by_digest.returncode == 0, by_digest.stderr


def test_openssl_rejects_a_token_for_a_changed_document(
    tsa: TimeStampAuthority, pki: Pki, files: dict[str, Path], tmp_path: Path
) -> None:
    query = openssl_query(tmp_path, "-data", str(files["doc"]), "-sha256", "-cert")
    reply = tmp_path / "resp.tsr"
    reply.write_bytes(tsa.respond(query.read_bytes(), pki.tsa_key))
    changed = tmp_path / "changed.bin"
    changed.write_bytes(DOCUMENT[:-1] + bytes([DOCUMENT[-1] ^ 1]))
    common = ["-CAfile", files["root"], "-untrusted", files["issuing"], "-attime", at_gen_time()]
    done = run("openssl", "ts", "-verify", "-in", reply, "-data", changed, *common)
    assert done.returncode != 0 and "Verification: OK" not in done.stdout


def test_without_cert_req_the_token_carries_no_certificate(
    tsa: TimeStampAuthority, pki: Pki, files: dict[str, Path], tmp_path: Path
) -> None:
    query = openssl_query(tmp_path, "-data", str(files["doc"]), "-sha256", "-no_nonce")
    reply = tmp_path / "resp.tsr"
    reply.write_bytes(tsa.respond(query.read_bytes(), pki.tsa_key))
    token = Response.load(reply.read_bytes())["time_stamp_token"]
    assert token["content"]["certificates"].native is None
    assert token["content"]["encap_content_info"]["content"].parsed["nonce"].native is None
    untrusted = tmp_path / "untrusted.pem"
    untrusted.write_bytes(files["tsa"].read_bytes() + files["issuing"].read_bytes())
    done = run(
        "openssl", "ts", "-verify", "-in", reply, "-queryfile", query, "-CAfile", files["root"],
        "-untrusted", untrusted, "-attime", at_gen_time(),
    )  # fmt: skip
    assert done.returncode == 0 and "Verification: OK" in done.stdout, done.stderr


def test_token_structure(tsa: TimeStampAuthority, pki: Pki) -> None:
    """RFC 3161 §2.4.2 / RFC 5816: nonce echoed, serials unique, ESSCertIDv2 of the TSA cert."""
    digest = hashlib.sha256(DOCUMENT).digest()
    request = tsp.TimeStampReq(
        {
            "version": "v1",
            "message_imprint": {
                "hash_algorithm": {"algorithm": "sha256"},
                "hashed_message": digest,
            },
            "nonce": 2**63 + 5,
            "cert_req": True,
        }
    ).dump()
    tokens = [
        Response.load(tsa.respond(request, pki.tsa_key))["time_stamp_token"] for _ in range(2)
    ]
    infos = [t["content"]["encap_content_info"]["content"].parsed for t in tokens]
    assert [i["nonce"].native for i in infos] == [2**63 + 5] * 2
    assert infos[0]["serial_number"].native != infos[1]["serial_number"].native
    signed_data = tokens[0]["content"]
    assert signed_data["version"].native == "v3"
    (signer_info,) = signed_data["signer_infos"]
    attrs = {a["type"].native: a["values"] for a in signer_info["signed_attrs"]}
    assert set(attrs) == {"content_type", "message_digest", "signing_certificate_v2"}
    assert attrs["content_type"][0].native == "tst_info"
    (ess,) = attrs["signing_certificate_v2"][0]["certs"]
    tsa_der = pki.tsa_certificate.public_bytes(Encoding.DER)
    assert ess["cert_hash"].native == hashlib.sha256(tsa_der).digest()
    assert ess["issuer_serial"]["serial_number"].native == pki.tsa_certificate.serial_number
    assert signer_info["signature_algorithm"]["algorithm"].native == "sha256_ecdsa"
    certs = [c.chosen.dump() for c in signed_data["certificates"]]
    assert certs == [tsa_der]


# -- rejections -----------------------------------------------------------------------------


def _request(**fields: object) -> bytes:
    values: dict[str, object] = {
        "version": "v1",
        "message_imprint": {
            "hash_algorithm": {"algorithm": "sha256"},
            "hashed_message": hashlib.sha256(DOCUMENT).digest(),
        },
        "cert_req": True,
    }
    values.update(fields)
    return bytes(tsp.TimeStampReq(values).dump())


EXTENSION = {"extn_id": "1.3.6.1.4.1.32473.9", "critical": False, "extn_value": b"\x05\x00"}


@pytest.mark.parametrize(
    ("request_der", "failure", "openssl_text"),
    [
        (b"\x30\x03\x02\x01", "bad_data_format", "has the wrong format"),
        (_request() + b"\x00", "bad_data_format", "has the wrong format"),
        (_request(version=2), "bad_request", "transaction not permitted or supported"),
        (
            _request(message_imprint={"hash_algorithm": {"algorithm": "sha1"},
                                      "hashed_message": bytes(20)}),
            "bad_alg", "unrecognized or unsupported algorithm identifier",
        ),
        (
            _request(message_imprint={"hash_algorithm": {"algorithm": "sha256"},
                                      "hashed_message": bytes(31)}),
            "bad_data_format", "has the wrong format",
        ),
        (_request(req_policy="1.3.6.1.4.1.32473.7"), "unaccepted_policy", "policy"),
        (_request(extensions=[EXTENSION]), "unaccepted_extensions", "extension"),
        (_request(nonce=2**300), "bad_request", "transaction not permitted or supported"),
    ],
    ids=["garbage", "trailing", "version", "sha1", "length", "policy", "extension", "nonce"],
)  # fmt: skip
def test_rejections_carry_the_right_failure_bit(
    tsa: TimeStampAuthority,
    pki: Pki,
    tmp_path: Path,
    request_der: bytes,
    failure: str,
    openssl_text: str,
) -> None:
    reply = tmp_path / "resp.tsr"
    reply.write_bytes(tsa.respond(request_der, pki.tsa_key))
    status = Response.load(reply.read_bytes())["status"]
    assert status["status"].native == "rejection"
    assert status["fail_info"].native == {failure}
    text = run("openssl", "ts", "-reply", "-in", reply, "-text")
    assert text.returncode == 0, text.stderr
    assert "Status: Rejected." in text.stdout
    assert openssl_text in text.stdout.split("Failure info:")[1]


def test_our_policy_requested_is_granted(tsa: TimeStampAuthority, pki: Pki) -> None:
    response = Response.load(tsa.respond(_request(req_policy=TSA_POLICY_OID), pki.tsa_key))
    assert response["status"]["status"].native == "granted"


def test_a_hash_not_configured_is_refused(pki: Pki) -> None:
    only_sha256 = pki.tsa(hash_algorithms=frozenset({"sha256"}))
    digest = hashlib.sha512(DOCUMENT).digest()
    request = _request(
        message_imprint={"hash_algorithm": {"algorithm": "sha512"}, "hashed_message": digest}
    )
    status = Response.load(only_sha256.respond(request, pki.tsa_key))["status"]
    assert status["fail_info"].native == {"bad_alg"}
    with pytest.raises(TsaError, match="not accepted"):
        only_sha256.timestamp_digest(digest, "sha512", pki.tsa_key)


def test_clock_outside_the_certificate_gives_time_not_available(pki: Pki) -> None:
    tsa = pki.tsa()
    pki.clock.now = pki.tsa_certificate.not_valid_after_utc + timedelta(seconds=1)
    try:
        status = Response.load(tsa.respond(_request(), pki.tsa_key))["status"]
        assert status["fail_info"].native == {"time_not_available"}
        with pytest.raises(TsaError, match="not valid"):
            tsa.timestamp_digest(bytes(32), "sha256", pki.tsa_key)
    finally:
        pki.clock.now = NOW


def test_after_the_key_usage_period_no_token_though_the_certificate_is_valid(pki: Pki) -> None:
    """EN 319 421 §7.7.4: the key signs until its privateKeyUsagePeriod ends, a year before
    the certificate does, and not a second later."""
    tsa = pki.tsa()
    end = key_usage_period(pki.tsa_certificate)[1]
    assert end < pki.tsa_certificate.not_valid_after_utc - timedelta(days=300)
    pki.clock.now = end
    try:
        granted = Response.load(tsa.respond(_request(), pki.tsa_key))["status"]
        assert granted["status"].native == "granted"
        pki.clock.now = end + timedelta(seconds=1)
        status = Response.load(tsa.respond(_request(), pki.tsa_key))["status"]
        assert status["fail_info"].native == {"time_not_available"}
        assert status["status_string"].native == ["TSA key usage period does not cover now"]
        with pytest.raises(TsaError, match="not valid"):
            tsa.timestamp_digest(bytes(32), "sha256", pki.tsa_key)
    finally:
        pki.clock.now = NOW


def test_wrong_key_is_a_configuration_error(tsa: TimeStampAuthority, pki: Pki) -> None:
    with pytest.raises(TsaError, match="does not match"):
        tsa.respond(_request(), pki.issuing_key)
    with pytest.raises(TsaError, match="does not match"):
        tsa.timestamp_digest(bytes(32), "sha256", pki.issuing_key)


def test_timestamp_digest_refuses_bad_input(tsa: TimeStampAuthority, pki: Pki) -> None:
    with pytest.raises(TsaError, match="32 bytes"):
        tsa.timestamp_digest(bytes(31), "sha256", pki.tsa_key)
    with pytest.raises(TsaError, match="not accepted"):
        tsa.timestamp_digest(bytes(20), "sha1", pki.tsa_key)


# -- tokens for the signer, and a strict third-party client ----------------------------------


def test_timestamp_digest_token_verifies_with_openssl_alone(
    tsa: TimeStampAuthority, pki: Pki, files: dict[str, Path], tmp_path: Path
) -> None:
    digest = hashlib.sha384(DOCUMENT).digest()
    token = tmp_path / "token.der"
    token.write_bytes(tsa.timestamp_digest(digest, "sha384", pki.tsa_key))
    parsed = cms.ContentInfo.load(token.read_bytes())["content"]
    ders = [c.chosen.dump() for c in parsed["certificates"]]
    assert ders == sorted(ders) and len(ders) == 2  # TSA and issuing CA, DER-sorted
    common = ["-CAfile", files["root"], "-attime", at_gen_time()]  # no -untrusted: self-contained
    done = run(
        "openssl", "ts", "-verify", "-token_in", "-in", token, "-digest", digest.hex(), *common
    )
    assert done.returncode == 0 and "Verification: OK" in done.stdout, done.stderr
    wrong = bytes([digest[0] ^ 1]) + digest[1:]
    done = run(
        "openssl", "ts", "-verify", "-token_in", "-in", token, "-digest", wrong.hex(), *common
    )
    assert done.returncode != 0


@pytest.mark.parametrize("hash_algorithm", [HashAlgorithm.SHA256, HashAlgorithm.SHA512])
def test_rfc3161_client_verifies_responses(
    tsa: TimeStampAuthority, pki: Pki, hash_algorithm: HashAlgorithm
) -> None:
    request = (
        TimestampRequestBuilder()
        .data(DOCUMENT)
        .hash_algorithm(hash_algorithm)
        .nonce(nonce=True)
        .cert_request(cert_request=True)
        .build()
    )
    response = decode_timestamp_response(tsa.respond(request.as_bytes(), pki.tsa_key))
    assert response.tst_info.nonce == request.nonce
    verifier = (
        VerifierBuilder.from_request(request)
        .add_root_certificate(pki.chain.root)
        .add_intermediate_certificate(pki.chain.issuing)
        .build()
    )
    assert verifier.verify_message(response, DOCUMENT)
    with pytest.raises(VerificationError):
        verifier.verify_message(response, DOCUMENT + b"!")


def test_rfc3161_client_accepts_the_sorted_two_certificate_set(
    tsa: TimeStampAuthority, pki: Pki
) -> None:
    token = tsa.timestamp_digest(hashlib.sha256(DOCUMENT).digest(), "sha256", pki.tsa_key)
    granted = der.sequence(tsp.PKIStatusInfo({"status": "granted"}).dump(), token)
    response = decode_timestamp_response(granted)
    verifier = VerifierBuilder().add_root_certificate(pki.chain.root).build()
    assert verifier.verify_message(response, DOCUMENT)


def test_accuracy_and_frozen_configuration(pki: Pki) -> None:
    tsa = pki.tsa(accuracy=timedelta(seconds=2, milliseconds=500, microseconds=7))
    token = tsa.timestamp_digest(hashlib.sha256(DOCUMENT).digest(), "sha256", pki.tsa_key)
    info = cms.ContentInfo.load(token)["content"]["encap_content_info"]["content"].parsed
    assert info["accuracy"].native == {"seconds": 2, "millis": 500, "micros": 7}
    assert info["tsa"].native is not None
    with pytest.raises(AttributeError):
        tsa.policy_oid = "1.2.3"  # type: ignore[misc]
    unnamed = replace(tsa, include_tsa_name=False)
    token = unnamed.timestamp_digest(hashlib.sha256(DOCUMENT).digest(), "sha256", pki.tsa_key)
    info = cms.ContentInfo.load(token)["content"]["encap_content_info"]["content"].parsed
    assert info["tsa"].native is None
