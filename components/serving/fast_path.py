"""The cached-answer fast path: a plain ASGI middleware that answers `POST /v1/answer` from the
in-process answer cache (L1) before FastAPI routes, parses or validates the request.

It applies the same API keys, body limit and request checks as the full path, with the same
outcome: anything it is not sure of (a wrong key, an unexpected field, a streamed answer, a
limit, an L1 miss) goes on to the full path unchanged, which answers or refuses as before.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from components.serving.audit import caller
from components.serving.limits import RequestError, given_key
from components.serving.settings import matched_key

ASGI = Callable[..., Awaitable[None]]
JSON_HEADERS = [(b"content-type", b"application/json")]


class CachedAnswers:
    """ASGI middleware in front of the app: L1 answer hits leave here; the rest passes through."""

    def __init__(self, app: ASGI, service: Any, keys: dict[bytes, dict | None], fields: set[str]) -> None:
        """`keys`: each accepted key with its document filter; `fields`: those the answer request
        model accepts (any other one is the full path's 422)."""
        self.app, self.service, self.keys, self.fields = app, service, keys, fields
        self.listed = list(keys)
        self.max_bytes = service.settings.limits.max_body_bytes

    async def __call__(self, scope: dict[str, Any], receive: Callable, send: Callable) -> None:
        """ASGI entry: answer a cached question before FastAPI parses the request."""
        if scope["type"] != "http" or scope["path"] != "/v1/answer" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        declared = headers.get(b"content-length", b"")
        allowed, where, given = self.authorised(headers)
        if not declared.isdigit() or int(declared) > self.max_bytes or not allowed:
            await self.app(scope, receive, send)
            return
        body, complete = await read_body(receive, int(declared))
        answer = self.cached(body, where, given) if complete else None
        if answer is None:
            await self.app(scope, replay(body, receive, more=not complete), send)
            return
        sized = [*JSON_HEADERS, (b"content-length", str(len(answer)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": sized})
        await send({"type": "http.response.body", "body": answer})

    def authorised(self, headers: dict[bytes, bytes]) -> tuple[bool, dict | None, str | None]:
        """Whether the full path's API-key check would let this request through, the document
        filter of its key, and the key."""
        if not self.keys:
            return True, None, None
        sent = {
            name: headers[name].decode("latin-1")
            for name in (b"x-api-key", b"authorization")
            if name in headers
        }
        given = given_key(sent.get(b"x-api-key"), sent.get(b"authorization"))  # the full path's reading
        key = None if given is None else matched_key(given, self.listed)
        return key is not None, None if key is None else self.keys[key], given

    def cached(self, body: bytes, where: dict | None = None, given: str | None = None) -> bytes | None:
        """The response body of an L1 answer hit for this request body, or None (`given`: the
        API key, for the audit log)."""
        who = caller("/v1/answer", given)
        l1, answerer = self.service.cache.l1["answer"], self.service.promoter.current
        if l1 is None or answerer is None:
            return None
        try:
            request = orjson.loads(body)
        except orjson.JSONDecodeError:
            return None
        if (
            not isinstance(request, dict)
            or not request.keys() <= self.fields
            or request.get("stream", False) is not False
            or request.get("model") is not None  # another adapter, or routed: the full path picks it
        ):
            return None
        question, k = request.get("question"), request.get("k")
        if not isinstance(question, str) or not (k is None or type(k) is int):
            return None
        try:
            question, k = self.service.checked(question, k, answerer)
        except RequestError:
            return None  # the full path refuses it, with its reason
        key = self.service.answer_key(answerer, question, k, where)
        value = l1.get(key)
        if value is None:
            return None  # the full path looks again and counts the miss
        self.service.metrics.cache_lookups.labels("l1", "answer", "hit").inc()
        result = {**value, "cache": "l1"}
        self.service.audit.record(who, self.service.served_name(answerer), question, result, None)
        return orjson.dumps(result)


async def read_body(receive: Callable, declared: int) -> tuple[bytes, bool]:
    """The request body, and whether it is all there within its declared length."""
    parts, size = [], 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"".join(parts), False
        parts.append(message.get("body", b""))
        size += len(parts[-1])
        if size > declared or not message.get("more_body", False):
            return b"".join(parts), size <= declared


def replay(body: bytes, receive: Callable, more: bool = False) -> Callable[[], Awaitable[dict[str, Any]]]:
    """A `receive` that gives the body already read once (`more`: the client may send more of it),
    then whatever the client sends next."""
    given = False

    async def again() -> dict[str, Any]:
        nonlocal given
        if given:
            return await receive()
        given = True
        return {"type": "http.request", "body": body, "more_body": more}

    return again
