"""Parts every section of the OpenAPI document (gateway/web/openapi.py) is built from: a
`$ref`, a JSON answer, the error answer, the small common schemas and the API-key security."""

from __future__ import annotations

from typing import Any, Final

JSONSchema = dict[str, Any]

JSON: Final = "application/json"
_REF: Final = "#/components/schemas/"


def ref(name: str) -> JSONSchema:
    """A reference to the component schema `name`."""
    return {"$ref": _REF + name}


def json_answer(schema: JSONSchema, description: str, **extra: Any) -> dict[str, Any]:
    """An answer with a JSON body of `schema`."""
    return {"description": description, "content": {JSON: {"schema": schema}}, **extra}


def error_answer(description: str, **extra: Any) -> dict[str, Any]:
    """An answer with the Error body."""
    return json_answer(ref("Error"), description, **extra)


STRING: Final[JSONSchema] = {"type": "string"}
COUNT: Final[JSONSchema] = {"type": "integer", "minimum": 0}

API_KEY: Final[list[dict[str, list[str]]]] = [{"apiKey": []}]
UNAUTHORIZED: Final = error_answer("Missing or unknown API key.")
