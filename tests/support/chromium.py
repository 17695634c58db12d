"""Debian's Chromium under Playwright (never a downloaded browser), as the e2e tests launch it."""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

CHROMIUM = os.environ.get("QES_CHROMIUM", "/usr/bin/chromium")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu")


@asynccontextmanager
async def launched(*extra: str) -> AsyncIterator[Any]:
    """A Playwright ``Browser`` on Debian's Chromium with ``FLAGS`` and ``extra``."""
    from playwright.async_api import async_playwright

    if not shutil.which(CHROMIUM) and not Path(CHROMIUM).exists():
        raise RuntimeError(f"{CHROMIUM} is missing: run deploy/setup.sh (installs chromium)")
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=[*FLAGS, *extra])
        try:
            yield browser
        finally:
            await browser.close()


def spki_pin(cert_pem: Path) -> str:
    """The base64 SHA-256 of a certificate's SubjectPublicKeyInfo (RFC 7469, section 2.4), the
    form Chromium's ``--ignore-certificate-errors-spki-list`` takes: it trusts that one key."""
    cert = x509.load_pem_x509_certificate(cert_pem.read_bytes())
    spki = cert.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()
