"""Documents each API key may see (`serve.auth.api_keys_file` with a filter per key): against the
running service, with the L1 cache and the fast path on, a key restricted to one tenant never
receives a source, an answer or a cached answer built from another tenant's documents, on every
endpoint, whichever key asks first."""

from __future__ import annotations

from pathlib import Path

import httpx
import openai
import pytest
from serving_helpers import LiveService, serve_registered

from components.core.serve_params import AuthSettings

TEXTS = [
    "Zorvex is made by Talmir Labs.",
    "Zorvex is made by Orbell Works.",
    "The Varnholt Act dates from 1999.",
    "Quillan is in Norway.",
]
TENANTS = ["acme", "zenith", "acme", "zenith"]
KEYS = {"sk-acme": "acme", "sk-zenith": "zenith"}
QUESTION = "Who makes Zorvex?"


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path):  # noqa: ANN201
    root = tmp_path_factory.mktemp("filters")
    keys = root / "keys.txt"
    keys.write_text(
        "# key, then the documents it may see\n"
        + "".join(f'{key} {{"tenant": "{tenant}"}}\n' for key, tenant in KEYS.items())
        + "sk-all\n"
    )
    serve = {"max_new_tokens": 4, "auth": {"api_keys_file": str(keys), "api_keys_env": "RETRO_TEST_NO_KEYS"}}
    metadata = [{"tenant": t} for t in TENANTS]
    service, _ = serve_registered(root, tiny_model, serve, texts=TEXTS, metadata=metadata)
    yield service
    service.stop()


def tenants_of(sources: list[dict]) -> set[str]:
    chunk_tenant = {f"c{i + 1}": t for i, t in enumerate(TENANTS)}
    return {chunk_tenant[s["chunk_id"]] for s in sources}


def ask(live: LiveService, key: str, path: str = "/v1/answer", **body: object) -> dict:
    response = httpx.post(
        f"{live.url}{path}", json={"question": QUESTION, **body}, headers={"X-API-Key": key}, timeout=60
    )
    assert response.status_code == 200, response.text
    return response.json()


@pytest.mark.parametrize("order", [("sk-acme", "sk-zenith"), ("sk-zenith", "sk-acme")])
def test_a_key_sees_only_its_tenants_documents_in_either_order(live: LiveService, order: tuple) -> None:
    question_variant = f"{QUESTION} ({'-'.join(order)})"  # a fresh cache entry for each order
    first_key, second_key = order
    first = ask(live, first_key, question=question_variant)
    assert first["cache"] is None and tenants_of(first["sources"]) == {KEYS[first_key]}
    again = ask(live, first_key, question=question_variant)
    assert again["cache"] == "l1" and again["sources"] == first["sources"]  # the key's own cached answer
    second = ask(live, second_key, question=question_variant)
    assert second["cache"] is None  # not the other tenant's cached answer
    assert tenants_of(second["sources"]) == {KEYS[second_key]}
    retrieved = ask(live, second_key, "/v1/retrieve", question=question_variant, k=4)
    assert tenants_of(retrieved["sources"]) == {KEYS[second_key]} and len(retrieved["sources"]) == 2
    streamed = httpx.post(
        f"{live.url}/v1/answer",
        json={"question": question_variant, "stream": True},
        headers={"X-API-Key": second_key},
        timeout=60,
    ).text
    assert f'"chunk_id":"c{TENANTS.index(KEYS[first_key]) + 1}"' not in streamed


def test_openai_clients_and_unrestricted_keys(live: LiveService) -> None:
    client = openai.OpenAI(base_url=f"{live.url}/v1", api_key="sk-zenith", max_retries=0, timeout=60)
    chat = client.chat.completions.create(model="auto", messages=[{"role": "user", "content": QUESTION}])
    assert tenants_of(chat.model_extra["sources"]) == {"zenith"}
    chunks = list(client.completions.create(model="auto", prompt=QUESTION, stream=True))
    assert tenants_of(chunks[0].model_extra["sources"]) == {"zenith"}
    everything = ask(live, "sk-all", "/v1/retrieve", k=4)
    assert tenants_of(everything["sources"]) == {"acme", "zenith"}


def test_a_malformed_filter_is_refused_with_its_line(tmp_path: Path) -> None:
    keys = tmp_path / "keys.txt"
    keys.write_text('sk-ok {"tenant": "acme"}\nsk-secret {"tenant": }\n')
    with pytest.raises(ValueError, match=r"keys.txt:2: the document filter is not JSON") as caught:
        AuthSettings(api_keys_file=str(keys), api_keys_env="RETRO_TEST_NO_KEYS").entries()
    assert "sk-secret" not in str(caught.value)
    keys.write_text('sk-ok ["acme"]\n')
    with pytest.raises(ValueError, match="must be a JSON object of metadata values"):
        AuthSettings(api_keys_file=str(keys), api_keys_env="RETRO_TEST_NO_KEYS").entries()
    keys.write_text('sk-a {"domain": ["law", "finance"]}\nsk-b\n')
    entries = AuthSettings(api_keys_file=str(keys), api_keys_env="RETRO_TEST_NO_KEYS").entries()
    assert entries == {b"sk-a": {"domain": ["law", "finance"]}, b"sk-b": None}
