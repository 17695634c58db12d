"""The Cloud Signature Consortium API (issue 6; STANDARDS.md §6) at ``/csc/v1`` and ``/csc/v2``.

- :mod:`signer.signing.csc`: one-shot credentials (a token-object key in the HSM and a
  10-minute certificate), single-use authorizations, signing, the expiry sweeper.
- :mod:`signer.http.csc.api`: one set of aiohttp handlers for both API generations' field names.
- :mod:`signer.signing.csc_errors`: CSC error bodies ``{"error", "error_description"}``.
- :mod:`signer.flows.csc_oauth2` (pages and token endpoint in ``oauth2_views``, wiring in
  ``oauth2_setup``): the v2 OAuth2 credential flow, ``/csc/v2/oauth2/authorize|token``.

For the v2 OAuth2 credential flow: :meth:`~signer.signing.csc.CscService.create_authorization`
returns a ``qcsc_…`` secret bound to a credential, its owner, the hash algorithm, the exact
digests and the authentication; ``signatures/signHash`` accepts it as body ``SAD`` or as the
bearer token (a credential token).
"""
