"""The cached-answer fast path (components/serving/fast_path.py): an L1 answer hit leaves without
reaching the app; every request the full path could refuse, and every miss, reaches the app with
its body intact."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import orjson

from components.core.serve_params import AuditSettings
from components.registry.mlflow_registry import ModelNames
from components.serving.app import AnswerRequest, Service
from components.serving.audit import AuditLog
from components.serving.cache import TieredCache, cache_key
from components.serving.fast_path import CachedAnswers
from components.serving.metrics import ServingMetrics
from components.serving.settings import ServeSettings

FIELDS = set(AnswerRequest.model_fields)
ANSWER = {"answer": "Orbell Works", "sources": [], "adapter_version": "1", "index_version": "1"}


class RecordingApp:
    """The app behind the fast path: records the bodies it receives and answers 299."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []

    async def __call__(self, scope: dict, receive, send) -> None:  # noqa: ANN001
        body, more = b"", True
        while more:
            message = await receive()
            body, more = body + message.get("body", b""), message.get("more_body", False)
        self.bodies.append(body)
        await send({"type": "http.response.start", "status": 299, "headers": []})
        await send({"type": "http.response.body", "body": b"app"})


def _service() -> SimpleNamespace:
    settings = ServeSettings.model_validate({"limits": {"max_question_chars": 50, "max_k": 5}})
    metrics = ServingMetrics()
    current = SimpleNamespace(k=3, cache_scope=("1", "1"), registered_name=None)
    service = SimpleNamespace(
        settings=settings, metrics=metrics, cache=TieredCache(settings.cache, metrics),
        promoter=SimpleNamespace(current=current), model_name="retro", names=ModelNames("retro"),
        audit=AuditLog(AuditSettings(path=None), metrics),
    )  # fmt: skip
    for method in (
        "scope",
        "checked",
        "answer_key",
        "served_name",
    ):  # the Service's own request checks and cache keys
        setattr(service, method, getattr(Service, method).__get__(service))
    key = cache_key("answer", service.scope(current), "Who makes Zorvex?", 3, settings.max_new_tokens)
    service.cache.l1["answer"][key] = ANSWER
    return service


def _post(
    middleware: CachedAnswers, body: bytes, headers: dict[bytes, bytes] | None = None
) -> tuple[int, bytes]:
    sent: list[dict] = []
    pieces = [body[:5], body[5:]]  # the body arrives in two messages

    async def receive() -> dict:
        return {"type": "http.request", "body": pieces.pop(0), "more_body": bool(pieces)}

    async def send(message: dict) -> None:
        sent.append(message)

    all_headers = {b"content-length": str(len(body)).encode(), **(headers or {})}
    scope = {"type": "http", "path": "/v1/answer", "method": "POST", "headers": list(all_headers.items())}
    asyncio.run(middleware(scope, receive, send))
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])


def test_a_cached_answer_leaves_before_the_app_and_the_rest_reach_it_intact() -> None:
    app = RecordingApp()
    middleware = CachedAnswers(app, _service(), keys={}, fields=FIELDS)
    for question in ({"question": "Who makes Zorvex?"}, {"question": "  Who makes Zorvex? ", "k": 3}):
        status, body = _post(middleware, orjson.dumps(question))
        assert status == 200 and orjson.loads(body) == {**ANSWER, "cache": "l1"}
    assert app.bodies == []
    passed = [
        {"question": "Who makes Varnholt?"},  # a miss
        {"question": "Who makes Zorvex?", "k": 4},  # another k: another key
        {"question": "Who makes Zorvex?", "stream": True},
        {"question": "Who makes Zorvex?", "temperature": 2},  # the full path refuses the field
        {"question": "Who makes Zorvex?", "k": 9},  # over max_k: the full path refuses it
        {"question": "Who makes Zorvex?", "k": "3"},
        {"question": "x" * 60},
    ]
    for request in passed:
        status, body = _post(middleware, orjson.dumps(request))
        assert status == 299 and app.bodies[-1] == orjson.dumps(request)
    status, _ = _post(middleware, b"{not json")
    assert status == 299 and app.bodies[-1] == b"{not json"


def test_with_api_keys_only_an_accepted_key_gets_the_cached_answer() -> None:
    app = RecordingApp()
    middleware = CachedAnswers(app, _service(), keys={b"k-one": None}, fields=FIELDS)
    body = orjson.dumps({"question": "Who makes Zorvex?"})
    for headers in ({}, {b"x-api-key": b"k-two"}, {b"authorization": b"Bearer k-on"}):
        assert _post(middleware, body, headers)[0] == 299  # the app's 401 answers these
    assert len(app.bodies) == 3
    for headers in ({b"x-api-key": b"k-one"}, {b"authorization": b"bearer k-one"}):
        assert _post(middleware, body, headers)[0] == 200
    assert len(app.bodies) == 3
