"""`qes ltv extend`: keep a signed PDF verifiable for decades by adding an archive time-stamp.

EN 319 142-1 §5.4.3 and §6.3 (PAdES B-LTA) with the augmentation of EN 319 102-1 §5.6.3: before
the TSA certificate of the newest time-stamp expires, the validation data of that time-stamp
(its TSA certificate, the CA certificates, and CRLs showing them unrevoked, RFC 5280 §5) goes
into the document security store and a new document time-stamp covers the whole document.
Repeated every few years, each time-stamp proves that the data for the one before existed
while it could still be checked. A B-T or B-LT PDF becomes B-LTA on its first extension.

Only public endpoints of the service are used, as a relying party would: ``/ca/root.cer``,
``/ca/root.crl``, the certificate and CRL of the issuing CA generation that certified each
newest TSA certificate (``/ca/issuing/{key_id}.cer|.crl``, by its authority key identifier,
so a TSA of a past issuing CA is extended too), ``/ca/issuing.cer``, the OCSP responder
``/ocsp`` (RFC 6960; an answer about each newest TSA certificate from the responder of the
issuing CA generation that certified it, past ones included, with its responder certificate:
what pyHanko needs to validate that time-stamp once the certificate has expired; left out
only when the service does not answer for it, ``unauthorized`` or ``unknown``: a service from
before each generation had its own responder, whose CRL then says alone) and the RFC 3161
``/tsa``. The
document never leaves this machine (the TSA sees one digest), no token is needed, and an
archive can be extended long after its signer's account is gone. The DSS work is local, like
``qes sign --format pades``; the token is checked (nonce, imprint, TSA chain to the fetched
root, RFC 3161 §2.4.2) before it is embedded.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from signer.cli.client import ClientError
from signer.cli.common import WithConfig, load

#: Bytes accepted from one public endpoint (a CRL of a small CA is a few hundred octets).
MAX_ANSWER_OCTETS = 1 << 20
#: How far this machine's clock may lag the service's when judging a CRL's thisUpdate.
CLOCK_SKEW = timedelta(minutes=5)


def cmd_extend(args: argparse.Namespace) -> int:
    """Add the newest time-stamp's validation data and a document time-stamp (one incremental
    update each); write ``--out`` or replace FILE atomically (its bytes stay a prefix)."""
    from signer.formats import PdfError

    source = Path(args.file)
    try:
        pdf = source.read_bytes()
    except OSError as exc:
        raise ClientError(f"{source}: {exc.strerror or exc}") from exc
    url = _service_url(args)
    try:
        extended, summary = extend(pdf, url, now=datetime.now(UTC), label=str(source))
    except PdfError as exc:
        raise ClientError(f"{source}: {exc}") from exc
    target = Path(args.out) if args.out else source
    _write_atomically(target, extended)
    print(f"{target}: {summary}")
    return 0


def extend(pdf: bytes, url: str, *, now: datetime, label: str) -> tuple[bytes, str]:
    """``pdf`` with one more archive time-stamp from the service at ``url``, and a one-line
    summary. Raises :class:`ClientError` when the newest time-stamp can no longer be
    preserved, or the service cannot give what is needed."""
    from cryptography import x509

    from signer.formats.ltv import (
        ValidationData,
        add_validation_data,
        document_time_stamps,
        embed_document_time_stamp,
        good_ocsp_answer,
        newest_time_stamps,
        ocsp_request,
        prepare_document_time_stamp,
        time_stamp_certificate,
    )
    from signer.signing.timestamping import ExternalTimeStamps, TimeStampUnavailable

    tsa_certificates = _unexpired(
        [time_stamp_certificate(token) for token in newest_time_stamps(pdf)], now, label
    )
    fetch = _fetcher(url)
    try:
        root = x509.load_der_x509_certificate(fetch("/ca/root.cer"))
        current = x509.load_der_x509_certificate(fetch("/ca/issuing.cer"))
        by_key = {
            key_id: x509.load_der_x509_certificate(fetch(f"/ca/issuing/{key_id}.cer"))
            for key_id in {_issuer_key_id(cert) for cert in tsa_certificates}
        }
        issuers = {c.serial_number: by_key[_issuer_key_id(c)] for c in tsa_certificates}
    except ValueError as exc:
        raise ClientError(f"{url}/ca: not DER certificates") from exc
    crls = _checked_crls(fetch, root, issuers, tsa_certificates, now)
    answers, responders = [], []
    for cert in tsa_certificates:
        answer = fetch("/ocsp", ocsp_request(cert, issuers[cert.serial_number]))
        if not _not_answered(answer):  # an older service: its CRL alone says
            responders.append(good_ocsp_answer(answer, cert, issuers[cert.serial_number]))
            answers.append(answer)
    chain = (*dict.fromkeys(issuers.values()), root)
    data = ValidationData((*tsa_certificates, *responders, *chain), crls, tuple(answers))
    prepared = prepare_document_time_stamp(add_validation_data(pdf, data))
    tsa = ExternalTimeStamps(f"{url}/tsa", (root,), (current, *chain[:-1]), timeout=60.0)
    try:
        token = tsa.stamp(prepared.digest, prepared.hash_algorithm)
    except TimeStampUnavailable as exc:
        raise ClientError(f"{url}/tsa: {exc}") from exc
    extended = embed_document_time_stamp(prepared, token)
    newest = document_time_stamps(extended)[-1]
    gen_time = newest["encap_content_info"]["content"].parsed["gen_time"].native
    tsa_cert = time_stamp_certificate(newest)
    count = len(document_time_stamps(extended))
    ends = _iso(tsa_cert.not_valid_after_utc)
    return extended, (
        f"archive time-stamp {count} at {_iso(gen_time)} by "
        f"{tsa_cert.subject.rfc4514_string()}; extend again before {ends}"
    )


def _unexpired(certificates: list[Any], now: datetime, label: str) -> list[Any]:
    """The newest time-stamps' TSA certificates, all still valid at ``now``: once one has
    expired, nothing added now can show it was valid and unrevoked when it signed."""
    if not certificates:
        raise ClientError(f"{label}: no time-stamp to preserve (sign at B-T or later first)")
    for cert in certificates:
        if cert.not_valid_after_utc <= now:
            raise ClientError(
                f"{label}: the newest time-stamp's TSA certificate "
                f"({cert.subject.rfc4514_string()}) expired at "
                f"{_iso(cert.not_valid_after_utc)}; it can no longer be extended"
            )
    return certificates


def _checked_crls(
    fetch: Callable[..., bytes],
    root: Any,
    issuers: dict[int, Any],
    tsa_certificates: list[Any],
    now: datetime,
) -> tuple[bytes, ...]:
    """The root's CRL (covering the issuing CAs) and the CRL of each TSA certificate's issuing
    CA generation (``/ca/issuing/{key_id}.crl``), each signed by its CA and current at ``now``
    (RFC 5280 §5.1.2.4-5); each TSA certificate must be its issuer's, or its CRL says nothing
    about it."""
    from cryptography import x509
    from cryptography.exceptions import InvalidSignature

    wanted = [("/ca/root.crl", root)]
    for cert in tsa_certificates:
        issuer = issuers[cert.serial_number]
        try:
            cert.verify_directly_issued_by(issuer)
        except (ValueError, TypeError, InvalidSignature) as exc:
            raise ClientError(
                f"the TSA certificate {cert.subject.rfc4514_string()} was not issued by this "
                "service's issuing CA: its revocation data is not available here"
            ) from exc
        path = f"/ca/issuing/{_issuer_key_id(cert)}.crl"
        if (path, issuer) not in wanted:
            wanted.append((path, issuer))
    crls = []
    for path, issuer in wanted:
        der = fetch(path)
        try:
            crl = x509.load_der_x509_crl(der)
        except ValueError as exc:
            raise ClientError(f"{path}: not a DER CRL") from exc
        next_update = crl.next_update_utc
        if not crl.is_signature_valid(issuer.public_key()) or crl.issuer != issuer.subject:
            raise ClientError(f"{path}: not a CRL signed by {issuer.subject.rfc4514_string()}")
        if next_update is None or not crl.last_update_utc - CLOCK_SKEW <= now < next_update:
            raise ClientError(f"{path}: not current (thisUpdate {_iso(crl.last_update_utc)})")
        crls.append(der)
    return tuple(crls)


def _issuer_key_id(certificate: Any) -> str:
    """The authorityKeyIdentifier of a TSA certificate in hex (RFC 5280 §4.2.1.1): where the
    service publishes that issuing CA generation's certificate and CRL."""
    from signer.signing.ceremony import authority_key_identifier

    key_id = authority_key_identifier(certificate)
    if key_id is None:
        raise ClientError(
            f"the TSA certificate {certificate.subject.rfc4514_string()} names no issuer key"
        )
    return key_id.hex()


def _not_answered(answer: bytes) -> bool:
    """Whether the responder does not answer for that TSA certificate's CA: ``unauthorized``
    (RFC 6960 §2.3) or a successful ``unknown`` (§2.2). A service answers for every issuing CA
    generation; one from before that did not for a past one, and `qes ltv extend` may talk
    to it."""
    from cryptography.x509 import ocsp

    try:
        response = ocsp.load_der_ocsp_response(answer)
    except ValueError:
        return False
    if response.response_status == ocsp.OCSPResponseStatus.UNAUTHORIZED:
        return True
    return (
        response.response_status == ocsp.OCSPResponseStatus.SUCCESSFUL
        and response.certificate_status == ocsp.OCSPCertStatus.UNKNOWN
    )


def _fetcher(url: str) -> Callable[..., bytes]:
    """GET ``path`` of the service, or POST ``query`` there as ``application/ocsp-request``."""

    def fetch(path: str, query: bytes | None = None) -> bytes:
        headers = {} if query is None else {"Content-Type": "application/ocsp-request"}
        request = urllib.request.Request(  # noqa: S310
            f"{url}{path}", data=query, headers=headers, method="GET" if query is None else "POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as answer:  # noqa: S310
                body: bytes = answer.read(MAX_ANSWER_OCTETS + 1)
        except urllib.error.HTTPError as exc:
            raise ClientError(f"{url}{path}: HTTP {exc.code}") from exc
        except (urllib.error.URLError, OSError) as exc:
            raise ClientError(f"cannot reach {url}: {exc}") from exc
        if len(body) > MAX_ANSWER_OCTETS:
            raise ClientError(f"{url}{path}: answer too large")
        return body

    if not url.startswith(("http://", "https://")):
        raise ClientError(f"not an http(s) URL: {url}")
    return fetch


def _service_url(args: argparse.Namespace) -> str:
    """``--url``; else ``server.public_url`` of ``--config`` (or $QES_CONFIG); else $QES_URL."""
    if args.url:
        return str(args.url).rstrip("/")
    if args.config or os.environ.get("QES_CONFIG"):
        return str(load(args).server.public_url).rstrip("/")
    return str(args.default_url).rstrip("/")


def _write_atomically(target: Path, data: bytes) -> None:
    handle, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        os.replace(name, target)
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise


def _iso(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def register(sub: Any, with_config: WithConfig, url: str) -> None:
    """Add ``qes ltv`` to the CLI's subcommands."""
    ltv = sub.add_parser("ltv", help="long-term validation of signed PDFs (PAdES B-LTA)")
    lsub = ltv.add_subparsers(dest="ltv_command", required=True)
    ext = with_config(
        lsub.add_parser(
            "extend",
            help="add the newest time-stamp's validation data and a new archive time-stamp",
        )
    )
    ext.add_argument("file", metavar="FILE", help="a signed PDF (B-T, B-LT or B-LTA)")
    ext.add_argument("--out", metavar="FILE", help="write here instead of replacing FILE")
    ext.add_argument(
        "--url", help=f"signer base URL (default: server.public_url of --config, else {url})"
    )
    ext.set_defaults(func=cmd_extend, default_url=url)
