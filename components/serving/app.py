"""The inference API: `POST /v1/answer`, `POST /v1/retrieve`, the OpenAI-compatible
`/v1/models`, `/v1/chat/completions` and `/v1/completions` (components/serving/openai_api.py),
`/healthz`, `/readyz`, `/metrics`.

Each request is served by the pair the promoter holds when it arrives (hot promotion), its steps
go through the two cache tiers and the dynamic batchers, and every error reaches the client as a
JSON body with a reason, never a stack trace. Started by `retro serve`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
import weakref
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from functools import partial
from http import HTTPStatus
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel, ConfigDict, StrictBool, create_model
from starlette.exceptions import HTTPException

from components.adapters.adapter_set import AdapterSet, slot_name
from components.adapters.int8_decode import use_int8_decode
from components.adapters.kv_index import KVFolder
from components.adapters.peft_adapter import read_artifact_config
from components.evaluation.abstention import similarity_reason, support_reason
from components.registry.mlflow_registry import DEFAULT_NAME, ModelNames
from components.serving.answerer import Answerer
from components.serving.audit import AuditLog, Caller, caller
from components.serving.batching import MicroBatcher
from components.serving.cache import TieredCache, cache_key
from components.serving.fast_path import CachedAnswers
from components.serving.limits import (
    HAS_TEXT,
    WHITE_SPACE,
    BodySizeLimit,
    RequestError,
    documented_refusals,
    given_key,
    limited_fields,
    require_api_key,
)
from components.serving.metrics import ServingMetrics
from components.serving.openai_api import AUTO, OPENAI_PATHS, add_openai_routes, openai_error
from components.serving.promotion import Promoter, short_registry_checks
from components.serving.rate_limit import RateLimit, TokenBuckets
from components.serving.settings import LimitSettings, ServeSettings

log = logging.getLogger(__name__)
SETTINGS_ENV = "RETRO_SERVE_SETTINGS"


class RetrieveRequest(BaseModel):
    """Body of `/v1/retrieve`: a question and how many passages."""

    model_config = ConfigDict(extra="forbid")
    question: str
    k: int | None = None
    model: str | None = None  # a served adapter (GET /v1/models), auto, or None: the main one


class AnswerRequest(RetrieveRequest):
    """Body of `/v1/answer`: a retrieve request, streamed as server-sent events when asked."""

    stream: StrictBool = False


def limited_requests(limits: LimitSettings) -> tuple[type[RetrieveRequest], type[AnswerRequest]]:
    """The request bodies with the service's limits in their schema, so that generated clients and
    fuzzers see the API as it is (the handlers check the same limits again)."""
    question, k = limited_fields(limits)
    fields = {"question": (question, ...), "k": (k, None)}
    retrieve = create_model("RetrieveRequest", __base__=RetrieveRequest, **fields)
    return retrieve, create_model("AnswerRequest", __base__=AnswerRequest, **fields)


def said(error: dict[str, Any]) -> str:
    """What a validation error says, in words a person can act on (a blank question's pattern
    would otherwise be quoted back as a list of code points)."""
    if error["type"] == "string_pattern_mismatch" and (error.get("ctx") or {}).get("pattern") == HAS_TEXT:
        return "question is empty (white space only)"
    return error["msg"]


class Service:
    """The state one app holds: promoter, caches, batchers, executors, metrics."""

    def __init__(self, settings: ServeSettings, tracking_uri: str, model_name: str = DEFAULT_NAME) -> None:
        self.settings, self.metrics = settings, ServingMetrics()
        self.cache = TieredCache(settings.cache, self.metrics)
        self.audit = AuditLog(settings.audit, self.metrics, Path(settings.download_dir))
        kv_folder = KVFolder(Path(settings.chunk_kv_folder), settings.chunk_kv_budget_gb)
        self.load = partial(
            Answerer,
            prefix_entries=settings.cache.prefix_entries,
            on_prefix=self._count_prefix,
            kv_folder=kv_folder,
            engine=settings.engine,
            llamacpp=settings.llamacpp,
            torch_engine=settings.torch,
            retrievers=weakref.WeakValueDictionary(),  # one loaded index per version
        )
        self.tracking_uri, self.model_name = tracking_uri, model_name
        self.names = ModelNames(model_name)
        self.adapters: AdapterSet | None = None
        self.slots: dict[str, list[str]] = {}  # registered adapter -> its loaded slots, oldest first
        self.domains: dict[str, Promoter] = {}  # found when the service starts (`start`)
        self.promoter = self._promoter(self.names)
        # every torch call runs on this one thread: a second long-lived thread doing torch work
        # doubled the query-embedding time here (two OpenMP thread teams on two cores)
        self.model_pool = ThreadPoolExecutor(1, thread_name_prefix="retro-model")
        self.in_flight = 0
        b = settings.batching
        self.searcher = MicroBatcher(
            self._search, self.model_pool, b.max_batch, b.max_wait_ms, self._batch("search"), self._busy
        )
        self.generator = MicroBatcher(
            self._generate,
            self.model_pool,
            b.max_batch,
            b.max_wait_ms,
            self._batch("generate"),
            self._busy,
        )

    def _promoter(self, names: ModelNames) -> Promoter:
        """A promoter following `names.adapter`'s alias, loading through `_loader`."""
        s = self.settings
        folder, every = Path(s.download_dir), s.poll_seconds
        return Promoter(self.tracking_uri, s.alias, folder, self.metrics, every, self._loader(names), names)

    def _domain_promoters(self, domains: list[str]) -> dict[str, Promoter]:
        """One promoter per served domain adapter, by registered name; with any, in_context
        adapters share one base model (an `AdapterSet`)."""
        if not domains:
            return {}
        prepare = use_int8_decode if self.settings.torch.decode_weights == "int8" else None
        self.adapters = AdapterSet(prepare)
        return {self.names.of_domain(d).adapter: self._promoter(self.names.of_domain(d)) for d in domains}

    def _loader(self, names: ModelNames) -> Callable[..., Answerer]:
        """How `names.adapter`'s versions load: onto the shared base model where the adapter can
        share it (the two newest slots of each adapter stay, so requests in flight finish)."""

        def load(adapter_dir: Path, index_dir: Path, adapter_version: str, index_version: str) -> Answerer:
            config = read_artifact_config(adapter_dir)
            shared = self.adapters is not None and config.get("fusion", "in_context") == "in_context"
            if not shared:
                answerer = self.load(adapter_dir, index_dir, adapter_version, index_version)
            else:
                slot = slot_name(f"{names.adapter}-v{adapter_version}")
                answerer = self.load(
                    adapter_dir, index_dir, adapter_version, index_version, adapters=self.adapters, slot=slot
                )
                loaded = self.slots.setdefault(names.adapter, [])
                loaded.append(slot)
                while len(loaded) > 2:
                    self.adapters.remove(loaded.pop(0))
            answerer.registered_name = names.adapter
            return answerer

        return load

    def start(self) -> None:
        """Find the domain adapters to serve (in the registry, so not when the app is only built),
        then load every adapter and follow its alias in the background."""
        self.domains = self._domain_promoters(served_domains(self.settings, self.tracking_uri, self.names))
        for promoter in self.promoters.values():
            promoter.start()

    @property
    def promoters(self) -> dict[str, Promoter]:
        """Every served adapter's promoter by registered name, the main one first."""
        return {self.names.adapter: self.promoter, **self.domains}

    def _count_prefix(self, hit: bool) -> None:
        self.metrics.cache_lookups.labels("prefix", "prefix_kv", "hit" if hit else "miss").inc()

    def _busy(self) -> int:
        return self.in_flight

    def _batch(self, step: str):  # noqa: ANN202
        return self.metrics.batch_size.labels(step).observe

    # -- steps run in the worker threads, one batch at a time ----------------------------------
    def _search(
        self, answerer: Answerer, items: list[tuple[str, int, list | None, dict | None]]
    ) -> list[tuple]:
        """(vector, hits) per (question, k, cached vector or None, document filter): one encode
        call, then one search per k and filter."""
        missing = [i for i, item in enumerate(items) if item[2] is None]
        vectors = [None if v is None else np.asarray(v, dtype=np.float32) for _, _, v, _ in items]
        if missing:
            started = time.perf_counter()
            encoded = answerer.embed([items[i][0] for i in missing])
            self.metrics.step_seconds.labels("embed").observe(time.perf_counter() - started)
            for i, vector in zip(missing, encoded, strict=True):
                vectors[i] = vector
        started = time.perf_counter()
        results: list[tuple] = [None] * len(items)
        groups: dict[bytes, list[int]] = {}
        for i, (_, k, _, where) in enumerate(items):
            groups.setdefault(orjson.dumps([k, where], option=orjson.OPT_SORT_KEYS), []).append(i)
        for rows in groups.values():
            _, k, _, where = items[rows[0]]
            questions, stacked = [items[i][0] for i in rows], np.stack([vectors[i] for i in rows])
            hits = answerer.retrieve(questions, k, stacked, where)
            for i, row in zip(rows, hits, strict=True):
                results[i] = (vectors[i], row)
        self.metrics.step_seconds.labels("retrieve").observe(time.perf_counter() - started)
        return results

    def _generate(self, owner: Any, items: list[tuple[str | None, str, list[str]]]) -> list[str]:
        """Answers for (slot, prompt, passages) items on one model (`Answerer.batch_owner`)."""
        started = time.perf_counter()
        answers = owner.generate_slots(items, self.settings.max_new_tokens)
        self.metrics.step_seconds.labels("generate").observe(time.perf_counter() - started)
        return answers

    # -- request flow --------------------------------------------------------------------------
    def scope(self, answerer: Answerer) -> tuple[str, str]:
        """Cache keys' versions: the registered model, its versions and the forgotten documents
        (replicas of different corpus lineages may share one Redis)."""
        adapter, index = answerer.cache_scope
        name = self.served_name(answerer)
        label = self.model_name if name == self.names.adapter else name  # a domain's own entries
        return f"{label}.{adapter}", index

    def serving(self, model: str | None = None) -> Answerer:
        """The answerer of the adapter `model` names (None: the main one); 404 for an adapter not
        served here, 503 for one not loaded."""
        promoter = self.promoters.get(model or self.names.adapter)
        if promoter is None:
            served = ", ".join(repr(name) for name in self.promoters)
            raise RequestError(404, f"model {model!r} is not served here; served: {served} or 'auto'")
        answerer = promoter.current
        if answerer is None:
            raise RequestError(503, f"no model loaded: {promoter.problem}")
        return answerer

    async def routed(self, main: Answerer, question: str, k: int, where: dict | None = None) -> Answerer:
        """`model: auto`: the adapter of the domain most of the `main` adapter's top passages for
        the question come from (ties: the higher-ranked), else `main`."""
        if not self.domains:
            return main
        found, _ = await self.sources(main, question, k, where)
        votes: dict[str, int] = {}
        for source in found:
            domain = source.get("domain")
            if domain:
                votes[domain] = votes.get(domain, 0) + 1
        if not votes:
            return main
        domain = max(votes, key=votes.get)  # dicts keep rank order, and max keeps the first of equals
        chosen = self.domains.get(self.names.of_domain(domain).adapter)
        return chosen.current if chosen is not None and chosen.current is not None else main

    def checked(self, question: str, k: int | None, answerer: Answerer) -> tuple[str, int]:
        """The stripped question and the k to use; RequestError (422) past a limit."""
        limits = self.settings.limits
        try:
            question.encode("utf-8")
        except UnicodeEncodeError as exc:  # a lone surrogate (JSON allows "\ud800"; UTF-8 does not)
            raise RequestError(
                422, f"question is not valid Unicode text: a lone surrogate at character {exc.start}"
            ) from None
        question = question.strip(WHITE_SPACE)
        if not question:
            raise RequestError(422, "question is empty")
        if len(question) > limits.max_question_chars:
            raise RequestError(
                422, f"question is {len(question)} characters; the limit is {limits.max_question_chars}"
            )
        k = answerer.k if k is None else k
        if not 1 <= k <= limits.max_k:
            raise RequestError(422, f"k must be between 1 and {limits.max_k} (got {k})")
        return question, k

    async def chosen(
        self, model: str | None, question: str, k: int | None, where: dict | None = None
    ) -> tuple[Answerer, str, int]:
        """The answerer a request's `model` names (auto: routed by the question's passages), with
        the checked question and k."""
        if model != AUTO:
            answerer = self.serving(model)
            return answerer, *self.checked(question, k, answerer)
        main = self.serving()
        question, k = self.checked(question, k, main)
        return await self.routed(main, question, k, where), question, k

    async def sources(
        self, answerer: Answerer, question: str, k: int, where: dict | None = None
    ) -> tuple[list[dict], str | None]:
        """The k passages (with text) for a question among the documents `where` admits (the
        API key's filter; None: all), from a cache tier or the index."""
        key = cache_key("retrieval", self.scope(answerer), question, k, *filtered(where))
        cached, tier = await self.cache.get("retrieval", key)
        if cached is not None:
            return cached, tier
        vector_key = cache_key("embedding", self.scope(answerer), question)
        vector, _ = await self.cache.get("embedding", vector_key)
        encoded, hits = await self.searcher.submit(answerer, (question, k, vector, where))
        if vector is None:
            await self.cache.put("embedding", vector_key, encoded.tolist())
        found = answerer.sources(hits)
        for source, hit in zip(found, hits, strict=True):
            source["text"], source["domain"] = hit.payload["text"], hit.payload.get("domain")
        await self.cache.put("retrieval", key, found)
        return found, None

    def answer_key(self, answerer: Answerer, question: str, k: int, where: dict | None = None) -> str:
        """The cache key of the answer to a checked question for a key's document filter (the
        fast path looks it up too)."""
        abstain = self.settings.abstain
        rule = () if abstain.mode == "off" else (abstain.model_dump(),)  # answers depend on it
        parts = (question, k, self.settings.max_new_tokens, *filtered(where), *rule)
        return cache_key("answer", self.scope(answerer), *parts)

    async def unrelated(self, answerer: Answerer, question: str, texts: list[str]) -> str | None:
        """Why to abstain before generating (`serve.abstain.mode: similarity`), or None."""
        if self.settings.abstain.mode != "similarity":
            return None
        loop = asyncio.get_running_loop()
        vectors = await loop.run_in_executor(self.model_pool, answerer.embed, [question, *texts])
        return similarity_reason(self.settings.abstain, vectors)

    def abstained(self, reason: str | None) -> dict[str, Any]:
        """The fields an answer carries about abstention (the message replaces a withheld answer)."""
        if reason is None:
            return {"abstained": False}
        return {"answer": self.settings.abstain.message, "abstained": True, "reason": reason}

    def served_name(self, answerer: Answerer) -> str:
        """The registered adapter an answerer serves."""
        return answerer.registered_name or self.names.adapter

    async def answer(
        self, answerer: Answerer, question: str, k: int, where: dict | None = None, who: Caller | None = None
    ) -> dict[str, Any]:
        """The answer with its sources and versions, from a cache tier or generated; `who` asked
        (the audit log's line)."""
        key = self.answer_key(answerer, question, k, where)
        cached, tier = await self.cache.get("answer", key)
        if cached is not None:
            self.audit.record(who, self.served_name(answerer), question, {**cached, "cache": tier}, None)
            return {**cached, "cache": tier}
        found, _ = await self.sources(answerer, question, k, where)
        texts = [s["text"] for s in found]
        text, reason = "", await self.unrelated(answerer, question, texts)
        if reason is None:
            prompt = answerer.model.prompt(question, texts)
            text = await self.generator.submit(answerer.batch_owner, (answerer.slot, prompt, texts))
            reason = support_reason(self.settings.abstain, text, texts)
        result = {"answer": text, "sources": public(found), **answerer.version_fields()}
        result |= self.abstained(reason)
        await self.cache.put("answer", key, result)
        self.audit.record(who, self.served_name(answerer), question, {**result, "cache": None}, texts)
        return {**result, "cache": None}

    async def pieces(
        self, answerer: Answerer, question: str, k: int, where: dict | None = None, who: Caller | None = None
    ) -> AsyncIterator[tuple[str, Any]]:
        """("sources", the public sources), then ("token", text piece) as the answer is generated,
        and ("abstained", reason) where `serve.abstain` withholds the answer: instead of the tokens
        (similarity), or after them (support)."""
        started = time.perf_counter()
        found, _ = await self.sources(answerer, question, k, where)
        yield "sources", public(found)
        texts = [s["text"] for s in found]
        reason = await self.unrelated(answerer, question, texts)
        if reason is not None:
            self._audit_stream(who, answerer, question, found, "", reason, texts)
            yield "abstained", reason
            return
        prompt = answerer.model.prompt(question, texts)
        pieces = answerer.stream(prompt, texts, self.settings.max_new_tokens, self.model_pool)
        loop, first, answer = asyncio.get_running_loop(), True, ""
        while (piece := await loop.run_in_executor(None, next, pieces, None)) is not None:
            if first:
                self.metrics.step_seconds.labels("first_token").observe(time.perf_counter() - started)
                first = False
            answer += piece
            yield "token", piece
        reason = support_reason(self.settings.abstain, answer.strip(), texts)
        self._audit_stream(who, answerer, question, found, answer.strip(), reason, texts)
        if reason is not None:
            yield "abstained", reason

    def _audit_stream(
        self,
        who: Caller | None,
        answerer: Answerer,
        question: str,
        found: list[dict],
        answer: str,
        reason: str | None,
        texts: list[str],
    ) -> None:
        """The audit line of a streamed answer."""
        result = {"answer": answer, "sources": found, **answerer.version_fields(), "cache": None}
        self.audit.record(who, self.served_name(answerer), question, result | self.abstained(reason), texts)

    async def stream(
        self, answerer: Answerer, question: str, k: int, where: dict | None = None, who: Caller | None = None
    ) -> AsyncIterator[bytes]:
        """Server-sent events: `sources`, then `token` pieces, then `done` with the whole answer
        (the abstention message and reason where `serve.abstain` withheld it)."""
        answer, reason = "", None
        async for kind, value in self.pieces(answerer, question, k, where, who):
            if kind == "sources":
                yield event("sources", {"sources": value, **answerer.version_fields()})
            elif kind == "abstained":
                reason = value
            else:
                answer += value
                yield event("token", {"text": value})
        done = {"answer": answer.strip(), **answerer.version_fields(), **self.abstained(reason)}
        yield event("done", done)


def served_domains(settings: ServeSettings, tracking_uri: str, names: ModelNames) -> list[str]:
    """The domains whose adapters this service serves (`serve.domain_adapters`); none on llama.cpp
    (one adapter per model there) or when the registry cannot be asked."""
    wanted = settings.domain_adapters
    if wanted == "none":
        return []
    if settings.engine != "torch":
        log.warning("serve.domain_adapters needs the torch engine; serving %s only", names.adapter)
        return []
    if isinstance(wanted, list):
        return wanted
    from mlflow.tracking import MlflowClient

    from components.registry.mlflow_registry import registered_domains

    short_registry_checks()
    try:  # a plain client: serving reads the registry, it creates no experiment
        return registered_domains(MlflowClient(tracking_uri, tracking_uri), names)
    except Exception as exc:  # noqa: BLE001 - the main adapter is served either way
        log.warning("cannot list the domain adapters of %s: %s", names.name, exc)
        return []


def asker(request: Request) -> Caller:
    """Who sends `request`, for the audit log: its endpoint and API key (kept only as an id)."""
    headers = request.headers
    return caller(request.url.path, given_key(headers.get("x-api-key"), headers.get("authorization")))


def filtered(where: dict | None) -> tuple:
    """The document filter as a part of a cache key: nothing for an unrestricted key, so its
    entries are those of an open service."""
    return () if where is None else (("where", where),)


SOURCE_FIELDS = ("chunk_id", "doc_id", "source", "page", "section", "span", "score")


def public(found: list[dict]) -> list[dict]:
    """The fields of each source a client sees (cached sources of older versions lack some)."""
    return [{key: s.get(key) for key in SOURCE_FIELDS} for s in found]


def event(name: str, data: dict) -> bytes:
    """One server-sent event."""
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


class Measure:
    """ASGI middleware: counts `/v1/` requests in flight (for batching) and times them by status."""

    def __init__(self, app: Any, service: Service) -> None:
        self.app, self.service = app, service

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """ASGI entry: count the `/v1/` request in flight and time it by status."""
        path = scope.get("path", "")
        if scope["type"] != "http" or not path.startswith("/v1/"):
            await self.app(scope, receive, send)
            return
        started, status = time.perf_counter(), 500

        async def sending(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        self.service.in_flight += 1
        try:
            await self.app(scope, receive, sending)
        finally:
            self.service.in_flight -= 1
            elapsed = time.perf_counter() - started
            self.service.metrics.request_seconds.labels(path, str(status)).observe(elapsed)


def create_app(settings: ServeSettings, tracking_uri: str, model_name: str = DEFAULT_NAME) -> FastAPI:
    """The FastAPI app serving `<model_name>-adapter`; the promoter starts loading the aliased pair
    when the app starts."""
    service = Service(settings, tracking_uri, model_name)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        service.start()
        yield
        for promoter in service.promoters.values():
            promoter.stop()
        await service.cache.close()
        service.audit.close()
        service.model_pool.shutdown(wait=False)

    app = FastAPI(title="Retro-PEFT", version="1", lifespan=lifespan)
    app.state.service = service
    keys = settings.auth.entries()
    app.add_middleware(BodySizeLimit, max_bytes=settings.limits.max_body_bytes)
    if settings.cache.fast_path:
        app.add_middleware(
            CachedAnswers, service=service, keys=keys, fields=set(AnswerRequest.model_fields)
        )  # L1 answer hits leave here
    app.add_middleware(Measure, service=service)
    limits = settings.limits
    if limits.requests_per_minute:  # outermost: a limited request costs nothing else
        buckets = TokenBuckets(limits.requests_per_minute, limits.burst)
        app.add_middleware(
            RateLimit, buckets=buckets, keyed=bool(keys), openai_paths=OPENAI_PATHS, error_body=openai_error
        )
    auth = require_api_key(keys)

    def refusal(
        request: Request, status: int, title: str, reason: str, headers: dict | None = None
    ) -> JSONResponse:
        """The service's error body, or OpenAI's on the OpenAI-compatible paths."""
        if request.url.path in OPENAI_PATHS:
            return JSONResponse(openai_error(status, title, reason), status, headers=headers)
        return JSONResponse({"error": title, "reason": reason}, status, headers=headers)

    @app.exception_handler(RequestError)
    async def request_error(request: Request, exc: RequestError) -> JSONResponse:
        return refusal(request, exc.status, exc.title, exc.reason, exc.headers)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        """Starlette's own refusals (a body that cannot be parsed, a wrong method) in our shape."""
        title = HTTPStatus(exc.status_code).phrase.lower()
        return refusal(request, exc.status_code, title, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        reasons = [
            f"{'.'.join(str(p) for p in e['loc'] if p != 'body') or 'body'}: {said(e)}" for e in exc.errors()
        ]
        return refusal(request, 422, "invalid request", "; ".join(reasons))

    @app.exception_handler(Exception)
    async def internal(request: Request, exc: Exception) -> JSONResponse:
        log.exception("request to %s failed", request.url.path, exc_info=exc)
        return JSONResponse({"error": "internal error", "reason": type(exc).__name__}, 500)

    Retrieve, Answer = limited_requests(settings.limits)  # noqa: N806 - request body classes

    async def answer(
        body: AnswerRequest,
        request: Request,
        where: dict | None = Depends(auth),  # noqa: B008
    ) -> Response:
        who = asker(request)
        answerer, question, k = await service.chosen(body.model, body.question, body.k, where)
        if body.stream:
            events = service.stream(answerer, question, k, where, who)
            return StreamingResponse(events, media_type="text/event-stream")
        result = await service.answer(answerer, question, k, where, who)
        return Response(orjson.dumps(result), media_type="application/json")

    async def retrieve(body: RetrieveRequest, where: dict | None = Depends(auth)) -> Response:  # noqa: B008
        answerer, question, k = await service.chosen(body.model, body.question, body.k, where)
        found, tier = await service.sources(answerer, question, k, where)
        result = {"sources": public(found), **answerer.version_fields(), "cache": tier}
        return Response(orjson.dumps(result), media_type="application/json")

    # the bodies with this service's limits (classes made here, so they are set on the functions
    # rather than written in their signatures, which FastAPI resolves at module level)
    answer.__annotations__["body"], retrieve.__annotations__["body"] = Answer, Retrieve
    gate = ([401] if keys else []) + ([429] if limits.requests_per_minute else [])  # the /v1/ paths
    refused = sorted([400, 404, 413, 422, 503, *gate])
    app.post("/v1/answer", responses=documented_refusals(refused))(answer)
    app.post("/v1/retrieve", responses=documented_refusals(refused))(retrieve)
    add_openai_routes(app, service, auth, asker, refused)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", responses={503: {"description": "not ready: no pair is loaded yet, and why"}})
    async def readyz() -> JSONResponse:
        current = service.promoter.current
        worker = os.getpid()  # with `retro serve --workers N`, each worker answers for itself
        if current is None:
            return JSONResponse(
                {"status": "not ready", "reason": service.promoter.problem, "worker_pid": worker}, 503
            )
        adapters = {
            name: promoter.current.adapter_version if promoter.current else f"not loaded: {promoter.problem}"
            for name, promoter in service.promoters.items()
        }
        return JSONResponse(
            {
                "status": "ready",
                "alias": settings.alias,
                "worker_pid": worker,
                **current.version_fields(),
                "adapters": adapters,
            }
        )

    @app.get("/metrics")
    async def metrics() -> Response:
        current = service.promoter.current
        if current is not None and current.model.uses_memory:
            service.metrics.show_chunk_kv(current.chunk_kv_counters())
        return Response(service.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    return app


def create_app_from_env() -> FastAPI:
    """The app for `uvicorn --factory` workers; `retro serve` passes its settings in the env."""
    raw = json.loads(os.environ[SETTINGS_ENV])
    settings = ServeSettings.model_validate(raw["serve"])
    return create_app(settings, raw["tracking_uri"], raw.get("model_name", DEFAULT_NAME))
