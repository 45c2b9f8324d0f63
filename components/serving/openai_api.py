"""The OpenAI-compatible API beside `/v1/answer`: `GET /v1/models`, `POST /v1/chat/completions` and
`POST /v1/completions`, so clients and tools that speak OpenAI's API (its Python client, LangChain,
LlamaIndex) query the served adapter unchanged.

A request names a served adapter (`<name>-adapter`, or a domain's `<name>-adapter-<domain>`, as
`/v1/models` lists them) or `auto`, which picks the domain adapter of the question's top passages. The
question is the last user message with text (chat) or the prompt (completions); the service retrieves for
it and answers exactly as `/v1/answer` does, through the same caches and batchers. The sources
and versions ride in extra fields (`sources`, `adapter_version`, `index_version`), which OpenAI
clients keep without looking at. Decoding is greedy, so `temperature`, `top_p` and `seed` are
accepted and change nothing; `max_tokens` cuts the answer (a greedy answer's first n tokens are
what n tokens of generation give), up to `serve.max_new_tokens`. Errors have OpenAI's shape.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any

import orjson
from fastapi import Depends, FastAPI, Request
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, StrictBool, TypeAdapter, create_model

from components.serving.limits import (
    NUMBER,
    WHITE_SPACE,
    RequestError,
    documented_refusals,
    limited_fields,
)
from components.serving.settings import LimitSettings

AUTO = "auto"
OPENAI_PATHS = ("/v1/models", "/v1/chat/completions", "/v1/completions")


class ChatMessage(BaseModel):
    """One message of an OpenAI chat request."""

    model_config = ConfigDict(extra="allow")
    role: str
    content: str | list[dict[str, Any]] | None = None


class CompletionFields(BaseModel):
    """What both endpoints share; OpenAI's other fields (logprobs, tools, ...) are not served and
    are ignored."""

    model_config = ConfigDict(extra="allow")
    model: str = Field(description="the served adapter's name (GET /v1/models) or auto")
    stream: StrictBool = False
    max_tokens: Annotated[int, Field(ge=1), NUMBER] | None = None
    max_completion_tokens: Annotated[int, Field(ge=1), NUMBER] | None = None
    n: Annotated[int, Field(ge=1, le=1), NUMBER] = Field(1, description="one answer per request (greedy)")
    temperature: Annotated[float, NUMBER] | None = None
    top_p: Annotated[float, NUMBER] | None = None
    seed: Annotated[int, NUMBER] | None = None
    k: Annotated[int, Field(ge=1), NUMBER] | None = Field(
        None, description="passages (default: the adapter's)"
    )


class ChatRequest(CompletionFields):
    """Body of `/v1/chat/completions`."""

    messages: list[ChatMessage] = Field(min_length=1)


class CompletionRequest(CompletionFields):
    """Body of `/v1/completions`."""

    prompt: str | list[str]


class OpenAIErrorDetail(BaseModel):
    """The `error` object of an OpenAI error response."""

    message: str = Field(description="what was wrong, for a person to fix")
    type: str = Field(description="OpenAI's error type: invalid_request_error, authentication_error, ...")
    param: str | None = None
    code: str = Field(description="the kind of refusal (the HTTP status phrase, with underscores)")


class OpenAIRefusal(BaseModel):
    """OpenAI's error body."""

    error: OpenAIErrorDetail


def limited_openai_requests(limits: LimitSettings) -> tuple[type[ChatRequest], type[CompletionRequest]]:
    """The request bodies with the service's limits in their schema: the k range, one prompt with
    text, at least one user message with text (the handlers check the same again)."""
    text, k = limited_fields(limits)
    one = Annotated[list[text], Field(min_length=1, max_length=1)]
    content = TypeAdapter(text).json_schema()  # the question's own constraints, stated once
    user = {"type": "object", "properties": {"role": {"const": "user"}, "content": content}}
    messages = Annotated[
        list[ChatMessage],
        Field(min_length=1, json_schema_extra={"contains": user | {"required": ["role", "content"]}}),
    ]
    chat = create_model("ChatRequest", __base__=ChatRequest, k=(k, None), messages=(messages, ...))
    return chat, create_model(
        "CompletionRequest", __base__=CompletionRequest, k=(k, None), prompt=(text | one, ...)
    )


def openai_error(status: int, title: str, reason: str) -> dict[str, Any]:
    """OpenAI's error body: its clients read `error.message`."""
    kind = {401: "authentication_error", 404: "invalid_request_error", 429: "rate_limit_error"}.get(
        status, "invalid_request_error" if status < 500 else "server_error"
    )
    return {"error": {"message": reason, "type": kind, "param": None, "code": title.replace(" ", "_")}}


def last_user_text(messages: list[ChatMessage]) -> str:
    """The text of the last user message that has text (string content, or its text parts)."""
    for message in reversed(messages):
        if message.role != "user":
            continue
        if isinstance(message.content, str):
            text = message.content
        else:
            text = "\n".join(p.get("text", "") for p in message.content or [] if p.get("type") == "text")
        if text.strip(WHITE_SPACE):
            return text
    raise RequestError(422, "messages: no message with role 'user' and text to answer")


def prompt_text(prompt: str | list[str]) -> str:
    """The single prompt of a completion request; a list of several is refused."""
    if isinstance(prompt, str):
        return prompt
    if len(prompt) != 1:
        raise RequestError(422, f"prompt: one prompt per request (got {len(prompt)})")
    return prompt[0]


class OpenAIRoutes:
    """The three endpoints over a `Service` (components/serving/app.py)."""

    def __init__(self, service: Any) -> None:
        self.service = service

    def token_limit(self, body: CompletionFields) -> int:
        """The request's answer-length limit, capped by the service's."""
        asked = body.max_completion_tokens or body.max_tokens
        ceiling = self.service.settings.max_new_tokens
        return ceiling if asked is None else min(asked, ceiling)

    def models(self) -> dict[str, Any]:
        """Every served adapter (the main one first) with the versions it serves now."""
        entries = []
        for name, promoter in self.service.promoters.items():
            answerer = promoter.current
            versions = {} if answerer is None else answerer.version_fields()
            domain = {} if answerer is None or answerer.domain is None else {"domain": answerer.domain}
            entries.append(
                {"id": name, "object": "model", "created": 0, "owned_by": "retro-peft", **versions, **domain}
            )
        return {"object": "list", "data": entries}

    async def complete(
        self, body: CompletionFields, question: str, chat: bool, where: dict | None = None, who: Any = None
    ) -> Response:
        """The answer to `question` among the documents `where` admits (the API key's filter);
        `who` asked (the audit log's line)."""
        service = self.service
        answerer, question, k = await service.chosen(body.model, question, body.k, where)
        model = answerer.registered_name or service.names.adapter
        limit = self.token_limit(body)
        ident = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex[:24]}"
        head = {
            "id": ident,
            "object": "chat.completion" if chat else "text_completion",
            "created": int(time.time()),
            "model": model,
        }
        if body.stream:
            chunks = self.chunks(head, answerer, question, (k, where, who), limit, chat)
            return StreamingResponse(chunks, media_type="text/event-stream")
        result = await service.answer(answerer, question, k, where, who)
        text, finish = cut(answerer.model.tokenizer, result["answer"], limit)
        if result.get("abstained"):
            text, finish = result["answer"], "stop"  # the message whole, never cut
        choice: dict[str, Any] = {"index": 0, "finish_reason": finish}
        if chat:
            choice["message"] = {"role": "assistant", "content": text}
        else:
            choice |= {"text": text, "logprobs": None}
        extra = {"sources": result["sources"], **answerer.version_fields()}
        extra |= {key: result[key] for key in ("abstained", "reason") if key in result}
        return Response(orjson.dumps({**head, "choices": [choice], **extra}), media_type="application/json")

    async def chunks(
        self, head: dict[str, Any], answerer: Any, question: str, scope: tuple, limit: int, chat: bool
    ) -> AsyncIterator[bytes]:
        """OpenAI's server-sent chunks: the first carries the sources, the last the finish reason,
        then `data: [DONE]`."""
        head = {**head, "object": "chat.completion.chunk" if chat else "text_completion"}
        count, finish, held = 0, "stop", ""  # whitespace held back: the answer is sent stripped
        abstained: dict[str, Any] = {"abstained": False}

        def chunk(text: str | None, ending: str | None = None, **extra: Any) -> bytes:
            if chat:
                delta = {} if text is None else {"content": text}
                choice = {"index": 0, "delta": delta, "finish_reason": ending}
            else:
                choice = {"index": 0, "text": text or "", "logprobs": None, "finish_reason": ending}
            return b"data: " + orjson.dumps({**head, "choices": [choice], **extra}) + b"\n\n"

        async for kind, value in self.service.pieces(answerer, question, *scope):
            if kind == "sources":
                extra = {"sources": value, **answerer.version_fields()}
                first = {
                    **head,
                    "choices": [{"index": 0, "delta": {"role": "assistant"}, "finish_reason": None}],
                }
                yield (b"data: " + orjson.dumps({**first, **extra}) + b"\n\n") if chat else chunk("", **extra)
                continue
            if kind == "abstained":
                abstained = self.service.abstained(value)
                if not count:  # withheld before any token: the message is the answer
                    yield chunk(abstained["answer"])
                continue
            if count == limit:
                finish = "length"
                continue  # drain the generation so its thread finishes
            text = held + value if count else (held + value).lstrip()
            sent = text.rstrip()
            held = text[len(sent) :]
            if sent:
                count += 1
                yield chunk(sent)
        abstained.pop("answer", None)
        yield chunk(None, finish, **abstained)
        yield b"data: [DONE]\n\n"


def cut(tokenizer: Any, answer: str, limit: int) -> tuple[str, str]:
    """The answer's first `limit` tokens and OpenAI's finish reason (length when cut)."""
    ids = tokenizer(answer, add_special_tokens=False)["input_ids"]
    if len(ids) <= limit:
        return answer, "stop"
    return tokenizer.decode(ids[:limit], skip_special_tokens=True).strip(), "length"


def add_openai_routes(
    app: FastAPI, service: Any, auth: Callable[..., Any], asker: Callable[..., Any], refused: list[int]
) -> None:
    """The endpoints above on `app`, behind the service's API keys; `asker(request)` says who
    asked, for the audit log; `refused`: the statuses their schema documents."""
    routes = OpenAIRoutes(service)
    Chat, Completion = limited_openai_requests(service.settings.limits)  # noqa: N806 - body classes
    gate = documented_refusals([s for s in refused if s in (401, 429)], OpenAIRefusal)

    @app.get("/v1/models", dependencies=[Depends(auth)], responses=gate)
    async def models() -> dict[str, Any]:
        return routes.models()

    async def asked(request: Request, where: dict | None = Depends(auth)) -> tuple:  # noqa: B008
        """The key's document filter and who asked (the audit log's caller)."""
        return where, asker(request)

    async def chat_completions(body: ChatRequest, scope: tuple = Depends(asked)) -> Response:  # noqa: B008
        return await routes.complete(body, last_user_text(body.messages), True, *scope)

    async def completions(body: CompletionRequest, scope: tuple = Depends(asked)) -> Response:  # noqa: B008
        return await routes.complete(body, prompt_text(body.prompt), False, *scope)

    # the bodies with this service's limits, set on the functions as in components/serving/app.py
    chat_completions.__annotations__["body"], completions.__annotations__["body"] = Chat, Completion
    refusals = documented_refusals(refused, OpenAIRefusal)
    app.post("/v1/chat/completions", responses=refusals)(chat_completions)
    app.post("/v1/completions", responses=refusals)(completions)
