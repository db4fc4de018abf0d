"""Request bodies read by hand: routes that take JSON or multipart on one path parse their fields here.

FastAPI validates a declared body for us, but one path that accepts either a JSON document or a form
(search by text or by image; build from a server archive or an uploaded one) reads the request
itself; these helpers give its fields the same checks and the same 422 errors.
"""

from __future__ import annotations

import json
from typing import Any, TypeVar

from fastapi import Request
from pydantic import BaseModel, ValidationError
from starlette.datastructures import FormData, UploadFile

from kgreport.api.service.errors import ApiError, validation_message

Model = TypeVar("Model", bound=BaseModel)
_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off"}


def body_kind(request: Request, expected: str) -> str:
    """ "json" or "form" (multipart) from the Content-Type; 415 saying what to send otherwise."""
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("application/json"):
        return "json"
    if content_type.startswith("multipart/form-data"):
        return "form"
    raise ApiError(415, "unsupported_media_type", expected)


def form_file(form: FormData, name: str, message: str) -> UploadFile:
    """The uploaded file in form field `name`; 422 with `message` when there is none."""
    value = form.get(name)
    if not isinstance(value, UploadFile):
        raise ApiError(422, "invalid_request", f"{name}: {message}")
    return value


async def json_body(request: Request, model: type[Model]) -> Model:
    """The request's JSON body as `model`; 422 with every problem named."""
    try:
        return model.model_validate_json(await request.body())
    except ValidationError as err:
        raise ApiError(422, "invalid_request", validation_message(err.errors())) from None
    except RecursionError:  # pydantic's parser copes with depth; this guards any other path to it
        raise ApiError(422, "invalid_request", "the JSON body is nested too deeply") from None


def form_int(value: Any, name: str, low: int, high: int, default: int | None) -> int | None:
    """An integer form field within [low, high], or `default` when absent."""
    if value is None or value == "":
        return default
    try:
        number = int(str(value))
    except ValueError:
        raise ApiError(422, "invalid_request", f"{name}: an integer is required") from None
    if not low <= number <= high:
        raise ApiError(422, "invalid_request", f"{name}: must be between {low} and {high}")
    return number


def form_bool(value: Any, name: str) -> bool | None:
    """A yes/no form field ("true"/"false", "1"/"0", ...), or None when absent."""
    if value is None or value == "":
        return None
    text = str(value).strip().lower()
    if text in _TRUE | _FALSE:
        return text in _TRUE
    raise ApiError(422, "invalid_request", f"{name}: true or false is required")


def parse_filters(raw: str | None) -> dict[str, str]:
    """The `filters` form field: a JSON object of strings."""
    if not raw:
        return {}
    try:
        filters = json.loads(raw)
    except json.JSONDecodeError as err:
        raise ApiError(422, "bad_filters", f"filters must be a JSON object of strings: {err.msg}") from None
    except RecursionError:  # "[[[[..." deeper than the parser's stack
        raise ApiError(422, "bad_filters", "filters must be a JSON object of strings, not nested arrays") from None
    if not isinstance(filters, dict) or not all(isinstance(v, str) for v in filters.values()):
        raise ApiError(422, "bad_filters", 'filters must be a JSON object of strings, e.g. {"modality": "CT"}')
    return {str(k): v for k, v in filters.items()}
