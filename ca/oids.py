"""Object identifiers used by the certificate profiles.

Values from ETSI EN 319 411-1 §5.3 (NCP+), EN 319 411-2 §5.3 (QCP-*), EN 319 412-1 §5
(semantics identifiers), EN 319 412-5 §4 (QC statements), RFC 3739 §3.2.6 (pkixQCSyntax-v2)
and RFC 9608 §3 (noRevAvail).
"""

from __future__ import annotations

from cryptography.x509 import ObjectIdentifier

# Certificate policies, EN 319 411-1 §5.3 and EN 319 411-2 §5.3.
NCP_PLUS = ObjectIdentifier("0.4.0.2042.1.2")
QCP_N = ObjectIdentifier("0.4.0.194112.1.0")
QCP_L = ObjectIdentifier("0.4.0.194112.1.1")
QCP_N_QSCD = ObjectIdentifier("0.4.0.194112.1.2")
QCP_L_QSCD = ObjectIdentifier("0.4.0.194112.1.3")

# Extensions.
QC_STATEMENTS = ObjectIdentifier("1.3.6.1.5.5.7.1.3")  # RFC 3739 §3.2.6
VALIDITY_ASSURED_SHORT_TERM = ObjectIdentifier("0.4.0.194121.2.1")  # EN 319 412-1 §5.2
NO_REV_AVAIL = ObjectIdentifier("2.5.29.56")  # RFC 9608 §2

# QC statements, EN 319 412-5 §4.2 and RFC 3739 §3.2.6.1 (as dotted strings for asn1crypto).
QCS_COMPLIANCE = "0.4.0.1862.1.1"
QCS_PDS = "0.4.0.1862.1.5"
QCS_SSCD = "0.4.0.1862.1.4"
QCS_TYPE = "0.4.0.1862.1.6"
QCT_ESIGN = "0.4.0.1862.1.6.1"
QCT_ESEAL = "0.4.0.1862.1.6.2"
QCS_PKIX_SYNTAX_V2 = "1.3.6.1.5.5.7.11.2"
SEMANTICS_NATURAL = "0.4.0.194121.1.1"
SEMANTICS_LEGAL = "0.4.0.194121.1.2"
