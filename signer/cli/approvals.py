"""``qes approvals list|show|approve|deny``: m-of-n approval of batch signatures (issue 7).

Authenticates with a bearer token file, as ``qes sign`` does. ``approve`` and ``deny`` first
fetch the request and print what is decided on (who asks, why, every digest with its label),
then send the digest commitment computed *here* from the digests printed, ``SHA-256(lp(d1) ||
... || lp(dn))`` with ``lp(x) = u32(len(x)) || x``, so the decision binds exactly what the
approver saw; ``--commitment HEX`` sends a value checked out of band instead (the service
refuses any other digests with 409).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import struct
import time
from typing import Any

from signer.cli.client import ApiClient, ClientError

PATH = "/api/v1/approval-requests"


def commitment(digests: list[bytes]) -> str:
    return hashlib.sha256(b"".join(struct.pack(">I", len(d)) + d for d in digests)).hexdigest()


def _read_token(path: str) -> str:
    from signer.cli.common import read_token as read

    return read(path)


def _line(req: dict[str, Any]) -> list[str]:
    approval = req["approval"]
    return [
        req["id"],
        req["requester"]["name"],
        (req["reason"] or "-")[:40],
        str(len(req["documents"])),
        f"{approval['approvals']}/{approval['required']} {approval['group']}",
        req["expires_at"][:19].replace("T", " "),
    ]


def cmd_list(args: argparse.Namespace) -> int:
    from signer.cli.common import table as _table

    client = ApiClient(args.url, _read_token(args.token_file))
    pending = client.get(PATH)["requests"]
    if not pending:
        print("nothing is waiting for your approval")
        return 0
    header = ["id", "requested by", "reason", "digests", "approvals", "expires (UTC)"]
    print(_table([_line(r) for r in pending], header))
    return 0


def describe(req: dict[str, Any]) -> str:
    approval = req["approval"]
    who = req["requester"]
    lines = [
        f"request      {req['id']} ({req['status']})",
        f"requested by {who['name']} ({who['subject']} at {who['issuer']})",
        f"reason       {req['reason'] or '-'}",
        f"expires      {req['expires_at']}",
        f"approvals    {approval['approvals']} of {approval['required']} ({approval['group']});"
        " one denial ends the request",
        f"format       {req['format']}, profile {req['profile'] or 'default'}",
        f"digests      {len(req['documents'])} x {req['hash_algorithm']}:",
    ]
    for n, doc in enumerate(req["documents"], start=1):
        lines.append(f"  {n:>3}. {base64.b64decode(doc['digest']).hex()}  {doc['label']}")
    for d in approval["decisions"]:
        lines.append(f"decision     {d['decision']} by {d['by']} at {d['at']}")
    lines.append(f"commitment   {_local_commitment(req)}")
    return "\n".join(lines)


def _local_commitment(req: dict[str, Any]) -> str:
    return commitment([base64.b64decode(doc["digest"]) for doc in req["documents"]])


def cmd_show(args: argparse.Namespace) -> int:
    client = ApiClient(args.url, _read_token(args.token_file))
    print(describe(client.get(f"{PATH}/{args.id}")))
    return 0


def cmd_decide(args: argparse.Namespace) -> int:
    client = ApiClient(args.url, _read_token(args.token_file))
    req = client.get(f"{PATH}/{args.id}")
    print(describe(req))
    value = args.commitment or _local_commitment(req)
    verb = "approve" if args.action == "approve" else "deny"
    after = client.call("POST", f"{PATH}/{args.id}/{verb}", {"digest_commitment": value})
    approval = after["approval"]
    print(
        f"{verb}d: request {after['id']} is {after['status']}"
        f" ({approval['approvals']} of {approval['required']} approvals)"
    )
    return 0


def wait(client: ApiClient, held: dict[str, Any], seconds: float) -> dict[str, Any]:
    """Poll a held request's status URL until it ends or ``seconds`` pass; the final body
    (a completed one carries the signing response's fields)."""
    url = held["status_url"]
    path = url[url.index(PATH) :]
    deadline = time.monotonic() + seconds
    body = held
    while body["status"] in ("pending", "signing") and time.monotonic() < deadline:
        time.sleep(min(2.0, max(0.0, deadline - time.monotonic())))
        body = client.get(path)
    return body


def held_message(held: dict[str, Any]) -> str:
    approval = held["approval"]
    return (
        f"held for approval ({approval['required']} of {approval['group']}): request"
        f" {held['id']}, status {held['status_url']}; re-run with --wait-approval SECONDS"
        " to collect the signature"
    )


def register(sub: Any, url: str) -> None:
    """Add ``qes approvals`` to the CLI's subcommands."""
    ap = sub.add_parser("approvals", help="m-of-n approval of batch signatures")
    asub = ap.add_subparsers(dest="approvals_command", required=True)
    listing = asub.add_parser("list", help="requests waiting for your approval")
    show = asub.add_parser("show", help="one request: who asks, why, which digests")
    approve = asub.add_parser("approve", help="approve the exact digests of a request")
    deny = asub.add_parser("deny", help="deny a request (one denial ends it)")
    for sp in (listing, show, approve, deny):
        sp.add_argument("--token-file", required=True, help="file holding your bearer token")
        sp.add_argument("--url", default=url, help=f"signer base URL (default {url})")
    for sp in (show, approve, deny):
        sp.add_argument("id", help="the request id")
    for sp, action in ((approve, "approve"), (deny, "deny")):
        sp.add_argument(
            "--commitment", help="digest commitment (hex) to send instead of the one computed"
        )
        sp.set_defaults(func=cmd_decide, action=action)
    listing.set_defaults(func=cmd_list)
    show.set_defaults(func=cmd_show)


__all__ = ["ClientError", "held_message", "register", "wait"]
