"""HSM key custody: ephemeral per-request EC keys and long-lived token keys over PKCS#11.

Public API (others code against exactly these names)::

    hsm = Hsm.open(HsmSettings(module=..., token_label=..., pin=Secret(...)))
    key = await hsm.run(lambda s: s.generate_ephemeral())        # one thread hop
    sig = await hsm.run(lambda s: key.private.sign_digest(d))     # any session of the pool
    receipt = await hsm.run(lambda s: s.destroy(key))
    hsm.close()

See STANDARDS.md §8 for the PKCS#11 facts this package is built around.
"""

from signer.keys.hsm import Hsm
from signer.keys.key import CredentialKey, EphemeralKey, HsmEcPrivateKey
from signer.keys.session import HsmSession
from signer.keys.types import Destruction, HsmSettings, KeyEvidence, TokenKeyExists

__all__ = [
    "CredentialKey",
    "Destruction",
    "EphemeralKey",
    "Hsm",
    "HsmEcPrivateKey",
    "HsmSession",
    "HsmSettings",
    "KeyEvidence",
    "TokenKeyExists",
]
