"""One adapter per domain on one base model, against the running service: register gates and
registers each domain's adapter as `retro-adapter-<domain>` linked to the shared index; the
service serves all four beside the main one, each answers with its own adapter over its own
domain's passages, a mixed batch equals the same requests one by one, `model: auto` routes by the
question's passages, and promoting one domain's adapter leaves the others on their versions."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import openai
import pytest
from registry_project import make_project, write_evaluation
from serving_helpers import LiveService

from components.data.domains import write_domains
from components.registry import mlflow_registry as reg
from components.registry.lineage import lineage
from components.serving.answerer import Answerer
from components.serving.settings import ServeSettings
from components.stages import register
from tests.conftest import run_stage
from tests.fixtures.tiny_model import random_adapter

DOMAINS = ["law", "medicine", "finance", "research"]
TEXTS = [
    "Zorvex is made by Talmir Labs.",
    "The Varnholt Act dates from 1999.",
    "Quillan tablets treat the Merrow fever.",
    "Dosing of Quillan is twice a day.",
    "Orbell Works pays a dividend of 4 percent.",
    "The Kesta fund holds Orbell Works bonds.",
    "The Aston lab studies Zorvex coatings.",
    "Mirelle leads the Aston lab.",
]
TEXT_DOMAINS = ["law", "law", "medicine", "medicine", "finance", "finance", "research", "research"]
QUESTION = {"law": "Who makes Zorvex?", "medicine": "What do Quillan tablets treat?"}


@pytest.fixture(scope="module")
def registered(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> dict:
    """The main adapter and four domain adapters registered by the register stage, all champion."""
    root = tmp_path_factory.mktemp("domains")
    uri = f"sqlite:///{root}/mlruns/mlflow.db"
    metadata = [{"domain": d} for d in TEXT_DOMAINS]
    layout = make_project(root / "project", tiny_model, texts=TEXTS, metadata=metadata)
    for seed, domain in enumerate(DOMAINS):
        own = layout.for_domain(domain)
        random_adapter(tiny_model, own.current_adapter, seed=40 + seed, domain=domain)
        write_evaluation(own, 0.5)
    write_domains(layout.domain_adapters, DOMAINS, {})
    write_evaluation(layout, 0.5)
    result = run_stage(register, {"register": {"tracking_uri": uri}}, layout.root)
    client = reg.configure(uri)
    for name in ["retro-adapter", *(f"retro-adapter-{d}" for d in DOMAINS)]:
        client.set_registered_model_alias(name, "champion", "1")
    return {"root": root, "uri": uri, "layout": layout, "result": result}


@pytest.fixture(scope="module")
def live(registered: dict):  # noqa: ANN201
    settings = ServeSettings.model_validate(
        {
            "poll_seconds": 0.2,
            "download_dir": str(registered["root"] / "serving"),
            "max_new_tokens": 4,
            "batching": {"max_batch": 8, "max_wait_ms": 400},
        }
    )
    service = LiveService(settings, registered["uri"]).start()
    deadline = time.monotonic() + 120
    while any(p.current is None for p in service.service.promoters.values()):
        assert time.monotonic() < deadline, "the domain adapters did not load"
        time.sleep(0.1)
    yield service
    service.stop()


def alone(registered: dict, domain: str, question: str) -> dict:
    """The answer of one domain adapter served alone on its own base model (the reference)."""
    layout = registered["layout"]
    answerer = Answerer(layout.for_domain(domain).current_adapter, layout.index)
    return answerer.answer(question, max_new_tokens=4)


def test_register_gates_and_links_each_domain_adapter(registered: dict) -> None:
    domains = registered["result"]["domains"]
    assert sorted(domains) == sorted(DOMAINS)
    index_version = registered["result"]["index_version"]
    client = reg.configure(registered["uri"])
    for domain in DOMAINS:
        assert domains[domain]["index_version"] == index_version  # the one shared index
        version = client.get_model_version(f"retro-adapter-{domain}", "1")
        assert version.tags["index_version"] == str(index_version)
    assert reg.registered_domains(client, reg.ModelNames("retro")) == sorted(DOMAINS)
    record = lineage(client, "1", names=reg.ModelNames("retro", "law"))  # `retro lineage --domain law 1`
    assert record["model"] == "retro-adapter-law" and record["index_version"] == str(index_version)
    assert "error" not in record["index"]


def test_each_domain_adapter_answers_with_its_own_adapter_and_passages(
    live: LiveService, registered: dict
) -> None:
    listed = httpx.get(f"{live.url}/v1/models", timeout=30).json()["data"]
    assert [m["id"] for m in listed] == ["retro-adapter", *(f"retro-adapter-{d}" for d in sorted(DOMAINS))]
    assert {m.get("domain") for m in listed[1:]} == set(DOMAINS)
    answers = {}
    for domain in DOMAINS:
        body = {"question": QUESTION["law"], "model": f"retro-adapter-{domain}"}
        got = httpx.post(f"{live.url}/v1/answer", json=body, timeout=60).json()
        chunk_domain = {f"c{i + 1}": d for i, d in enumerate(TEXT_DOMAINS)}
        assert {chunk_domain[s["chunk_id"]] for s in got["sources"]} == {domain}
        assert got["answer"] == alone(registered, domain, QUESTION["law"])["answer"]
        answers[domain] = got["answer"]
    assert len(set(answers.values())) > 1  # their weights differ, so do their answers


def test_a_mixed_batch_equals_the_requests_one_by_one(live: LiveService, registered: dict) -> None:
    question = "Who leads the Aston lab?"
    histogram = live.service.metrics.registry

    def batches() -> tuple[float, float]:
        labels = {"step": "generate"}
        total = histogram.get_sample_value("retro_batch_size_sum", labels) or 0.0
        return total, histogram.get_sample_value("retro_batch_size_count", labels) or 0.0

    async def together() -> list[dict]:
        async with httpx.AsyncClient(timeout=60) as client:
            asks = [
                client.post(
                    f"{live.url}/v1/answer", json={"question": question, "model": f"retro-adapter-{d}"}
                )
                for d in DOMAINS
            ]
            return [r.json() for r in await asyncio.gather(*asks)]

    before = batches()
    mixed = asyncio.run(together())
    after = batches()
    assert after[0] - before[0] == len(DOMAINS) and after[1] - before[1] < len(DOMAINS)  # shared batches
    assert [m["answer"] for m in mixed] == [alone(registered, d, question)["answer"] for d in DOMAINS]


def test_auto_routes_by_the_domain_of_the_top_passages(live: LiveService) -> None:
    client = openai.OpenAI(base_url=f"{live.url}/v1", api_key="none", max_retries=0, timeout=60)
    for domain, question in QUESTION.items():
        reply = client.chat.completions.create(model="auto", messages=[{"role": "user", "content": question}])
        assert reply.model == f"retro-adapter-{domain}"
        named = client.completions.create(model=f"retro-adapter-{domain}", prompt=question)
        assert named.choices[0].text == reply.choices[0].message.content
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="retro-adapter-astrology", prompt=QUESTION["law"])


def test_promoting_one_domain_adapter_leaves_the_others(live: LiveService, registered: dict) -> None:
    client = reg.configure(registered["uri"])
    first = client.get_model_version("retro-adapter-law", "1")
    second = client.create_model_version("retro-adapter-law", first.source, first.run_id, tags=first.tags)
    client.set_registered_model_alias("retro-adapter-law", "champion", second.version)
    deadline = time.monotonic() + 60
    while True:
        listed = {m["id"]: m for m in httpx.get(f"{live.url}/v1/models", timeout=30).json()["data"]}
        if listed["retro-adapter-law"].get("adapter_version") == str(second.version):
            break
        assert time.monotonic() < deadline, "the law adapter was not promoted"
        time.sleep(0.1)
    assert {name: m["adapter_version"] for name, m in listed.items() if name != "retro-adapter-law"} == {
        "retro-adapter": "1",
        **{f"retro-adapter-{d}": "1" for d in DOMAINS if d != "law"},
    }
    body = {"question": QUESTION["medicine"], "model": "retro-adapter-law"}
    got = httpx.post(f"{live.url}/v1/answer", json=body, timeout=60).json()
    assert got["adapter_version"] == str(second.version)
    assert got["answer"] == alone(registered, "law", QUESTION["medicine"])["answer"]
