"""What the service refuses before any model work: oversized bodies and missing or wrong API keys."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import Any

from fastapi import Header

from components.serving.settings import matched_key


class RequestError(Exception):
    """A refusal the client caused or can act on: its status and reason go back as JSON."""

    def __init__(self, status: int, reason: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(reason)
        self.status, self.reason, self.headers = status, reason, headers
        self.title = HTTPStatus(status).phrase.lower()


class BodySizeLimit:
    """ASGI middleware: 413 for a body over `max_bytes`, by its Content-Length or while it streams."""

    def __init__(self, app: Callable[..., Awaitable[None]], max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: dict[str, Any], receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        too_large = RequestError(413, f"request body over {self.max_bytes} bytes")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            await _send_error(
                send, too_large if declared.isdigit() else RequestError(400, "bad Content-Length")
            )
            return
        received = 0

        async def limited() -> dict[str, Any]:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise too_large
            return message

        await self.app(scope, limited, send)


async def _send_error(send: Callable, error: RequestError) -> None:
    import orjson

    body = orjson.dumps({"error": error.title, "reason": error.reason})
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def given_key(x_api_key: str | None, authorization: str | None) -> str | None:
    """The key a request sends: `X-API-Key`, else `Authorization: Bearer <key>`."""
    if x_api_key is None and authorization and authorization.lower().startswith("bearer "):
        return authorization[7:].strip()
    return x_api_key


def require_api_key(keys: dict[bytes, dict | None]) -> Callable[..., Awaitable[dict | None]]:
    """A FastAPI dependency: with keys configured, `Authorization: Bearer <key>` or `X-API-Key`.
    It gives the document filter of the key (None: the key, or the open service, sees every
    document)."""
    challenge = {"WWW-Authenticate": "Bearer"}
    listed = list(keys)

    async def check(
        authorization: str | None = Header(None), x_api_key: str | None = Header(None)
    ) -> dict | None:
        if not keys:
            return None
        given = given_key(x_api_key, authorization)
        if given is None:
            raise RequestError(
                401, "missing API key: send 'Authorization: Bearer <key>' or 'X-API-Key'", challenge
            )
        key = matched_key(given, listed)
        if key is None:
            raise RequestError(401, "invalid API key", challenge)
        return keys[key]

    return check
