"""TLS on the listener: TLS 1.3 by default (RFC 8446), certificate rotation without restart,
optional client certificates (mutual TLS), and HSTS (RFC 6797).

:func:`server_context` checks the configured files the way an operator needs it at 3 a.m.: an
unreadable file, something that is not a PEM certificate chain or key, an expired certificate
or a key that does not match raises :class:`~signer.errors.ConfigError` naming the setting, so
``qes serve`` stops with one line. :func:`watch` re-reads the certificate and key when either
file changes (cert-manager and ACME clients replace them in place) and swaps them into the live
context: new handshakes get the new certificate, open connections keep theirs. A half-written
pair (the key already new, the certificate not yet) is skipped and tried again on the next
tick; the old certificate stays in service meanwhile.
"""

from __future__ import annotations

import asyncio
import os
import ssl
from datetime import UTC, datetime
from pathlib import Path

import structlog
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    PublicFormat,
    load_pem_private_key,
)

from signer.errors import ConfigError
from signer.http.kit.problems import Handler
from signer.settings.config import ServerSettings, TlsSettings

log = structlog.get_logger(__name__)
# TLS 1.2 only when configured: forward-secret AEAD suites only (RFC 9325 §4.2).
TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"
_Stamp = tuple[tuple[int, int, int], ...]


def server_context(tls: TlsSettings) -> ssl.SSLContext:
    """A server context for ``tls``, every file checked first (ConfigError names the key)."""
    not_after = check_pair(tls)
    if not_after < datetime.now(UTC):
        raise ConfigError(
            f"server.tls.certificate_file: the certificate expired at {not_after:%Y-%m-%d %H:%M}Z"
        )
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = (
        ssl.TLSVersion.TLSv1_3 if tls.min_version == "1.3" else ssl.TLSVersion.TLSv1_2
    )
    if tls.min_version == "1.2":
        ctx.set_ciphers(TLS12_CIPHERS)
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    _load_pair(ctx, tls)
    if tls.client_ca_file is not None:
        _read("client_ca_file", tls.client_ca_file)
        _certificates("client_ca_file", tls.client_ca_file)
        try:
            ctx.load_verify_locations(cafile=str(tls.client_ca_file))
        except ssl.SSLError as exc:
            raise ConfigError(f"server.tls.client_ca_file: OpenSSL refused it ({exc})") from exc
        ctx.verify_mode = ssl.CERT_REQUIRED if tls.client_auth == "required" else ssl.CERT_OPTIONAL
    return ctx


def check_pair(tls: TlsSettings) -> datetime:
    """Both files readable and parseable, the key the certificate's; returns its notAfter."""
    chain = _certificates("certificate_file", tls.certificate_file)
    key_pem = _read("key_file", tls.key_file)
    try:
        key = load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigError(
            "server.tls.key_file: not an unencrypted PEM private key (PKCS#8 or traditional)"
        ) from exc

    def spki(k: PublicKeyTypes) -> bytes:
        return k.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)

    if spki(key.public_key()) != spki(chain[0].public_key()):
        raise ConfigError(
            "server.tls.key_file: the key does not match the first certificate of "
            "server.tls.certificate_file"
        )
    return chain[0].not_valid_after_utc


def _read(key: str, path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"server.tls.{key}: cannot read {path} ({exc.strerror})") from exc


def _certificates(key: str, path: Path) -> list[x509.Certificate]:
    try:
        chain = x509.load_pem_x509_certificates(_read(key, path))
    except ValueError as exc:
        raise ConfigError(f"server.tls.{key}: {path} holds no PEM certificate") from exc
    return chain


def _load_pair(ctx: ssl.SSLContext, tls: TlsSettings) -> None:
    try:
        ctx.load_cert_chain(str(tls.certificate_file), str(tls.key_file))
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(f"server.tls.certificate_file: OpenSSL refused the pair ({exc})") from exc


def _stamp(tls: TlsSettings) -> _Stamp:
    """What changes when a file is replaced (in place, renamed over, or a symlink swapped)."""
    stamps = []
    for path in (tls.certificate_file, tls.key_file):
        try:
            st = os.stat(path)
        except OSError:
            stamps.append((0, 0, 0))
            continue
        stamps.append((st.st_ino, st.st_mtime_ns, st.st_size))
    return tuple(stamps)


async def watch(ctx: ssl.SSLContext, tls: TlsSettings) -> None:
    """Reload the certificate and key into ``ctx`` whenever their files change; until cancelled.

    A pair that does not check out (mid-rotation, or a bad file) is logged and retried on the
    next tick; the certificate in service stays until a good pair is in place."""
    seen = _stamp(tls)
    while True:
        await asyncio.sleep(tls.reload_seconds)
        now = _stamp(tls)
        if now == seen:
            continue
        try:
            not_after = await asyncio.to_thread(_reload, ctx, tls)
        except ConfigError as exc:
            log.warning("tls_reload_failed", error=str(exc))
            continue
        seen = now
        log.info("tls_certificate_reloaded", not_after=not_after.isoformat())


def _reload(ctx: ssl.SSLContext, tls: TlsSettings) -> datetime:
    not_after = check_pair(tls)
    _load_pair(ctx, tls)
    return not_after


def hsts_wanted(server: ServerSettings) -> bool:
    """HSTS when this listener speaks TLS or the public URL is https (TLS ends in front)."""
    return server.hsts_max_age > 0 and (
        server.tls is not None or server.public_url.startswith("https://")
    )


def hsts_middleware(max_age: int) -> web.middleware:  # type: ignore[valid-type]
    """``Strict-Transport-Security`` on every response (RFC 6797 §6.1): browsers that reached
    the signer's pages over https never try plain http again for ``max_age`` seconds."""
    value = f"max-age={max_age}; includeSubDomains"

    @web.middleware
    async def hsts(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            response = await handler(request)
        except web.HTTPException as exc:  # redirects raised by handlers carry it too
            exc.headers["Strict-Transport-Security"] = value
            raise
        response.headers["Strict-Transport-Security"] = value
        return response

    return hsts
