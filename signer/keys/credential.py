"""Names of CSC credential keys: token objects labelled with their credential and expiry.

A CSC credential (issue 6) is used over several HTTP requests that may reach different
processes or replicas, while a session object lives only in the process that made it. Its key
is therefore a token object (CKA_TOKEN=true; PKCS#11 v2.40 §4.4), sensitive and never
extractable like every other key here, which every process logged in to the token can find by
its CKA_LABEL. The label carries the expiry (Unix seconds), so a sweeper can destroy an expired
credential key from the HSM alone, even one whose database row was never written::

    qes-cred:<credential id>@<expiry>
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

CREDENTIAL_PREFIX = "qes-cred:"
_LABEL = re.compile(r"^qes-cred:([A-Za-z0-9_-]{1,64})@(\d{1,12})$")


def credential_label(credential_id: str, expires_at: datetime) -> str:
    """The CKA_LABEL of credential ``credential_id``'s key pair, expiring at ``expires_at``
    (rounded up to the next whole second, so the key never outlives its label)."""
    seconds = int(expires_at.timestamp())
    if seconds < expires_at.timestamp():
        seconds += 1
    label = f"{CREDENTIAL_PREFIX}{credential_id}@{seconds}"
    if not _LABEL.match(label):
        raise ValueError(f"credential id {credential_id!r} cannot be used in a key label")
    return label


def label_expiry(label: str) -> datetime | None:
    """The expiry a credential key label carries, or None if ``label`` is not one."""
    match = _LABEL.match(label)
    if match is None:
        return None
    return datetime.fromtimestamp(int(match.group(2)), UTC)
