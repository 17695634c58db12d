"""The micro-CA: certificate profiles and short-term certificate issuance.

Pure: keys, a clock and a serial source are handed in; no network, database or file I/O, and
no import of ``signer`` or ``idp_adapter`` (DESIGN.md "Layout"). Public modules:

- :mod:`ca.errors`: ``CaError`` and its subclasses ``ProfileError``, ``PolicyError``;
- :mod:`ca.profiles`: ``Level``, ``NaturalPerson``, ``LegalPerson``, ``subject_from_attributes``;
- :mod:`ca.authority`: ``CaNames``, ``IssuancePolicy``, ``Chain``, the CA-certificate and CRL
  builders, and ``IssuingCA``.
"""
