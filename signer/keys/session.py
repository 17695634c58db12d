"""Key operations on one PKCS#11 worker session; used only inside ``Hsm.run`` callbacks."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, Protocol

from cryptography.hazmat.primitives.asymmetric import ec
from pkcs11 import Attribute, KeyType, MechanismFlag, ObjectClass
from pkcs11.exceptions import ObjectHandleInvalid, PKCS11Error

from signer import metrics
from signer.errors import HsmUnavailable, KeyNotDestroyed, KeyPolicyViolation
from signer.keys._context import pkcs11_errors_as_unavailable as _translated
from signer.keys.credential import CREDENTIAL_PREFIX
from signer.keys.key import (
    EC_PARAMS,
    CredentialKey,
    EphemeralKey,
    HsmEcPrivateKey,
    public_key_from_attributes,
)
from signer.keys.types import Curve, Destruction, KeyEvidence, TokenKeyExists

if TYPE_CHECKING:
    from signer.keys._module import Module


class KeyTracker(Protocol):
    """What a session needs of its pool (``Hsm``): the record of live ephemeral keys, so a
    key a failed request left behind is found and destroyed, and the lock that serialises
    token-object changes. A Protocol, so this module never imports the pool that imports it."""

    @property
    def token_objects(self) -> AbstractContextManager[Any]: ...

    def _track(self, key_id: bytes, private_handle: int, public_handle: int) -> None: ...
    def _untrack(self, key_id: bytes) -> None: ...
    def _stale(self, max_age_seconds: float) -> Iterator[tuple[bytes, int, int]]: ...
    def _forget_token_key(self, label: str) -> None: ...
    @property
    def token_label(self) -> str: ...


EPHEMERAL_LABEL = "qes-ephemeral"
#: Tries of a token-object search that another process's destruction cut short.
LISTING_ATTEMPTS = 5
_EVIDENCE = (
    Attribute.LOCAL,
    Attribute.NEVER_EXTRACTABLE,
    Attribute.ALWAYS_SENSITIVE,
    Attribute.EXTRACTABLE,
    Attribute.SENSITIVE,
    Attribute.TOKEN,
)
_SIGN_ONLY = MechanismFlag.SIGN | MechanismFlag.VERIFY  # no DECRYPT/UNWRAP/DERIVE


class HsmSession:
    """One R/W worker session (opened without PIN; the process's login covers it).

    Never shared between threads at once: ``Hsm`` hands it to one callback at a time.
    """

    def __init__(self, owner: KeyTracker, p11: Any, module: Module, curve: Curve) -> None:
        self._owner = owner
        self._p11 = p11
        self._module = module
        self._curve = curve
        self._token_keys: dict[str, HsmEcPrivateKey] = {}

    @property
    def handle(self) -> int:
        """The PKCS#11 session handle (for diagnostics)."""
        return int(self._p11.handle)

    # -- ephemeral keys --------------------------------------------------------------------------

    @metrics.timed(metrics.HSM_SECONDS, "generate")
    @_translated
    def generate_ephemeral(self, curve: Curve | None = None) -> EphemeralKey:
        """C_GenerateKeyPair of session objects (CKA_TOKEN=false), sensitive, non-extractable.

        The evidence attributes are read back (PKCS#11 v2.40 §4.9: CKA_LOCAL,
        CKA_ALWAYS_SENSITIVE, CKA_NEVER_EXTRACTABLE); a key that fails them is destroyed and
        KeyPolicyViolation raised. EC_PARAMS goes in the public template only (STANDARDS §8).
        """
        curve = curve or self._curve
        key_id = secrets.token_bytes(16)
        private, public_key, evidence, handles = self._generate_checked(
            curve, key_id, EPHEMERAL_LABEL, credential=False
        )
        key = HsmEcPrivateKey(
            session=self,
            p11_key=private,
            public_key=public_key,
            locate=lambda s: s._find_one({Attribute.ID: key_id}, ObjectClass.PRIVATE_KEY),
            name=f"ephemeral id={key_id.hex()}",
        )
        self._owner._track(key_id, *handles)
        return EphemeralKey(key, evidence, key_id, *handles)

    @metrics.timed(metrics.HSM_SECONDS, "destroy")
    @_translated
    def destroy(self, key: EphemeralKey) -> Destruction:
        """C_DestroyObject both halves, then confirm that neither resolves any more.

        Absence is confirmed by C_FindObjects on CKA_ID and by probing both handles (handles
        are valid in every session of the application, PKCS#11 v2.40 §2.3, so this works on any
        worker session). "Already gone" is not an error; only a failed confirmation raises
        KeyNotDestroyed.
        """
        errors: list[BaseException] = []
        private_destroyed = self._destroy_handle(key.private_handle, errors)
        public_destroyed = self._destroy_handle(key.public_handle, errors)
        try:
            absent = self._confirm_absent(key.key_id, key.private_handle, key.public_handle)
        except (PKCS11Error, HsmUnavailable) as exc:
            if not self._session_alive():
                # The HSM (or our session in it) is gone: an ephemeral key is a session object,
                # destroyed when its session ends (PKCS#11 v2.40 §4.4), so it ended with it.
                raise HsmUnavailable(
                    f"session lost while destroying {key.key_id.hex()} (a session object)"
                ) from exc
            raise KeyNotDestroyed(f"cannot confirm destruction of {key.key_id.hex()}") from exc
        if not absent:
            cause = errors[0] if errors else None
            raise KeyNotDestroyed(f"key {key.key_id.hex()} still resolves") from cause
        self._owner._untrack(key.key_id)
        return Destruction(private_destroyed, public_destroyed, True)

    @_translated
    def destroy_stale(self, max_age_seconds: float) -> int:
        """Destroy this process's ephemeral keys older than ``max_age_seconds``; return count.

        A safety net for keys whose request died between generation and destruction (e.g. a
        cancelled task): session objects would otherwise live until the process exits.
        """
        count = 0
        for key_id, private_handle, public_handle in self._owner._stale(max_age_seconds):
            self._destroy_handle(private_handle, [])
            self._destroy_handle(public_handle, [])
            if self._confirm_absent(key_id, private_handle, public_handle):
                self._owner._untrack(key_id)
                count += 1
        return count

    def _destroy_handle(self, handle: int, errors: list[BaseException]) -> bool:
        try:
            return self._module.destroy_object(self.handle, handle)
        except HsmUnavailable as exc:
            errors.append(exc)
            return False

    def _session_alive(self) -> bool:
        """True if C_GetSessionInfo still answers for this session."""
        try:
            self._module.session_state(self.handle)
        except (PKCS11Error, HsmUnavailable):
            return False
        return True

    def _confirm_absent(self, key_id: bytes, *handles: int) -> bool:
        if list(self._p11.get_objects({Attribute.ID: key_id})):
            return False
        return not any(self._module.handle_resolves(self.handle, h) for h in handles)

    def _destroy_quietly(self, *handles: int) -> None:
        for handle in handles:
            self._destroy_handle(handle, [])

    # -- CSC credential keys (token objects shared by every process) -----------------------------

    @_translated
    def generate_credential_key(self, label: str, curve: Curve | None = None) -> CredentialKey:
        """C_GenerateKeyPair of token objects (CKA_TOKEN=true) labelled ``label``, sensitive and
        never extractable, so any process logged in to the token can sign with it
        (signer.keys.credential). The evidence is read back as for ephemeral keys; a key that
        fails it is destroyed and KeyPolicyViolation raised."""
        if not label.startswith(CREDENTIAL_PREFIX):
            raise ValueError(f"credential key labels start with {CREDENTIAL_PREFIX!r}")
        with self._owner.token_objects:
            return self._generate_credential_key(label, curve or self._curve)

    def _generate_credential_key(self, label: str, curve: Curve) -> CredentialKey:
        private, public_key, evidence, _ = self._generate_checked(
            curve, secrets.token_bytes(16), label, credential=True
        )
        key = self._credential_private_key(private, public_key, label)
        return CredentialKey(key, evidence, label)

    @_translated
    def credential_key(self, label: str) -> HsmEcPrivateKey:
        """The credential key labelled ``label``, looked up in the token (made by any process).

        HsmUnavailable when it is not there (destroyed, or never made)."""
        query = {Attribute.LABEL: label, Attribute.TOKEN: True}
        with self._owner.token_objects:
            private = self._find_one(query, ObjectClass.PRIVATE_KEY, by_id=True)
            public = self._find_one(query, ObjectClass.PUBLIC_KEY, by_id=True)
            public_key = public_key_from_attributes(
                public[Attribute.EC_PARAMS], public[Attribute.EC_POINT]
            )
        return self._credential_private_key(private, public_key, label)

    @_translated
    def destroy_labelled(self, label: str) -> Destruction:
        """C_DestroyObject every token object labelled ``label``, then confirm none is left.

        The objects are collected before anything is destroyed (python-pkcs11 issue #59: never
        destroy while a C_FindObjects search is open). "Nothing there" is not an error (another
        process may have destroyed them first): the receipt then says neither half was
        destroyed by this call, and confirmed_absent. Only a failed confirmation raises
        KeyNotDestroyed.
        """
        query = {Attribute.LABEL: label, Attribute.TOKEN: True}
        with self._owner.token_objects:
            return self._destroy_labelled(label, query)

    def _destroy_labelled(self, label: str, query: dict[Any, Any]) -> Destruction:
        found = self._listed(query)
        classes: dict[int, ObjectClass | None] = {}
        for obj in found:
            try:
                classes[int(obj.handle)] = obj[Attribute.CLASS]
            except ObjectHandleInvalid:  # destroyed meanwhile by another process
                continue
        destroyed = {h: self._destroy_handle(h, []) for h in classes}
        try:
            absent = not list(self._p11.get_objects(query)) and not any(
                self._module.handle_resolves(self.handle, h) for h in classes
            )
        except (PKCS11Error, HsmUnavailable) as exc:
            raise KeyNotDestroyed(f"cannot confirm destruction of {label!r}") from exc
        if not absent:
            raise KeyNotDestroyed(f"token key {label!r} still resolves")
        return Destruction(
            private_destroyed=any(
                destroyed[h] for h, c in classes.items() if c == ObjectClass.PRIVATE_KEY
            ),
            public_destroyed=any(
                destroyed[h] for h, c in classes.items() if c == ObjectClass.PUBLIC_KEY
            ),
            confirmed_absent=True,
        )

    @_translated
    def credential_labels(self) -> set[str]:
        """The labels of every credential key object in the token (any process's)."""
        with self._owner.token_objects:
            objects = self._listed({Attribute.TOKEN: True})  # search finished first
        labels = set()
        for obj in objects:
            try:
                label = obj[Attribute.LABEL]
            except (ObjectHandleInvalid, PKCS11Error):  # destroyed meanwhile
                continue
            if isinstance(label, str) and label.startswith(CREDENTIAL_PREFIX):
                labels.add(label)
        return labels

    def _credential_private_key(self, private: Any, public_key: Any, label: str) -> HsmEcPrivateKey:
        return HsmEcPrivateKey(
            session=self,
            p11_key=private,
            public_key=public_key,
            locate=lambda s: s._find_credential_private(label),
            name=f"credential label={label!r}",
        )

    def _find_credential_private(self, label: str) -> Any:
        with self._owner.token_objects:
            return self._find_one(
                {Attribute.LABEL: label, Attribute.TOKEN: True}, ObjectClass.PRIVATE_KEY, by_id=True
            )

    # -- long-lived token keys -------------------------------------------------------------------

    @_translated
    def token_key(self, label: str) -> HsmEcPrivateKey:
        """The token private key labelled ``label``; cached (a label lookup costs ≈130 µs)."""
        cached = self._token_keys.get(label)
        if cached is not None:
            return cached
        query = {Attribute.LABEL: label, Attribute.TOKEN: True, Attribute.KEY_TYPE: KeyType.EC}
        private = self._find_one(query, ObjectClass.PRIVATE_KEY)
        public = self._find_one(query, ObjectClass.PUBLIC_KEY)
        public_key = public_key_from_attributes(
            public[Attribute.EC_PARAMS], public[Attribute.EC_POINT]
        )
        key = HsmEcPrivateKey(
            session=self,
            p11_key=private,
            public_key=public_key,
            locate=lambda s: s.token_key(label).bound_object(s),
            name=f"token label={label!r}",
            on_invalid=lambda s: s._token_keys.pop(label, None),
        )
        self._token_keys[label] = key
        return key

    @_translated
    def has_token_key(self, label: str) -> bool:
        query = {
            Attribute.LABEL: label,
            Attribute.TOKEN: True,
            Attribute.CLASS: ObjectClass.PRIVATE_KEY,
        }
        return bool(list(self._p11.get_objects(query)))

    @_translated
    def create_token_key(
        self, label: str, curve: Curve, *, replace: bool = False
    ) -> HsmEcPrivateKey:
        """Generate a long-lived token key pair (CKA_TOKEN=true), sensitive, non-extractable.

        Refuses with TokenKeyExists if any token object carries ``label`` unless ``replace``.
        On replace the new pair is generated first and the old objects destroyed afterwards,
        so a failed generation never leaves the label without a key.
        """
        query = {Attribute.LABEL: label, Attribute.TOKEN: True}
        existing = [int(o.handle) for o in self._p11.get_objects(query)]
        if existing and not replace:
            raise TokenKeyExists(
                f"token already holds {len(existing)} token object(s) labelled {label!r};"
                " pass replace=True to replace them"
            )
        public, private = self._generate(curve, secrets.token_bytes(16), label, store=True)
        evidence = _read_evidence(private)
        if not (evidence.local and evidence.sensitive and not evidence.extractable):
            self._destroy_quietly(int(private.handle), int(public.handle))
            raise KeyPolicyViolation(f"token key evidence not acceptable: {evidence.as_dict()}")
        for handle in existing:  # collected before generating: never destroy while iterating
            self._module.destroy_object(self.handle, handle)
        self._owner._forget_token_key(label)
        return self.token_key(label)

    @_translated
    def destroy_token_key(self, label: str) -> Destruction:
        """Destroy the long-lived token key pair ``label`` (both halves, confirmed gone:
        :meth:`destroy_labelled`) and forget it in every session of the process."""
        destruction = self.destroy_labelled(label)
        self._owner._forget_token_key(label)
        return destruction

    # -- inspection ------------------------------------------------------------------------------

    @_translated
    def object_summary(self) -> list[tuple[str, str, bool]]:
        """(label, class, is_token_object) of every object this session can see."""
        objects = list(self._p11.get_objects())  # search finished before any attribute read
        summary = []
        for obj in objects:
            try:
                attrs = obj.get_attributes([Attribute.LABEL, Attribute.CLASS, Attribute.TOKEN])
            except ObjectHandleInvalid:  # destroyed meanwhile by another session's callback
                continue
            cls = attrs.get(Attribute.CLASS)
            name = cls.name if isinstance(cls, ObjectClass) else str(cls)
            summary.append(
                (str(attrs.get(Attribute.LABEL) or ""), name, bool(attrs.get(Attribute.TOKEN)))
            )
        return summary

    # -- helpers ---------------------------------------------------------------------------------

    def _generate_checked(
        self, curve: Curve, key_id: bytes, label: str, *, credential: bool
    ) -> tuple[Any, ec.EllipticCurvePublicKey, KeyEvidence, tuple[int, int]]:
        """A new pair (token objects when ``credential``) with its evidence read back and
        checked (PKCS#11 v2.40 §4.9): the private key, the public key, the evidence and both
        handles. A pair whose evidence cannot be read or fails is destroyed first."""
        public, private = self._generate(curve, key_id, label, store=credential)
        handles = (int(private.handle), int(public.handle))
        try:
            evidence = _read_evidence(private)
            public_key = public_key_from_attributes(EC_PARAMS[curve], public[Attribute.EC_POINT])
        except BaseException:
            self._destroy_quietly(*handles)
            raise
        if not (evidence.acceptable_as_credential() if credential else evidence.acceptable()):
            self._destroy_quietly(*handles)
            kind = "credential" if credential else "ephemeral"
            raise KeyPolicyViolation(f"{kind} key evidence not acceptable: {evidence.as_dict()}")
        return private, public_key, evidence, handles

    def _generate(self, curve: Curve, key_id: bytes, label: str, *, store: bool) -> tuple[Any, Any]:
        if curve not in EC_PARAMS:
            raise ValueError(f"unsupported curve {curve!r}")
        return self._p11.generate_keypair(  # type: ignore[no-any-return]
            KeyType.EC,
            store=store,
            id=key_id,
            label=label,
            capabilities=_SIGN_ONLY,
            public_template={Attribute.EC_PARAMS: EC_PARAMS[curve]},
            private_template={
                Attribute.SENSITIVE: True,
                Attribute.EXTRACTABLE: False,
                Attribute.PRIVATE: True,
            },
        )

    def _listed(self, query: dict[Any, Any]) -> list[Any]:
        """The objects matching ``query``, the search finished before anything else; retried
        when another process destroys a found object before python-pkcs11 reads its class."""
        for attempt in range(1, LISTING_ATTEMPTS + 1):
            try:
                return list(self._p11.get_objects(query))
            except ObjectHandleInvalid:
                if attempt == LISTING_ATTEMPTS:
                    raise
        raise AssertionError("unreachable")

    def _find_one(self, query: dict[Any, Any], cls: ObjectClass, *, by_id: bool = False) -> Any:
        """The one object of class ``cls`` matching ``query``. ``by_id``: several found
        objects with one CKA_ID count as one (SoftHSM, re-reading a token that another process
        changed, can list a token object of this process twice)."""
        found = self._listed({**query, Attribute.CLASS: cls})
        what = f"{cls.name.lower().replace('_', ' ')} matching {_describe(query)}"
        if not found:
            raise HsmUnavailable(f"no {what} in token {self._owner.token_label!r}")
        if len(found) > 1 and not (by_id and len({bytes(o[Attribute.ID]) for o in found}) == 1):
            raise HsmUnavailable(f"{len(found)} objects: {what} (ambiguous)")
        return found[0]


def _read_evidence(private: Any) -> KeyEvidence:
    attrs = private.get_attributes(list(_EVIDENCE))
    return KeyEvidence(*(attrs.get(a) is True for a in _EVIDENCE))


def _describe(query: dict[Any, Any]) -> str:
    if Attribute.LABEL in query:
        return f"label {query[Attribute.LABEL]!r}"
    if Attribute.ID in query:
        return f"id {bytes(query[Attribute.ID]).hex()}"
    return "query"
