"""The audit search form: query string <-> :class:`RecordFilter`, with messages for people."""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlencode

from signer.http.kit.query import instant
from signer.storage.records import RecordFilter

FIELDS = ("subject", "email", "dn", "client_id", "serial", "digest", "since", "until", "status")
STATUSES = ("issued", "completed", "failed", "refused")
#: Refused requests have no record: they are searched in the log, by identity and time only
#: (their other details are in the entry as keyed hashes, see ca.logentry).
REFUSAL_FIELDS = frozenset({"subject", "since", "until", "status"})
DIGEST_SIZES = (32, 48, 64)
_HEX = re.compile(r"^[0-9a-fA-F]+$")
_SERIAL = re.compile(r"^[0-9a-fA-F]{1,64}$")


class FormError(ValueError):
    """Input a person must correct; the message names the field."""


@dataclass(frozen=True)
class Search:
    """The form's values as given (trimmed, empties dropped) and the filter they mean."""

    values: Mapping[str, str]
    filter: RecordFilter

    def query(self, **extra: str) -> str:
        """The query string of this search (for pagination and export links)."""
        return urlencode({**self.values, **extra})


def parse_digest(text: str) -> bytes:
    """A SHA-2 digest as hex or base64 (standard or URL-safe alphabet)."""
    raw: bytes | None = None
    if _HEX.match(text) and len(text) // 2 in DIGEST_SIZES and len(text) % 2 == 0:
        raw = bytes.fromhex(text)
    else:
        try:
            cleaned = text.replace("-", "+").replace("_", "/")
            raw = base64.b64decode(cleaned + "=" * (-len(cleaned) % 4), validate=True)
        except (binascii.Error, ValueError):
            raw = None
    if raw is None or len(raw) not in DIGEST_SIZES:
        raise FormError("Digest: give a SHA-256/384/512 digest as hex or base64.")
    return raw


def parse_time(name: str, text: str) -> datetime:
    """``YYYY-MM-DDTHH:MM[:SS]`` as UTC (what ``<input type=datetime-local>`` sends), or an
    ISO 8601 time with an offset."""
    parsed = instant(text, naive_is_utc=True)
    if parsed is None:
        raise FormError(f"{name}: use a date and time such as 2026-01-31T14:30 (UTC).")
    return parsed


def parse_search(query: Mapping[str, str]) -> Search:
    values = {k: query[k].strip() for k in FIELDS if query.get(k, "").strip()}
    status = values.get("status")
    if status is not None and status not in STATUSES:
        raise FormError("Outcome: choose issued, completed, failed or refused.")
    if status == "refused" and set(values) - REFUSAL_FIELDS:
        raise FormError(
            "Outcome refused: search refused requests by identity and time only (their"
            " other details are kept as keyed hashes)."
        )
    serial = values.get("serial")
    if serial is not None and not _SERIAL.match(serial):
        raise FormError("Serial: give the certificate serial number in hex.")
    since = parse_time("From", values["since"]) if "since" in values else None
    until = parse_time("Until", values["until"]) if "until" in values else None
    if since is not None and until is not None and since >= until:
        raise FormError("Until must be later than From.")
    flt = RecordFilter(
        subject=values.get("subject"),
        client_id=values.get("client_id"),
        serial=serial.lower() if serial else None,
        status=status,
        digest=parse_digest(values["digest"]) if "digest" in values else None,
        subject_dn_contains=values.get("dn"),
        email=values.get("email"),
        since=since,
        until=until,
    )
    return Search(values, flt)
