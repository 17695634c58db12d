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


Env = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class HsmMember:
    """One HSM of an HA group: a PKCS#11 module, the token's label in it, and the variables
    the module reads when it initialises (a network HSM client's server address)."""

    module: str
    token_label: str
    module_env: Env = ()

    def __post_init__(self) -> None:
        if not self.module:
            raise ConfigError("hsm.module: path of the PKCS#11 module is empty")
        if not self.token_label:
            raise ConfigError("hsm.token_label: empty")

    def describe(self) -> str:
        return f"token {self.token_label!r} in {self.module}"


@dataclass(frozen=True)
class HsmSettings:
    """Where the HSM is and how to use it. ``pin`` is never shown by ``repr``.

    ``standbys``: further members of an HA group holding copies of the same long-lived keys
    (same PIN), used in order when the current one fails. ``call_timeout_seconds``: the
    deadline of every hop; ``reconnect_max_seconds``: the longest pause between reconnection
    attempts (the backoff doubles from 0.1 s up to it)."""

    module: str
    token_label: str
    pin: Secret = field(repr=False)
    sessions: int = 4
    curve: Curve = "P-256"
    module_env: Env = ()
    standbys: tuple[HsmMember, ...] = ()
    call_timeout_seconds: float = 15.0
    reconnect_max_seconds: float = 5.0
    #: Session objects (two per ephemeral key) after which the process renews its PKCS#11
    #: library instance (C_Finalize/C_Initialize): SoftHSM 2.6 frees destroyed session objects
    #: only then (signer.keys._recycle). 0: never.
    reinitialise_after: int = 10_000

    def __post_init__(self) -> None:
        HsmMember(self.module, self.token_label, self.module_env)  # same checks
        if not 0 < self.call_timeout_seconds <= 600:
            raise ConfigError("hsm.call_timeout_seconds: must be > 0 and <= 600")
        if not 0 < self.reconnect_max_seconds <= 600:
            raise ConfigError("hsm.reconnect_max_seconds: must be > 0 and <= 600")
        if not isinstance(self.sessions, int) or self.sessions < 1:
            raise ConfigError(f"hsm.sessions: must be an integer >= 1, got {self.sessions!r}")
        if not isinstance(self.reinitialise_after, int) or self.reinitialise_after < 0:
            raise ConfigError(
                f"hsm.reinitialise_after: must be an integer >= 0, got {self.reinitialise_after!r}"
            )
        if self.curve not in CURVES:
            raise ConfigError(f"hsm.curve: must be one of {CURVES}, got {self.curve!r}")

    @property
    def members(self) -> tuple[HsmMember, ...]:
        """The HA group in order of preference: the main module first, then the standbys."""
        return (HsmMember(self.module, self.token_label, self.module_env), *self.standbys)


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

    def _kept_in_hsm(self) -> bool:
        """Generated on the token and never readable outside it (PKCS#11 v2.40 §4.9)."""
        return (
            self.local
            and self.never_extractable
            and self.always_sensitive
            and self.sensitive
            and not self.extractable
        )

    def acceptable(self) -> bool:
        return self._kept_in_hsm() and not self.token

    def acceptable_as_credential(self) -> bool:
        """The same evidence for a CSC credential key, which is a token object by design
        (signer.keys.credential): only CKA_TOKEN differs."""
        return self._kept_in_hsm() and self.token

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
