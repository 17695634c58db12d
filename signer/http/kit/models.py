"""Request bodies as pydantic v2 models (issue 16): one declaration gives the validation of a
parsed JSON body and its schema in ``/openapi.json`` (JSON Schema 2020-12, OpenAPI 3.1 §4.8.24),
so the document cannot drift from what the handlers accept.

Models stay at the HTTP floor: a handler validates with :func:`validate`, then hands the core
its frozen values, never a model. A :class:`pydantic.ValidationError` becomes one of the
existing problem kinds (RFC 9457), chosen by field; its ``detail`` is a JSON pointer (RFC 6901)
to the refused field and the kind of fault, never the client's input.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, WithJsonSchema
from pydantic_core import ErrorDetails

from signer.errors import RequestError
from signer.http.kit.problems import InvalidRequest

M = TypeVar("M", bound=BaseModel)
#: Schemas are referenced as OpenAPI components (collected by ``signer.http.openapi``).
REF_TEMPLATE = "#/components/schemas/{model}"
_FAULTS = {
    "missing": "required",
    "extra_forbidden": "unknown field",
    "literal_error": "not one of the allowed values",
    "string_type": "must be a string",
    "bool_type": "must be true or false",
    "int_type": "must be an integer",
    "list_type": "must be an array",
    "model_type": "must be an object",
    "model_attributes_type": "must be an object",
    "too_short": "too few items or characters",
    "too_long": "too many items or characters",
    "string_too_short": "too short",
    "string_too_long": "too long",
    "string_pattern_mismatch": "not in the expected form",
    "greater_than_equal": "too small",
    "less_than_equal": "too large",
}


class Body(BaseModel):
    """A JSON request body: exact JSON types (no coercion), no unknown fields, immutable."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


def pointer_of(error: ErrorDetails) -> str:
    """The JSON pointer of a validation error; an unknown field is pointed at by its parent
    (its name is the client's text)."""
    loc = error["loc"][:-1] if error["type"] == "extra_forbidden" else error["loc"]
    return "".join(f"/{part}" for part in loc) or "/"


def refusal(
    exc: ValidationError,
    kinds: Mapping[str, type[RequestError]],
    default: type[RequestError] = InvalidRequest,
) -> RequestError:
    """The problem kind of a validation failure: unknown fields first (as before models), then
    the first failing field in declaration order. ``kinds`` maps ``"field"`` or
    ``"field:error_type"`` to a kind; anything else is ``default``."""
    errors = exc.errors(include_url=False, include_input=False)
    error = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
    field = str(error["loc"][0]) if error["loc"] and error["type"] != "extra_forbidden" else ""
    kind = kinds.get(f"{field}:{error['type']}") or kinds.get(field) or default
    where = pointer_of(error)
    fault = _FAULTS.get(error["type"], "not valid")
    err = kind(f"{where}: {error['type']}")
    err.pointer_detail = f"{where}: {fault}"
    return err


def validate(
    model: type[M],
    value: Any,
    kinds: Mapping[str, type[RequestError]] | None = None,
    default: type[RequestError] = InvalidRequest,
) -> M:
    """``value`` (parsed JSON) as ``model``, or the problem kind of its first fault."""
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        raise refusal(exc, kinds or {}, default) from exc


def schemas(*models: type[BaseModel]) -> dict[str, Any]:
    """OpenAPI components for ``models`` and every model they use, by model name."""
    found: dict[str, Any] = {}
    for model in models:
        schema = model.model_json_schema(ref_template=REF_TEMPLATE)
        found.update(schema.pop("$defs", {}))
        found[model.__name__] = schema
    return found


def ref(model: type[BaseModel]) -> dict[str, str]:
    """A ``$ref`` to ``model``'s component schema."""
    return {"$ref": REF_TEMPLATE.format(model=model.__name__)}


#: The digest algorithms of ``signer.settings.config.DIGEST_SIZES`` (a unit test keeps the two
#: equal).
HashAlgorithm = Literal["sha256", "sha384", "sha512"]
#: Base64 text (RFC 4648 §4). The schema states the alphabet; the handler decodes strictly
#: (``base64.b64decode(validate=True)``: the alphabet and the padding), so the model does not
#: match the pattern a second time on the hot path of a batch.
Base64 = Annotated[
    str,
    WithJsonSchema(
        {"type": "string", "pattern": "^[A-Za-z0-9+/]*={0,2}$", "contentEncoding": "base64"}
    ),
]


class Problem(BaseModel):
    """RFC 9457 problem details, as ``signer.http.kit.problems`` renders every error."""

    type: str = Field(json_schema_extra={"format": "uri-reference"})
    title: str
    status: int
    detail: str | None = Field(None, description="a fixed text, e.g. a pointer to the field")
    instance: str | None = None
    request_id: str | None = None
