"""schemathesis hooks for bench/fuzz.py (loaded through ``SCHEMATHESIS_HOOKS``): raw bodies (a
PDF, an RFC 3161 time-stamp query, an RFC 6960 OCSP request) are sent as generated octets, as
the suite's fuzz test does (tests/integration/api/test_fuzz_openapi.py)."""

import schemathesis

schemathesis.serializer.alias(
    ["application/pdf", "application/timestamp-query", "application/ocsp-request"],
    "application/octet-stream",
)
