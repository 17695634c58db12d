"""`qes ca root ...`, `qes ca request ...`, `qes ca import`, `qes ca retire-root`: the key
ceremony's commands
(:mod:`signer.signing.ceremony`; README "Key ceremony").

Offline, on the root's machine (``[offline]``: the root token and its PIN, no database, no
online HSM): `qes ca root create`, `qes ca root sign CSR --role ROLE --out CERT`, `qes ca root
crl REQUEST --out CRL`. Online (the service's HSM and database, never the root token): `qes
ca request issuing|ocsp-root --out CSR`, `qes ca request crl --out REQUEST`, `qes ca import
FILE`, and `qes ca retire-root` (a replaced root's key out of the service's HSM, where a CA
made before the offline root kept it). Every command appends its step to the transcript
(``--transcript``, else the side's default) that travels with the files."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from signer.cli.common import WithConfig, admin_log, load
from signer.cli.common import pool as open_pool
from signer.errors import SignerError

Clock = Callable[[], datetime]


def _now() -> datetime:
    return datetime.now(UTC)


def _config(args: argparse.Namespace) -> Path | None:
    path = args.config or os.environ.get("QES_CONFIG")
    return Path(path) if path else None


def _read(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise SignerError(f"{path}: cannot read ({exc.strerror})") from None


def write_file(path: Path, data: bytes) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    except OSError as exc:
        raise SignerError(f"{path}: cannot write ({exc.strerror})") from None


def read_certificate(path: Path) -> Any:
    """A certificate from a PEM or DER file; None when the file does not exist."""
    from cryptography import x509

    if not path.exists():
        return None
    data = _read(str(path))
    try:
        return (
            x509.load_pem_x509_certificate(data)
            if b"-----BEGIN" in data
            else (x509.load_der_x509_certificate(data))
        )
    except ValueError:
        raise SignerError(f"{path}: not a certificate") from None


def pem(cert: Any) -> bytes:
    from cryptography.hazmat.primitives.serialization import Encoding

    return bytes(cert.public_bytes(Encoding.PEM))


def transcript_file(path: Path) -> Any:
    """The transcript at ``path``, its folder made when missing."""
    from signer.translog.ceremony import TranscriptFile

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SignerError(f"{path.parent}: cannot create ({exc.strerror})") from None
    return TranscriptFile(path)


@asynccontextmanager
async def root_side(
    offline: Any, actor: str | None, transcript: str | None, clock: Clock = _now
) -> AsyncIterator[Any]:
    """The offline side on the root token of ``offline`` (its own PIN), while in the block."""
    from signer.keys import Hsm
    from signer.signing.ceremony import RootSide

    hsm = await asyncio.to_thread(Hsm.open, offline.hsm)
    try:
        yield RootSide(
            hsm=hsm,
            ca=offline.ca,
            transcript=transcript_file(Path(transcript) if transcript else offline.transcript),
            actor=actor or getpass.getuser(),
            clock=clock,
        )
    finally:
        await asyncio.to_thread(hsm.close)


@asynccontextmanager
async def online_side(
    settings: Any, actor: str | None, transcript: Path, pool: Any, clock: Clock = _now
) -> AsyncIterator[Any]:
    """The online side on the service's HSM and ``pool``, while in the block."""
    from signer.keys import Hsm
    from signer.signing.ceremony import OnlineSide
    from signer.storage.authority import CaCertificateStore, RootCrlStore
    from signer.storage.policy import PolicyStore
    from signer.storage.revocations import RevocationStore

    hsm = await asyncio.to_thread(Hsm.open, settings.hsm)
    try:
        yield OnlineSide(
            hsm=hsm,
            certs=CaCertificateStore(pool),
            policy=PolicyStore(pool),
            revocations=RevocationStore(pool),
            crls=RootCrlStore(pool),
            settings=settings,
            audit=admin_log(settings, actor, clock),
            transcript=transcript_file(transcript),
        )
    finally:
        await asyncio.to_thread(hsm.close)


async def _root(args: argparse.Namespace) -> str:
    """`qes ca root create|sign|crl`: the offline side."""
    from signer.settings.offline import load_offline_settings

    offline = load_offline_settings(_config(args))
    assert offline is not None
    existing = read_certificate(offline.root_certificate)
    async with root_side(offline, args.actor, args.transcript) as side:
        if args.root_command == "create":
            cert, made = await side.create(existing, force=args.force)
            write_file(offline.root_certificate, pem(cert))
            verb = "created" if made else "already present"
            name = cert.subject.rfc4514_string()
            return f"root {verb}: {name}\nwritten to {offline.root_certificate}"
        if existing is None:
            raise SignerError(
                f"{offline.root_certificate}: no root certificate there: `qes ca root create`"
                " makes one, or put the root's there (PEM of the service's /ca/root.cer)"
            )
        if args.root_command == "sign":
            cert = await side.sign(existing, _read(args.request), args.role)
            write_file(Path(args.out), pem(cert))
            return f"signed {args.role}: {cert.subject.rfc4514_string()} -> {args.out}"
        from ca.requests import CrlRequest

        request = CrlRequest.parse(_read(args.request))
        days = timedelta(days=args.next_update_days)
        write_file(Path(args.out), await side.crl(existing, request, days))
        return f"root CRL {request.crl_number} ({len(request.revoked)} entries) -> {args.out}"


async def _online(settings: Any, args: argparse.Namespace) -> str:
    """`qes ca request ...` and `qes ca import FILE`: the online side."""
    from signer.settings.offline import default_transcript

    transcript = Path(args.transcript) if args.transcript else default_transcript(settings.data_dir)
    pool = await open_pool(settings)
    try:
        async with online_side(settings, args.actor, transcript, pool) as side:
            if args.ca_command == "import":
                return await _import(side, _read(args.file))
            if args.ca_command == "retire-root":
                return "\n".join(map(_retired, await side.retire_root()))
            if args.what == "crl":
                request = await side.request_crl()
                write_file(Path(args.out), request.to_json())
                return f"root CRL {request.crl_number} requested -> {args.out}"
            csr, label = await side.request(args.what)
            write_file(Path(args.out), csr)
            return f"{args.what} key {label} made; request -> {args.out}"
    finally:
        await pool.close()


async def _import(side: Any, data: bytes) -> str:
    from cryptography import x509

    for load_crl in (x509.load_der_x509_crl, x509.load_pem_x509_crl):
        try:
            load_crl(data)
        except ValueError:
            continue
        stored = await side.import_crl(data)
        return f"root CRL {stored.number} stored (next update {stored.next_update.isoformat()})"
    for load_cert in (x509.load_pem_x509_certificate, x509.load_der_x509_certificate):
        try:
            cert = load_cert(data)
        except ValueError:
            continue
        return str(await side.import_certificate(cert))
    raise SignerError("import: neither a certificate nor a CRL")


def _head(text: str) -> bytes:
    """``--head``: the SHA-256 printed on the sheet, 64 hex digits (spaces and case ignored)."""
    digits = "".join(text.split()).lower()
    if len(digits) != 64 or any(c not in "0123456789abcdef" for c in digits):
        raise SignerError("--head: the 64 hex digits of the head printed on the sheet")
    return bytes.fromhex(digits)


def _witness(args: argparse.Namespace, clock: Clock = _now) -> str:
    """`qes ca witness`: the witness's attestation, a step of the transcript."""
    from ca.ceremony import Witness
    from signer.translog.ceremony import TranscriptFile, witness_attest

    witness = Witness(args.name, args.role, getpass.getuser(), args.statement)
    signature = None if args.signature is None else _read(args.signature)
    transcript = TranscriptFile(Path(args.transcript))
    made = witness_attest(transcript, witness, _head(args.head), clock(), signature)
    fact = made.fact
    lines = [f"step {made.seq} ({made.step}): {made.actor} ({fact['role']}) attests steps"
             f" {fact['covers']} (head {fact['head_sha256']})"]  # fmt: skip
    if "signature_file" in fact:
        kept = transcript.path.with_name(fact["signature_file"])
        lines.append(f"signature by {fact['signer']} verified and kept: {kept}")
    lines.append(f"transcript head now {made.digest.hex()}")
    return "\n".join(lines)


def cmd_witness(args: argparse.Namespace) -> int:
    print(_witness(args))
    return 0


def _retired(g: Any) -> str:
    cert = g.certificate
    return (
        f"destroyed: root key {g.key_label} of {cert.subject.rfc4514_string()} (serial"
        f" {cert.serial_number:x}) in the online HSM; logged as a key-destroy ceremony step"
    )


def cmd_root(args: argparse.Namespace) -> int:
    print(asyncio.run(_root(args)))
    return 0


def cmd_online(args: argparse.Namespace) -> int:
    print(asyncio.run(_online(load(args), args)))
    return 0


def register(csub: Any, with_config: WithConfig) -> None:
    """Add `qes ca root|request|import|witness` to the `qes ca` parser."""
    root = csub.add_parser("root", help="offline: the root key ceremony (root token only)")
    rsub = root.add_subparsers(dest="root_command", required=True)
    create = with_config(rsub.add_parser("create", help="make the root key and certificate"))
    create.add_argument("--force", action="store_true", help="replace the root key (a new CA)")
    sign = with_config(rsub.add_parser("sign", help="issue a certificate for a request"))
    sign.add_argument("request", metavar="CSR", help="the request from `qes ca request`")
    sign.add_argument("--role", required=True, choices=("issuing", "ocsp-root"))
    sign.add_argument("--out", required=True, metavar="CERT", help="where to write it (PEM)")
    crl = with_config(rsub.add_parser("crl", help="sign the root's CRL"))
    crl.add_argument("request", metavar="FILE", help="from `qes ca request crl`")
    crl.add_argument("--out", required=True, metavar="CRL", help="where to write it (DER)")
    crl.add_argument("--next-update-days", type=int, default=90, metavar="N")
    request = with_config(csub.add_parser("request", help="online: a key and CSR, or CRL data"))
    request.add_argument("what", choices=("issuing", "ocsp-root", "crl"))
    request.add_argument("--out", required=True, metavar="FILE", help="where to write it")
    imported = with_config(csub.add_parser("import", help="online: take in a root-signed file"))
    imported.add_argument("file", metavar="FILE", help="root.pem, a certificate, or root.crl")
    retire = with_config(
        csub.add_parser("retire-root", help="online: destroy a replaced root's key in the HSM")
    )
    for command in (create, sign, crl, request, imported, retire):
        command.add_argument("--actor", help="who acts (default: this account)")
        command.add_argument("--transcript", metavar="FILE", help="the ceremony transcript")
    for command in (create, sign, crl):
        command.set_defaults(func=cmd_root)
    for command in (request, imported, retire):
        command.set_defaults(func=cmd_online)
    _register_witness(csub)


def _register_witness(csub: Any) -> None:
    witness = csub.add_parser(
        "witness", help="either machine: a witness attests the steps on the sheet they signed"
    )
    witness.add_argument("--transcript", required=True, metavar="FILE", help="the transcript")
    witness.add_argument("--name", required=True, help="the witness's name")
    witness.add_argument("--role", required=True, help="the witness's role (e.g. auditor)")
    witness.add_argument(
        "--head", required=True, metavar="SHA256", help="the head printed on the signed sheet"
    )
    witness.add_argument("--statement", metavar="TEXT", help="what they attest (default: "
                         "that they observed the steps the head fixes)")  # fmt: skip
    witness.add_argument(
        "--signature",
        metavar="FILE",
        help="their detached CMS signature (DER or PEM) over the transcript as on the sheet",
    )
    witness.set_defaults(func=cmd_witness)
