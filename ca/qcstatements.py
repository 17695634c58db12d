"""DER encoding of the qcStatements extension (RFC 3739 §3.2.6, ETSI EN 319 412-5 §4).

cryptography has no type for this extension, so the value is built with asn1crypto and
added as an :class:`~cryptography.x509.UnrecognizedExtension`.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from asn1crypto import core, x509

from ca import oids

__all__ = ["QcStatementsSpec", "encode_qc_statements"]


class _PdsLocation(core.Sequence):  # type: ignore[misc]
    """EN 319 412-5 §4.3.4: PdsLocation ::= SEQUENCE { url IA5String, language PrintableString }."""

    _fields = [("url", core.IA5String), ("language", core.PrintableString)]


class _PdsLocations(core.SequenceOf):  # type: ignore[misc]
    _child_spec = _PdsLocation


class _QcType(core.SequenceOf):  # type: ignore[misc]
    """EN 319 412-5 §4.2.3: QcType ::= SEQUENCE OF OBJECT IDENTIFIER."""

    _child_spec = core.ObjectIdentifier


class _SemanticsInformation(core.Sequence):  # type: ignore[misc]
    """RFC 3739 §3.2.6.1: SemanticsInformation (at least one field present)."""

    _fields = [
        ("semantics_identifier", core.ObjectIdentifier, {"optional": True}),
        ("name_registration_authorities", x509.GeneralNames, {"optional": True}),
    ]


class _QcStatement(core.Sequence):  # type: ignore[misc]
    """RFC 3739 §3.2.6: QCStatement ::= SEQUENCE { statementId, statementInfo OPTIONAL }."""

    _fields = [
        ("statement_id", core.ObjectIdentifier),
        ("statement_info", core.Any, {"optional": True}),
    ]
    _oid_pair = ("statement_id", "statement_info")
    _oid_specs = {
        oids.QCS_PDS: _PdsLocations,
        oids.QCS_TYPE: _QcType,
        oids.QCS_PKIX_SYNTAX_V2: _SemanticsInformation,
    }


class _QcStatements(core.SequenceOf):  # type: ignore[misc]
    _child_spec = _QcStatement


@dataclass(frozen=True)
class QcStatementsSpec:
    """Which statements to emit; ``None`` leaves a statement out.

    ``semantics_identifier`` is the dotted OID for pkixQCSyntax-v2 (EN 319 412-1 §5.1),
    ``qc_type`` the dotted QcType OID (EN 319 412-5 §4.2.3), ``pds`` a sequence of
    ``(https URL, ISO 639-1 language)`` pairs (EN 319 412-5 §4.3.4).
    """

    semantics_identifier: str | None = None
    compliance: bool = False
    sscd: bool = False
    qc_type: str | None = None
    pds: tuple[tuple[str, str], ...] = ()


@functools.lru_cache(maxsize=64)
def encode_qc_statements(spec: QcStatementsSpec) -> bytes | None:
    """Return the DER value of the qcStatements extension, or ``None`` if it would be empty.

    QcCompliance and QcSSCD carry no statementInfo (EN 319 412-5 §4.2.1, §4.2.2). A service
    has only a handful of distinct specs (kind x level x identifier present), and asn1crypto
    takes about 0.4 ms per encoding, most of a software issuance: results are memoised.
    """
    statements: list[dict[str, object]] = []
    if spec.semantics_identifier is not None:
        statements.append(
            {
                "statement_id": oids.QCS_PKIX_SYNTAX_V2,
                "statement_info": {"semantics_identifier": spec.semantics_identifier},
            }
        )
    if spec.compliance:
        statements.append({"statement_id": oids.QCS_COMPLIANCE})
    if spec.sscd:
        statements.append({"statement_id": oids.QCS_SSCD})
    if spec.qc_type is not None:
        statements.append({"statement_id": oids.QCS_TYPE, "statement_info": [spec.qc_type]})
    if spec.pds:
        locations = [{"url": url, "language": language} for url, language in spec.pds]
        statements.append({"statement_id": oids.QCS_PDS, "statement_info": locations})
    if not statements:
        return None
    der: bytes = _QcStatements(statements).dump(force=True)
    return der
