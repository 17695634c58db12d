"""Bringing a signed PDF to PAdES B-LT or B-LTA with what the service holds in-process.

ETSI EN 319 142-1 §6.3 (Table 1): B-LT adds the validation data of the signer's chain and of
the signature-time-stamp's chain to the DSS; B-LTA adds a document time-stamp over it all. The
10-minute leaf needs no revocation data (RFC 9608 noRevAvail); the issuing CA is covered by the
root's CRL and the built-in TSA's certificate by the issuing CA's CRL, both signed here
(:class:`~signer.signing.revocation.RevocationStatus`), so nothing is fetched over the network.

PDF work runs in worker threads; the document time-stamp's one TSA operation is its own HSM
hop, after the signature's hop has ended (the key is already destroyed by then).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Literal

import structlog
from cryptography import x509

from signer.formats import PdfError
from signer.formats.ltv import (
    ValidationData,
    add_validation_data,
    embed_document_time_stamp,
    good_ocsp_answer,
    ocsp_request,
    prepare_document_time_stamp,
)
from signer.keys import Hsm, HsmSession
from signer.signing.revocation import RevocationStatus
from signer.signing.timestamping import TimeStampSource

__all__ = ["PADES_LEVELS", "LongTerm", "PadesLevel"]

log = structlog.get_logger(__name__)

#: PAdES baseline levels a PDF path can return (EN 319 142-1 §6.3); ``b-t`` is the default.
PadesLevel = Literal["b-t", "b-lt", "b-lta"]
PADES_LEVELS: tuple[PadesLevel, ...] = ("b-t", "b-lt", "b-lta")


@dataclass(frozen=True)
class LongTerm:
    """Augments signed PDFs for every PDF path (upload, web signing, approvals)."""

    hsm: Hsm
    revocation: RevocationStatus
    time_stamps: TimeStampSource

    async def validation_data(self) -> ValidationData:
        """The issuing CA, root and TSA certificates, the root's CRL (covering the issuing CA)
        and the issuing CA's CRL (covering the built-in TSA), as published (RFC 5280 §5), and the
        OCSP responder's answer about the built-in TSA certificate with the responder's
        certificate (RFC 6960): validators that date revocation data by its responder
        (pyHanko's past validation, once the TSA certificate has expired) need that one."""
        chain = self.revocation.chain
        revocation = self.revocation
        crls = (await revocation.published_crl("root"), await revocation.published_crl("issuing"))
        answers, responders = await self._tsa_ocsp()
        tsa_issuer = revocation.issuing_crl[0]  # after `qes ca switch issuing`, until the TSA's
        cas = tuple(dict.fromkeys((chain.issuing, tsa_issuer, chain.root)))
        certificates = (*cas, *self.time_stamps.certificates, *responders)
        return ValidationData(certificates, crls, answers)

    async def _tsa_ocsp(self) -> tuple[tuple[bytes, ...], tuple[x509.Certificate, ...]]:
        """The responder's ``good`` answer about the built-in TSA certificate, asked in the
        name of the issuing CA generation that issued it (RFC 6960 §4.1.1), or nothing (no
        responder configured, an external TSA, or a TSA not good: the CRLs still say)."""
        tsa, issuing = self.revocation.tsa, self.revocation.issuing_crl[0]
        if tsa is None or self.revocation.responders is None:
            return (), ()
        answer = await self.revocation.published_answer(ocsp_request(tsa, issuing))
        try:
            responder = good_ocsp_answer(answer, tsa, issuing)
        except PdfError as exc:
            log.warning("tsa_ocsp_unusable", error=str(exc))
            return (), ()
        return (answer,), (responder,)

    async def augment(self, pdf: bytes, level: PadesLevel) -> bytes:
        """``pdf`` (signed, B-T) at ``level``: unchanged for ``b-t``; one incremental update
        with the DSS for ``b-lt``; that and a document time-stamp (``DocTimeStampN``,
        ``/SubFilter /ETSI.RFC3161``, EN 319 142-1 §5.4.3) for ``b-lta``."""
        if level == "b-t":
            return pdf
        data = await self.validation_data()
        pdf = await asyncio.to_thread(add_validation_data, pdf, data)
        if level == "b-lta":
            prepared = await asyncio.to_thread(prepare_document_time_stamp, pdf)

            def stamp(session: HsmSession) -> bytes:
                return self.time_stamps.bind(session)(prepared.digest, prepared.hash_algorithm)

            token = await self.hsm.run(stamp)
            pdf = await asyncio.to_thread(embed_document_time_stamp, prepared, token)
        return pdf
