"""REST errors in the real API's envelope: ``{"error": {message, type, param, code}}``."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from . import ids


def envelope(message: str, type: str = "invalid_request_error", code: str | None = None,
             param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def rest_error(status: int, message: str, type: str = "invalid_request_error", code: str | None = None,
               param: str | None = None, headers: dict[str, str] | None = None) -> web.Response:
    """An aiohttp response the SDK maps to the right exception class (404 → NotFoundError, …)."""
    body = json.dumps(envelope(message, type, code, param))
    hdrs = {"x-request-id": ids.request_id(), **(headers or {})}
    return web.Response(status=status, text=body, content_type="application/json", headers=hdrs)


def missing_key() -> web.Response:
    return rest_error(
        401,
        "You didn't provide an API key. You need to provide your API key in an Authorization header using "
        "Bearer auth (i.e. Authorization: Bearer YOUR_KEY), or as the password field (with blank username) "
        "if you're accessing the API from your browser and are prompted for a username. You can obtain an "
        "API key from https://platform.openai.com/account/api-keys.",
        code=None,
    )


def masked(key: str) -> str:
    return key[:3] + "*" * 6 + key[-4:] if len(key) > 8 else "*" * len(key)


def invalid_key(key: str) -> web.Response:
    return rest_error(
        401,
        f"Incorrect API key provided: {masked(key)}. You can find your API key at "
        "https://platform.openai.com/account/api-keys.",
        code="invalid_api_key",
    )
