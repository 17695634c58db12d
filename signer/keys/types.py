"""Value types of the HSM layer: settings, key evidence, destruction receipts."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal

from signer.errors import ConfigError
from signer.secrets import Secret

Curve = Literal["P-256", "P-384"]
CURVES: tuple[Curve, ...] = ("P-256", "P-384")


class TokenKeyExists(ConfigError):
    """``create_token_key`` found the label already in use and ``replace`` was not given."""

    slug = "hsm-key-exists"
    title = "A key with this label already exists in the HSM"


@dataclass(frozen=True)
class HsmSettings:
    """Where the HSM is and how to use it. ``pin`` is never shown by ``repr``."""

    module: str
    token_label: str
    pin: Secret = field(repr=False)
    sessions: int = 4
    curve: Curve = "P-256"

    def __post_init__(self) -> None:
        if not self.module:
            raise ConfigError("hsm.module: path of the PKCS#11 module is empty")
        if not self.token_label:
            raise ConfigError("hsm.token_label: empty")
        if not isinstance(self.sessions, int) or self.sessions < 1:
            raise ConfigError(f"hsm.sessions: must be an integer >= 1, got {self.sessions!r}")
        if self.curve not in CURVES:
            raise ConfigError(f"hsm.curve: must be one of {CURVES}, got {self.curve!r}")


@dataclass(frozen=True)
class KeyEvidence:
    """Attributes read back from the HSM after generation (PKCS#11 v2.40 §4.7, §4.9).

    CKA_LOCAL (generated inside the token), CKA_NEVER_EXTRACTABLE and CKA_ALWAYS_SENSITIVE are
    set by the token and cannot be forged by the caller's template: they are the evidence that
    the private key never existed outside the HSM (sole control, EN 419 241-1).
    """

    local: bool
    never_extractable: bool
    always_sensitive: bool
    extractable: bool
    sensitive: bool
    token: bool

    def acceptable(self) -> bool:
        return (
            self.local
            and self.never_extractable
            and self.always_sensitive
            and self.sensitive
            and not self.extractable
            and not self.token
        )

    def acceptable_as_credential(self) -> bool:
        """The same evidence for a CSC credential key, which is a token object by design
        (signer.keys.credential): only CKA_TOKEN differs."""
        return (
            self.local
            and self.never_extractable
            and self.always_sensitive
            and self.sensitive
            and not self.extractable
            and self.token
        )

    def as_dict(self) -> dict[str, bool]:
        return asdict(self)


@dataclass(frozen=True)
class Destruction:
    """Receipt of :meth:`HsmSession.destroy`.

    ``private_destroyed``/``public_destroyed``: C_DestroyObject returned CKR_OK for that half in
    this call (False if it was already gone). ``confirmed_absent``: afterwards, neither a
    C_FindObjects by CKA_ID nor a probe of either handle finds anything.
    """

    private_destroyed: bool
    public_destroyed: bool
    confirmed_absent: bool

    def as_dict(self) -> dict[str, bool]:
        return asdict(self)
