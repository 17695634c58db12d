"""`qes sign` and `qes verify`: sign files over the API (documents never leave this machine)
and validate signatures offline."""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from signer.cli.client import ApiClient, ClientError
from signer.cli.common import (
    WithConfig,
    fail,
    print_above_bar,
    progress_bar,
    progress_items,
    read_token,
    utc_time,
)

HASHES = ("sha256", "sha384", "sha512")


def _digest(path: Path, algorithm: str) -> bytes:
    h = hashlib.new(algorithm)
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.digest()


def _is_pdf(path: Path) -> bool:
    with path.open("rb") as f:
        return f.read(1024).lstrip().startswith(b"%PDF-")


def _free_field(pdf: bytes) -> str:
    """``SignatureN`` with the smallest N not yet a field of ``pdf``."""
    from pyhanko.pdf_utils.reader import PdfFileReader
    from pyhanko.sign.fields import enumerate_sig_fields

    try:
        taken = {name for name, _, _ in enumerate_sig_fields(PdfFileReader(io.BytesIO(pdf)))}
    except Exception:  # unreadable: prepare() names the problem
        taken = set()
    return next(f"Signature{n}" for n in range(1, len(taken) + 2) if f"Signature{n}" not in taken)


@dataclass(frozen=True)
class _Job:
    """One file to sign: its digest, and for PAdES the prepared document to embed into."""

    path: Path
    digest: bytes
    prepared: Any = None


def _prepare(path: Path, args: argparse.Namespace) -> _Job:
    from signer.formats import PdfError
    from signer.formats.pdf import prepare

    if args.format != "pades":
        return _Job(path, _digest(path, args.hash))
    pdf = path.read_bytes()
    try:
        prepared = prepare(pdf, _free_field(pdf), datetime.now(UTC), hash_algorithm=args.hash)
    except PdfError as exc:
        raise ClientError(f"{path}: {exc}") from exc
    return _Job(path, prepared.digest, prepared)


def _write(job: _Job, signature: bytes, fmt: str, chain: str) -> Path:
    from signer.formats.pdf import embed

    path = job.path
    if fmt == "pades":
        out = path.with_name(f"{path.stem}.signed{path.suffix}")
        out.write_bytes(embed(job.prepared, signature))
        return out
    out = path.with_name(path.name + (".p7s" if fmt.startswith("cades") else ".sig"))
    out.write_bytes(signature)
    if fmt == "raw":
        path.with_name(path.name + ".chain.pem").write_text(chain)
    return out


def cmd_sign(args: argparse.Namespace) -> int:
    files = [Path(f) for f in args.files]
    for f in files:
        if not f.is_file():
            return fail(f"{f}: not a readable file")
        if args.format == "pades" and not _is_pdf(f):
            return fail(f"{f}: not a PDF; use --format cades for other files")
    client = _client(args)
    show = len(files) > 1 and not args.quiet
    jobs = [_prepare(f, args) for f in progress_items(files, show, "preparing")]
    written: list[Path] = []
    bar = progress_bar(len(jobs), show, "signing")
    for start in range(0, len(jobs), args.batch_size):
        chunk = jobs[start : start + args.batch_size]
        body: dict[str, Any] = {
            "hash_algorithm": args.hash,
            "hashes": [base64.b64encode(j.digest).decode() for j in chunk],
            "format": args.format,
        }
        if args.profile:
            body["profile"] = args.profile
        # One Idempotency-Key per chunk: each chunk is one signing operation (a token's jti
        # starts one, a key each), and a retry of a chunk replays its answer.
        idem = {"Idempotency-Key": str(uuid.uuid4())}
        result = client.call("POST", "/api/v1/signatures", body, headers=idem)
        if "status_url" in result:  # held for m-of-n approval (signer.http.approvals)
            from signer.cli import approvals as cli_approvals

            result = cli_approvals.wait(client, result, args.wait_approval)
            if result["status"] != "completed":
                reason = result.get("error") or result["status"]
                if result["status"] == "pending":
                    raise ClientError(cli_approvals.held_message(result))
                raise ClientError(f"approval request {result['id']} ended: {reason}")
        for job, sig in zip(chunk, result["signatures"], strict=True):
            written.append(_write(job, base64.b64decode(sig), args.format, result["chain"]))
            if bar is not None:
                bar.update(1)
        if not args.quiet:
            print_above_bar(
                bar,
                f"signed {len(result['signatures'])} file(s) with certificate "
                f"{result['serial']} ({result['profile']}), valid until {result['not_after']}",
            )
    if bar is not None:
        bar.close()
    if not args.quiet and files:
        print(_verify_hint(files[0], written[0], args))
    return 0 if len(written) == len(files) else 1


def _client(args: argparse.Namespace) -> ApiClient:
    """Bearer by default; with ``--dpop-key`` or ``--dpop`` every request carries a DPoP proof
    (RFC 9449) and, with ``--token-url``, the token is fetched bound to that key."""
    key = None
    if args.dpop_key or args.dpop or args.token_url:
        from signer.cli.dpop import DpopKey  # joserfc only when DPoP is asked for

        key = DpopKey.load(args.dpop_key) if args.dpop_key else DpopKey.generate()
    if args.token_url:
        from signer.cli.dpop import fetch_token

        if not args.client_id or not args.client_secret_file:
            raise ClientError("--token-url needs --client-id and --client-secret-file")
        assert key is not None
        secret = read_token(args.client_secret_file)
        token = fetch_token(args.token_url, args.client_id, secret, key, args.resource)
    elif args.token_file:
        token = read_token(args.token_file)
    else:
        raise ClientError("give --token-file, or --token-url to fetch a DPoP-bound token")
    return ApiClient(args.url, token, dpop=key)


def _verify_hint(document: Path, written: Path, args: argparse.Namespace) -> str:
    if args.format == "raw":
        return (
            f"verify: openssl x509 -in {document}.chain.pem -pubkey -noout > {document}.pub && "
            f"openssl dgst -{args.hash} -verify {document}.pub -signature {written} {document}"
        )
    bundle = (
        f"curl -s -H 'Accept: application/pem-certificate-chain' {args.url}/api/v1/trust-bundle"
    )
    target = f"{written}" if args.format == "pades" else f"{document} {written}"
    return f"verify: {bundle} > trust.pem && qes verify {target} --trust trust.pem"


def cmd_verify(args: argparse.Namespace) -> int:
    """Offline validation (signer.formats.verify): exit 0 valid, 1 invalid (failing checks named),
    2 when the inputs cannot be read as a document, a signature and a trust bundle."""
    import dataclasses
    import json

    from signer.formats import verify

    for name in ("pyhanko", "pyhanko_certvalidator"):  # every finding is in the report
        logging.getLogger(name).setLevel(logging.CRITICAL)
    reports: tuple[verify.SignatureReport, ...]
    try:
        trust = verify.load_trust_bundle(Path(args.trust).read_bytes())
        crls = tuple(
            c for name in args.crl or () for c in verify.load_crls(Path(name).read_bytes())
        )
        trust = dataclasses.replace(trust, crls=crls)
        now = utc_time(args.at)
        document = Path(args.file).read_bytes()
        if args.signature is not None:
            label = f"{Path(args.file).name} / {Path(args.signature).name}"
            signature = Path(args.signature).read_bytes()
            reports = (verify.verify_cades(document, signature, trust, now=now, label=label),)
        elif document.startswith(b"%PDF-"):
            reports = verify.verify_pades(document, trust, now=now, label=Path(args.file).name)
        else:
            return fail(f"{args.file}: not a PDF; give the detached SIGNATURE file too", 2)
    except OSError as exc:
        return fail(f"{exc.filename}: {exc.strerror or exc}", 2)
    except verify.VerifyError as exc:
        return fail(str(exc), 2)
    except ValueError:
        return fail(f"--at {args.at}: not an ISO 8601 time", 2)
    if args.json:
        print(json.dumps([r.as_json() for r in reports], indent=2))
    else:
        print("\n".join(verify.render_text(r) for r in reports))
    return 0 if all(r.valid for r in reports) else 1


def register(sub: Any, with_config: WithConfig, url: str) -> None:
    """Add this group's commands to the `qes` parser."""
    sign = sub.add_parser("sign", help="sign files; documents never leave this machine")
    sign.add_argument("files", nargs="+", metavar="FILE")
    sign.add_argument("--token-file", help="file holding the access token")
    sign.add_argument(
        "--dpop-key", metavar="FILE", help="PEM EC private key: send DPoP proofs (RFC 9449)"
    )
    sign.add_argument("--dpop", action="store_true", help="DPoP proofs with a key made per run")
    sign.add_argument(
        "--token-url", metavar="URL", help="IdP token endpoint: fetch a DPoP-bound token"
    )
    sign.add_argument("--client-id", help="client id for --token-url")
    sign.add_argument("--client-secret-file", metavar="FILE", help="client secret for --token-url")
    sign.add_argument("--resource", metavar="URI", help="resource indicator (RFC 8707)")
    sign.add_argument(
        "--wait-approval",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="when the policy holds the request for approval, wait this long for it",
    )
    sign.add_argument("--url", default=url, help=f"signer base URL (default {url})")
    sign.add_argument("--hash", choices=HASHES, default="sha256")
    sign.add_argument("--profile", choices=("qes", "qualified", "advanced"))
    sign.add_argument(
        "--format",
        choices=("raw", "cades", "cades-b-lt", "pades"),
        default="raw",
        help="raw: NAME.sig + NAME.chain.pem; cades: NAME.p7s (CAdES B-T); cades-b-lt: "
        "NAME.p7s (CAdES B-LT, with the CA and TSA validation data); "
        "pades: PDFs only, NAME.signed.pdf (PAdES B-T; only the digest is sent)",
    )
    sign.add_argument("--batch-size", type=int, default=1000)
    sign.add_argument("--quiet", "-q", action="store_true")
    sign.set_defaults(func=cmd_sign)

    ver = sub.add_parser("verify", help="validate a CAdES or PAdES signature offline")
    ver.add_argument("file", metavar="FILE", help="the PDF, or the document signed by SIGNATURE")
    ver.add_argument("signature", metavar="SIGNATURE", nargs="?", help="detached CAdES (.p7s)")
    ver.add_argument("--trust", required=True, metavar="BUNDLE", help="PEM trust bundle")
    ver.add_argument("--at", metavar="TIME", help="validation time, ISO 8601 UTC (default now)")
    ver.add_argument(
        "--crl",
        action="append",
        metavar="FILE",
        help="a CRL (DER or PEM) to check TSA certificates against, besides those in the PDF's"
        " DSS or the CMS; repeatable",
    )
    ver.add_argument("--json", action="store_true", help="machine-readable output")
    ver.set_defaults(func=cmd_verify)
