"""The OpenAI-compatible API (components/serving/openai_api.py) against the running service, with
the real `openai` client: models, chat and completions, streamed and not, `model` named and
`auto`, the sources in an extra field, API keys, and OpenAI-shaped errors."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import openai
import pytest
from serving_helpers import serve_registered

KEY = "sk-test-retro"
MODEL = "retro-adapter"
VARNHOLT = "When is the Varnholt Act from?"


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path):  # noqa: ANN201
    os.environ["RETRO_TEST_OPENAI_KEYS"] = KEY  # read once, when the app is made
    serve = {"max_new_tokens": 6, "auth": {"api_keys_env": "RETRO_TEST_OPENAI_KEYS"}}
    service, registered = serve_registered(tmp_path_factory.mktemp("openai"), tiny_model, serve)
    yield service, registered
    service.stop()
    os.environ.pop("RETRO_TEST_OPENAI_KEYS")


@pytest.fixture()
def client(live) -> openai.OpenAI:  # noqa: ANN001
    return openai.OpenAI(base_url=f"{live[0].url}/v1", api_key=KEY, max_retries=0, timeout=60)


def native(live, question: str) -> dict:  # noqa: ANN001
    """The service's own answer to a question, for comparison."""
    headers = {"Authorization": f"Bearer {KEY}"}
    response = httpx.post(
        f"{live[0].url}/v1/answer", json={"question": question}, headers=headers, timeout=60
    )
    assert response.status_code == 200, response.text
    return response.json()


def test_models_list_the_served_adapter_with_its_versions(client: openai.OpenAI, live) -> None:  # noqa: ANN001
    models = client.models.list()
    assert [m.id for m in models.data] == [MODEL]
    assert models.data[0].model_extra["adapter_version"] == str(live[1]["adapter_version"])


@pytest.mark.parametrize("model", [MODEL, "auto"])
def test_chat_and_completions_answer_as_the_service_does(client: openai.OpenAI, live, model: str) -> None:  # noqa: ANN001
    expected = native(live, VARNHOLT)
    assert expected["answer"]
    chat = client.chat.completions.create(
        model=model,
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": VARNHOLT}],
    )
    assert chat.model == MODEL and chat.object == "chat.completion"
    assert chat.choices[0].message.role == "assistant"
    assert chat.choices[0].message.content == expected["answer"]
    assert chat.choices[0].finish_reason == "stop"
    extra = chat.model_extra
    assert [s["doc_id"] for s in extra["sources"]] == [s["doc_id"] for s in expected["sources"]]
    assert extra["adapter_version"] == str(live[1]["adapter_version"])

    completion = client.completions.create(model=model, prompt=VARNHOLT)
    assert completion.choices[0].text == expected["answer"]
    assert completion.model_extra["sources"] == extra["sources"]


def test_streams_give_the_same_answer_in_openai_chunks(client: openai.OpenAI, live) -> None:  # noqa: ANN001
    question = "Who makes Zorvex?"
    expected = native(live, question)["answer"]
    assert len(expected.split()) >= 2  # a few tokens to stream (the tiny model answers 6 tokens)
    stream = client.chat.completions.create(
        model="auto", messages=[{"role": "user", "content": question}], stream=True
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant" and chunks[0].model_extra["sources"]
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == expected
    assert chunks[-1].choices[0].finish_reason == "stop"

    pieces = list(client.completions.create(model=MODEL, prompt=question, stream=True))
    assert "".join(p.choices[0].text for p in pieces) == expected


def test_max_tokens_cuts_the_answer(client: openai.OpenAI, live) -> None:  # noqa: ANN001
    full = native(live, VARNHOLT)["answer"]
    short = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": VARNHOLT}], max_tokens=1
    )
    assert short.choices[0].finish_reason == "length"
    assert full.startswith(short.choices[0].message.content) and short.choices[0].message.content != full


def test_refusals_are_openai_errors(client: openai.OpenAI, live) -> None:  # noqa: ANN001
    with pytest.raises(openai.NotFoundError, match="not served here"):
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": VARNHOLT}])
    with pytest.raises(openai.UnprocessableEntityError, match="no message with role 'user'"):
        client.chat.completions.create(model=MODEL, messages=[{"role": "system", "content": "hello"}])
    with pytest.raises(openai.UnprocessableEntityError, match="question is empty"):
        client.completions.create(model=MODEL, prompt="   ")
    stranger = openai.OpenAI(base_url=f"{live[0].url}/v1", api_key="sk-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError, match="invalid API key"):
        stranger.models.list()
