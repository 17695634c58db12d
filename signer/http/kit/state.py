"""The wired services a request handler may use (built in :mod:`signer.app`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from aiohttp import web

from ca.logentry import PrivacyKey
from idp_adapter.principal import Principal
from idp_adapter.registry import IssuerRegistry
from signer.flows.websign import WebSigning
from signer.keys import Hsm
from signer.settings.config import Settings
from signer.signing.pipeline import SigningService
from signer.signing.revocation import RevocationStatus
from signer.signing.rollover import Authorities
from signer.signing.timestamping import TimeStampSource
from signer.storage.log import LogStore
from signer.storage.records import RecordStore
from signer.translog.log import LogPublisher


@dataclass(frozen=True)
class Services:
    settings: Settings
    hsm: Hsm
    records: RecordStore
    signing: SigningService
    tokens: IssuerRegistry
    clock: Callable[[], datetime]
    time_stamps: TimeStampSource
    log: LogStore
    publisher: LogPublisher
    privacy_key: PrivacyKey
    revocation: RevocationStatus
    #: Every generation of the root, issuing CA and TSA, as loaded at start.
    authorities: Authorities


SERVICES = web.AppKey("services", Services)
REQUEST_ID = web.RequestKey("request_id", str)
PRINCIPAL = web.RequestKey("principal", Principal)
#: Where the app keeps its :class:`WebSigning` (read by the RP API and the pages).
WEB_SIGNING = web.AppKey("web_signing", WebSigning)
#: CA name -> (revocation state version, monotonic time, DER CRL): re-signed hourly, and at
#: once after a revocation anywhere (the version grows in PostgreSQL, seen by every replica).
#: What the trust bundle was built from (certificate fingerprints, log origin and key label)
#: -> its JSON body: built once per change, not per request (issue 17, item 8).
TRUST_BUNDLE_CACHE = web.AppKey("trust_bundle_cache", dict)
