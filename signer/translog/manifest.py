"""Signed export manifests of the audit UI: a C2SP signed note made with the log key.

The note text is two lines::

    <log origin>/export
    <the manifest as canonical JSON: sorted keys, no spaces, ASCII, one line>

and it is signed exactly like a checkpoint (C2SP signed-note, ECDSA P-256 type 0x02, key name =
the log origin), so the verifier key the trust bundle already publishes checks it.

Why the log key and not a separate ``export_key_label`` key: one long-lived key less to create,
publish, back up and rotate, and an auditor who trusts the log trusts its exports by the same
key. Reuse is safe because the two note types cannot be confused: a checkpoint's first line is
the origin itself and its second a decimal tree size (C2SP tlog-checkpoint), while a manifest's
first line is ``<origin>/export`` and its second a JSON object. A checkpoint verifier rejects a
manifest on the origin line (C2SP tlog-checkpoint requires checking it; ``open_checkpoint``
does), and :func:`open_manifest` rejects a checkpoint on the same line. The signature covers
every manifest field, including the named checkpoint note, so nothing in the manifest can be
altered without breaking it.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from ca.checkpoint import NoteError, NoteVerifier, open_note

#: Suffix of the origin that makes the first line of a manifest note.
EXPORT_SUFFIX = "/export"
SIGNED_NOTE = "signed_note"


class ManifestError(Exception):
    """A manifest is malformed, unsigned, signed by another key, or not this log's."""


def canonical(body: Mapping[str, Any]) -> str:
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def note_text(origin: str, body: Mapping[str, Any]) -> str:
    """The note text of ``body`` (which must not hold the signed note itself)."""
    if SIGNED_NOTE in body:
        raise ManifestError("the manifest body must not contain its own signature")
    return f"{origin}{EXPORT_SUFFIX}\n{canonical(body)}\n"


async def sign_manifest(
    body: Mapping[str, Any], origin: str, sign: Callable[[str], Awaitable[str]]
) -> dict[str, Any]:
    """``body`` plus ``signed_note``: the note text signed by ``sign`` (the HSM log key)."""
    return {**body, SIGNED_NOTE: await sign(note_text(origin, body))}


def open_manifest(
    manifest: Mapping[str, Any], verifier: NoteVerifier, origin: str
) -> dict[str, Any]:
    """Verify ``manifest["signed_note"]`` with the log key and return the signed body.

    The signed body must equal the manifest's other fields, so an edited field fails here.
    """
    note = manifest.get(SIGNED_NOTE)
    if not isinstance(note, str):
        raise ManifestError("manifest: no signed_note (made before manifests were signed?)")
    try:
        text = open_note(note, (verifier,)).text
    except NoteError as exc:
        raise ManifestError(f"manifest signature: {exc}") from exc
    first, _, rest = text.partition("\n")
    if first != origin + EXPORT_SUFFIX:
        raise ManifestError(f"manifest: note is {first!r}, not an export of {origin!r}")
    try:
        signed = json.loads(rest)
    except ValueError as exc:
        raise ManifestError("manifest: signed text is not JSON") from exc
    if not isinstance(signed, dict) or rest != canonical(signed) + "\n":
        raise ManifestError("manifest: signed text is not one canonical JSON object")
    unsigned = {k: v for k, v in manifest.items() if k != SIGNED_NOTE}
    if unsigned != signed:
        changed = sorted(k for k in {*unsigned, *signed} if unsigned.get(k) != signed.get(k))
        raise ManifestError(f"manifest: field {changed[0]} differs from the signed manifest")
    return signed
