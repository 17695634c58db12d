"""The approvals API's request body as a model: validation and the ``/openapi.json`` schema
(``signer.http.kit.models``)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from signer.http.kit.models import Body


class Decision(Body):
    """``POST /api/v1/approval-requests/{id}/approve`` | ``/deny``: exactly the digests shown."""

    digest_commitment: Annotated[
        str,
        Field(
            min_length=64,
            max_length=64,
            description="hex SHA-256(u32(len(d1)) d1 ... u32(len(dn)) dn) of the request:"
            " approve or deny exactly these digests",
        ),
    ]
