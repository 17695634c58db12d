"""OpenID Connect relying party: verifies bearer tokens from configured issuers.

Imports nothing from this project (see DESIGN.md); depends on aiohttp and joserfc only.
"""

from .errors import ConfigError, IdentityNotAllowed, IdpError, IdpUnavailable, InvalidToken
from .principal import Principal
from .registry import IssuerRegistry
from .replay import ReplayGuard
from .settings import IssuerSettings

__all__ = [
    "ConfigError",
    "IdentityNotAllowed",
    "IdpError",
    "IdpUnavailable",
    "InvalidToken",
    "IssuerRegistry",
    "IssuerSettings",
    "Principal",
    "ReplayGuard",
]
