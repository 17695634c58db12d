"""Signature formats around the service's signature values (STANDARDS.md §2).

- :mod:`signer.formats.cms`: detached CAdES baseline B-T (ETSI EN 319 122-1) and the CMS for a
  PAdES baseline B-T signature field (ETSI EN 319 142-1), built by pyHanko around a
  cryptography private key (in the service: an HSM key) and a caller-provided time-stamper;
- :mod:`signer.formats.pdf`: preparing a PDF signature field and embedding an externally
  produced CMS, so the document itself never leaves the client;
- :mod:`signer.formats.ltv`: PAdES B-LT (validation data in the DSS) and B-LTA (document
  time-stamps, added again before the last one's TSA certificate expires).

Both raise the errors below, which belong to the signer's hierarchy (:mod:`signer.errors`).
"""

from __future__ import annotations

from signer.errors import RequestError, SignerError

__all__ = ["FormatError", "PdfError"]


class FormatError(SignerError):
    """A signature container could not be built (bad inputs from our own code, or a
    time-stamp token that does not cover the signature value)."""

    slug = "signature-format-error"
    title = "Signature container could not be built"
    status = 500


class PdfError(RequestError):
    """The PDF cannot be prepared for signing, or the CMS cannot be embedded into it."""

    slug = "unusable-pdf"
    title = "The PDF cannot be signed"
    status = 422
