"""What the service refuses before any model work: oversized bodies and missing or wrong API keys;
and how its OpenAPI schema documents every refusal, so that clients and fuzzers see them."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import Annotated, Any

from fastapi import Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, BeforeValidator, Field

from components.serving.settings import LimitSettings, matched_key

KEY_HEADER = APIKeyHeader(name="X-API-Key", auto_error=False, description="a key of serve.auth")
BEARER = HTTPBearer(auto_error=False, description="the same key as `Authorization: Bearer <key>`")
# White space as Unicode defines it (Python's str.strip also strips the separators U+001C-U+001F,
# which regular expressions in other engines do not count): a question is blank when it holds
# nothing else, and the schema says so with a pattern every engine reads alike.
WHITE_SPACE = (
    "\t\n\v\f\r \x85\xa0\u1680" + "".join(map(chr, range(0x2000, 0x200B))) + "\u2028\u2029\u202f\u205f\u3000"
)
HAS_TEXT = "[^" + "".join(f"\\u{ord(c):04x}" for c in WHITE_SPACE) + "]"  # one character of text


def _not_a_boolean(value: Any) -> Any:
    if isinstance(value, bool):  # JSON's true is not 1, whatever Python says
        raise ValueError("a number, not true or false")
    return value


NUMBER = BeforeValidator(_not_a_boolean)  # after a number's Field (or its range leaves the schema)


def limited_fields(limits: LimitSettings) -> tuple[Any, Any]:
    """The types of a question's text and of `k` with the service's limits, for request schemas
    that state them (the handlers check the same limits again)."""
    text = Annotated[str, Field(min_length=1, max_length=limits.max_question_chars, pattern=HAS_TEXT)]
    k = Annotated[
        Annotated[int, Field(ge=1, le=limits.max_k), NUMBER]
        | None,  # NUMBER last: the schema keeps the range
        Field(description="passages (default: the adapter's)"),
    ]
    return text, k


REFUSALS = {
    400: "the body is not JSON, or its Content-Length is not a number",
    401: "no API key, or one the service does not know",
    404: "`model` names no adapter served here (GET /v1/models lists them)",
    413: "the body is over serve.limits.max_body_bytes",
    422: "a field is missing, of the wrong type or past a limit; `reason` names it",
    429: "over the key's rate limit (serve.limits.requests_per_minute); wait `Retry-After` seconds",
    503: "no adapter and index pair is loaded yet",
}


class Refusal(BaseModel):
    """The body of every refusal: what kind, and what to change."""

    error: str = Field(description="the kind of refusal (the HTTP status phrase)")
    reason: str = Field(description="what was wrong, for a person to fix")


def documented_refusals(
    statuses: list[int], body: type[BaseModel] = Refusal
) -> dict[int | str, dict[str, Any]]:
    """The `responses` of a route for the refusals it can give (FastAPI's `responses=`)."""
    return {status: {"model": body, "description": REFUSALS[status]} for status in statuses}


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
        """ASGI entry: refuse a body larger than the limit with 413 before it is read."""
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
    """A FastAPI dependency: with keys configured, `Authorization: Bearer <key>` or `X-API-Key`
    (both security schemes in the OpenAPI schema). It gives the document filter of the key (None:
    the key, or the open service, sees every document)."""
    challenge = {"WWW-Authenticate": "Bearer"}
    listed = list(keys)

    async def open_service() -> None:
        return None

    async def check(
        x_api_key: str | None = Security(KEY_HEADER),  # noqa: B008
        bearer: HTTPAuthorizationCredentials | None = Security(BEARER),  # noqa: B008
    ) -> dict | None:
        given = x_api_key if x_api_key is not None else (bearer.credentials if bearer else None)
        if given is None:
            raise RequestError(
                401, "missing API key: send 'Authorization: Bearer <key>' or 'X-API-Key'", challenge
            )
        key = matched_key(given, listed)
        if key is None:
            raise RequestError(401, "invalid API key", challenge)
        return keys[key]

    return check if keys else open_service
