"""The request models (issue 16 item 3): ``/openapi.json`` is a valid OpenAPI 3.1 document whose
request schemas come from the models, a body its schema refuses is refused by the handler's
parser and one it accepts is accepted, and a refusal names the field, never the input."""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import UTC, datetime
from typing import Any, get_args

import pytest
from jsonschema import Draft202012Validator
from openapi_spec_validator import OpenAPIV31SpecValidator, validate

from signer.errors import RequestError
from signer.http.api.admin import parse_target
from signer.http.api.signatures import parse_signature_request
from signer.http.approvals.models import Decision
from signer.http.audit.query import FormError, parse_search
from signer.http.csc import models as csc
from signer.http.csc.api import check_parameters
from signer.http.kit import models
from signer.http.kit.params import hostile_text, text_fault, utc_instant
from signer.http.openapi import document
from signer.http.sign.api import parse_order
from signer.settings.config import DIGEST_SIZES, load_settings
from signer.signing.csc_errors import CscError
from signer.signing.pipeline import FORMATS, SignatureFormat
from tests.support.service import DEV_CONFIG

SERVER = load_settings(DEV_CONFIG, env={"QES_HSM_PIN": "1234"}).server
DOC = document(SERVER)
DIGEST = base64.b64encode(hashlib.sha256(b"x").digest()).decode()
BATCH = {"hash_algorithm": "sha256", "hashes": [DIGEST]}
ORDER = {
    "documents": [{"label": "contract.pdf", "digest": DIGEST}],
    "redirect_uri": "https://rp.example.com/signed",
    "state": "s1",
}
SIGN_HASH = {"credentialID": "c1", "signAlgo": "1.2.840.10045.4.3.2", "hashes": [DIGEST]}


def test_the_document_is_valid_openapi_3_1() -> None:
    validate(DOC, cls=OpenAPIV31SpecValidator)


def test_request_bodies_are_the_models_schemas() -> None:
    schemas = DOC["components"]["schemas"]
    for model in (Decision, *csc.BODIES.values()):
        assert schemas[model.__name__] == model.model_json_schema(ref_template=models.REF_TEMPLATE)
    post = DOC["paths"]["/api/v1/signatures"]["post"]
    assert post["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/SignatureRequest"
    }
    assert schemas["SignatureRequest"]["properties"]["hashes"]["maxItems"] == SERVER.max_digests
    for method, model in csc.BODIES.items():
        body = DOC["paths"][f"/csc/v2/{method}"]["post"]["requestBody"]
        assert body["content"]["application/json"]["schema"] == models.ref(model)


def test_every_reference_resolves() -> None:
    text = json.dumps(DOC)
    for name in {part.split('"')[0] for part in text.split('"#/components/schemas/')[1:]}:
        assert name in DOC["components"]["schemas"], name


def test_the_models_literals_are_the_services() -> None:
    assert get_args(models.HashAlgorithm) == tuple(DIGEST_SIZES)
    assert get_args(SignatureFormat) == FORMATS


def _schema_accepts(component: str, body: Any) -> bool:
    root = {"$ref": f"#/components/schemas/{component}", "components": DOC["components"]}
    return bool(Draft202012Validator(root).is_valid(body))


def _batch(body: Any) -> None:
    parse_signature_request(body, max_digests=SERVER.max_digests)


def _decision(body: Any) -> None:
    models.validate(Decision, body)


def _csc(model: type[csc.CscBody]) -> Any:
    return lambda body: check_parameters(body, model)


def _handler_accepts(parse: Any, body: Any) -> bool:
    try:
        parse(body)
    except (RequestError, CscError):
        return False
    return True


SAMPLES: list[tuple[str, Any, Any, bool]] = [
    ("SignatureRequest", _batch, BATCH, True),
    ("SignatureRequest", _batch, {**BATCH, "format": "pades", "labels": ["a"]}, True),
    ("SignatureRequest", _batch, {**BATCH, "profile": None}, True),
    ("SignatureRequest", _batch, {**BATCH, "hash_algorithm": []}, False),
    ("SignatureRequest", _batch, {**BATCH, "hash_algorithm": {}}, False),
    ("SignatureRequest", _batch, {**BATCH, "hash_algorithm": "md5"}, False),
    ("SignatureRequest", _batch, {**BATCH, "hashes": []}, False),
    ("SignatureRequest", _batch, {**BATCH, "hashes": [DIGEST] * (SERVER.max_digests + 1)}, False),
    ("SignatureRequest", _batch, {**BATCH, "hashes": ["***"]}, False),
    ("SignatureRequest", _batch, {**BATCH, "hashes": DIGEST}, False),
    ("SignatureRequest", _batch, {**BATCH, "profile": ["qes"]}, False),
    ("SignatureRequest", _batch, {**BATCH, "format": "pdf"}, False),
    ("SignatureRequest", _batch, {**BATCH, "extra": 1}, False),
    ("SignatureRequest", _batch, [BATCH], False),
    ("SigningRequest", parse_order, ORDER, True),
    ("SigningRequest", parse_order, {**ORDER, "signer": {"subject": "s"}, "profile": "qes"}, True),
    ("SigningRequest", parse_order, {**ORDER, "hash_algorithm": {}}, False),
    ("SigningRequest", parse_order, {**ORDER, "profile": "gold"}, False),
    ("SigningRequest", parse_order, {**ORDER, "documents": []}, False),
    ("SigningRequest", parse_order, {**ORDER, "state": ""}, False),
    ("SigningRequest", parse_order, {**ORDER, "signer": []}, False),
    ("SigningRequest", parse_order, {k: v for k, v in ORDER.items() if k != "state"}, False),
    ("Decision", _decision, {"digest_commitment": "a" * 64}, True),
    ("Decision", _decision, {"digest_commitment": "a" * 63}, False),
    ("Decision", _decision, {"digest_commitment": "a" * 64, "more": 1}, False),
    ("Decision", _decision, {}, False),
    ("SuspensionTarget", parse_target, {"scope": "all"}, True),
    ("SuspensionTarget", parse_target, {"scope": "client", "client_id": "c", "reason": "r"}, True),
    ("SuspensionTarget", parse_target, {"scope": "everything"}, False),
    ("SuspensionTarget", parse_target, {"scope": "client", "client_id": "  "}, False),
    ("SuspensionTarget", parse_target, {"scope": "all", "reason": ["r"]}, False),
    ("SuspensionTarget", parse_target, {"scope": "all", "reason": "r" * 501}, False),
    ("CscSignHashRequest", _csc(csc.CscSignHashRequest), SIGN_HASH, True),
    ("CscSignHashRequest", _csc(csc.CscSignHashRequest), {**SIGN_HASH, "clientData": 1}, True),
    ("CscSignHashRequest", _csc(csc.CscSignHashRequest), {**SIGN_HASH, "signAlgo": {}}, False),
    ("CscSignHashRequest", _csc(csc.CscSignHashRequest), {**SIGN_HASH, "hashes": []}, False),
    ("CscSignHashRequest", _csc(csc.CscSignHashRequest), {"signAlgo": "x"}, False),
    ("CscCredentialsInfoRequest", _csc(csc.CscCredentialsInfoRequest), {"credentialID": "c"}, True),
    ("CscCredentialsInfoRequest", _csc(csc.CscCredentialsInfoRequest),
     {"credentialID": "c" * 65}, False),
    ("CscCredentialsInfoRequest", _csc(csc.CscCredentialsInfoRequest),
     {"credentialID": "c", "certificates": "all"}, False),
    ("CscAuthorizeRequest", _csc(csc.CscAuthorizeRequest),
     {"credentialID": "c", "numSignatures": 1, "hash": [DIGEST]}, True),
    ("CscAuthorizeRequest", _csc(csc.CscAuthorizeRequest),
     {"credentialID": "c", "numSignatures": True, "hash": [DIGEST]}, False),
    ("CscTimestampRequest", _csc(csc.CscTimestampRequest), {"hash": DIGEST, "nonce": "0a"}, True),
    ("CscTimestampRequest", _csc(csc.CscTimestampRequest), {"hash": DIGEST, "nonce": "x"}, False),
]  # fmt: skip


@pytest.mark.parametrize(("component", "parse", "body", "accepted"), SAMPLES)
def test_schema_and_handler_agree(component: str, parse: Any, body: Any, accepted: bool) -> None:
    assert _schema_accepts(component, body) is accepted
    assert _handler_accepts(parse, body) is accepted


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        ({**BATCH, "s3cret-field": 1}, "/: unknown field"),
        ({**BATCH, "hashes": [DIGEST, 5]}, "/hashes/1: must be a string"),
        ({**BATCH, "hash_algorithm": ["s3cret"]}, "/hash_algorithm: not one of the allowed values"),
    ],
)
def test_a_refusal_points_at_the_field_and_never_echoes_the_input(
    body: dict[str, Any], detail: str
) -> None:
    with pytest.raises(RequestError) as caught:
        _batch(body)
    assert caught.value.pointer_detail == detail
    assert "s3cret" not in str(caught.value)


@pytest.mark.parametrize(
    ("value", "pointer"),
    [
        ({"a": ["ok", "b\x00"]}, "/a/1"),
        ({"a/b~": "\ud800"}, "/"),
        ({"ok": {"<script>": ["x\x00"]}}, "/ok"),
        ({"ok": [{"fine": ["x", "\ud800"]}]}, "/ok/0/fine/1"),
        ({"a": {"\x00": 1}}, "/a"),
        ("\udfff", "/"),
        ({"ok": ["fine", 1, None, {"x": "\U0001f600"}]}, None),
    ],
)
def test_hostile_text_points_at_the_string_not_at_its_text(value: Any, pointer: str | None) -> None:
    assert hostile_text(value) == pointer


def test_text_faults() -> None:
    assert text_fault("plain \u00e9 \U0001f600") is None
    assert text_fault("a\x00") == "holds a NUL character"
    assert text_fault("\ud83d") == "holds a lone surrogate"


@pytest.mark.parametrize("text", ["9999-12-31T23:59:59-14:00", "0001-01-01T00:00:00+14:00"])
def test_times_without_a_utc_instant_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="out of range"):
        utc_instant(datetime.fromisoformat(text))
    with pytest.raises(FormError):
        parse_search({"since": text})


def test_times_in_range_keep_their_instant() -> None:
    when = datetime.fromisoformat("9999-12-31T23:59:59+00:00")
    assert utc_instant(when) == when
    assert parse_search({"since": "2026-01-31T14:30"}).filter.since == datetime(
        2026, 1, 31, 14, 30, tzinfo=UTC
    )
