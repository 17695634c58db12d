"""``POST /tsa``: the built-in time-stamp authority over HTTP (RFC 3161 §3.4).

A public service of the organisation, like its CRLs: no authentication. The query is a DER
``TimeStampReq`` sent as ``application/timestamp-query``; the answer,
``application/timestamp-reply``, is a DER ``TimeStampResp`` made by
:class:`ca.tsa.TimeStampAuthority` with the TSA key in the HSM, in one worker-thread hop.

A query that is not a valid TimeStampReq gets 200 with a rejection ``PKIStatusInfo``
(RFC 3161 §2.4.2), which ``openssl ts`` and other clients read. HTTP errors (problem+json) are
only for requests that are no RFC 3161 query at all: another media type (415) or a body over
:data:`MAX_QUERY_OCTETS` (413). With an external TSA configured this service is no TSA, and
``/tsa`` is 404.
"""

from __future__ import annotations

import structlog
from aiohttp import web

from signer.http.kit.body import read_typed
from signer.http.kit.problems import NotFound, UnsupportedMediaType
from signer.http.kit.state import SERVICES, Services
from signer.signing.timestamping import BuiltinTimeStamps, reply_status

log = structlog.get_logger(__name__)
QUERY_TYPE = "application/timestamp-query"
REPLY_TYPE = "application/timestamp-reply"
#: A TimeStampReq with a SHA-512 imprint, a policy and a long nonce is under 200 octets.
MAX_QUERY_OCTETS = 4096


class TimeStampQueryExpected(UnsupportedMediaType):
    """The body of ``POST /tsa`` must be a DER TimeStampReq (RFC 3161 §3.4)."""

    slug = "timestamp-query-expected"
    title = "Content-Type must be application/timestamp-query"


class NoBuiltinTsa(NotFound):
    """This service uses an external time-stamp authority and does not serve one."""

    slug = "tsa-not-served"
    title = "This service does not operate a time-stamp authority"


async def time_stamp(request: web.Request) -> web.Response:
    services: Services = request.app[SERVICES]
    source = services.time_stamps
    if not isinstance(source, BuiltinTimeStamps):
        raise NoBuiltinTsa()
    if services.signing.gate is not None:  # "suspend all" stops the TSA key too
        services.signing.gate.suspensions.current.check_client(None)
    query = await read_typed(request, QUERY_TYPE, MAX_QUERY_OCTETS, TimeStampQueryExpected)
    reply = await services.hsm.run(lambda session: source.respond(session, query))
    log.info("time_stamp_reply", status=reply_status(reply), query_octets=len(query))
    return web.Response(body=reply, content_type=REPLY_TYPE)
