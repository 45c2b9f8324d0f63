"""The inference service on loopback against a real MLflow store (and a real redis-server):
answers with sources and versions, hot promotion under load, refusal of a broken pair, the Redis
tier, and clear 4xx errors for bad input and wrong keys."""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from pathlib import Path

import httpx
import openai
import orjson
import pytest
from registry_project import make_project, register_pair
from serving_helpers import LiveService, RedisServer

from components.registry import mlflow_registry as reg
from components.serving.audit import key_id as audit_id
from components.serving.settings import ServeSettings

QUESTION = {"question": "Who makes Zorvex?"}


@pytest.fixture()
def registry(tmp_path: Path, tiny_model: Path) -> dict:
    """Two linked pairs: v1 (index of 2 passages, alias champion) and v2 (index of 3 passages)."""
    uri = f"sqlite:///{tmp_path}/mlruns/mlflow.db"
    params = {"register": {"tracking_uri": uri}}
    first = register_pair(make_project(tmp_path / "p1", tiny_model), params, 0.5)
    texts = ["Zorvex is made by Orbell Works.", "The Varnholt Act dates from 2004.", "Quillan is in Norway."]
    second = register_pair(make_project(tmp_path / "p2", tiny_model, texts, "def456"), params, 0.7)
    client = reg.configure(uri)
    client.set_registered_model_alias(reg.ADAPTER_MODEL, "champion", first["adapter_version"])
    return {"uri": uri, "client": client, "v1": first, "v2": second, "root": tmp_path}


def settings(root: Path, **changes: object) -> ServeSettings:
    base = {"poll_seconds": 0.2, "download_dir": str(root / "serving"), "max_new_tokens": 4}
    return ServeSettings.model_validate({**base, **changes})


@pytest.fixture()
def service(registry: dict):  # noqa: ANN201
    live = LiveService(settings(registry["root"]), registry["uri"]).start()
    yield live
    live.stop()


def sha(body: dict) -> str:
    return hashlib.sha256(body["question"].encode()).hexdigest()


def versions(result: dict) -> tuple[str, str]:
    return result["adapter_version"], result["index_version"]


def pair(registered: dict) -> tuple[str, str]:
    return str(registered["adapter_version"]), str(registered["index_version"])


def test_answers_come_with_sources_versions_and_metrics(registry: dict, service: LiveService) -> None:
    first = httpx.post(f"{service.url}/v1/answer", json=QUESTION, timeout=60)
    assert first.status_code == 200, first.text
    body = first.json()
    assert isinstance(body["answer"], str) and body["cache"] is None
    assert versions(body) == pair(registry["v1"])
    assert [s["doc_id"] for s in body["sources"]] == ["a", "b"]
    assert set(body["sources"][0]) == {"chunk_id", "doc_id", "source", "page", "section", "span", "score"}
    again = httpx.post(f"{service.url}/v1/answer", json=QUESTION).json()
    assert again["cache"] == "l1" and again["answer"] == body["answer"]

    retrieved = httpx.post(f"{service.url}/v1/retrieve", json={**QUESTION, "k": 1}).json()
    assert [s["chunk_id"] for s in retrieved["sources"]] == [body["sources"][0]["chunk_id"]]

    varnholt = {"question": "When is the Varnholt Act from?"}
    streamed = httpx.post(f"{service.url}/v1/answer", json={**varnholt, "stream": True})
    events = [block.split("\n") for block in streamed.text.strip().split("\n\n")]
    names = [lines[0].removeprefix("event: ") for lines in events]
    data = [orjson.loads(lines[1].removeprefix("data: ")) for lines in events]
    assert names[0] == "sources" and names[-1] == "done" and set(names[1:-1]) <= {"token"}
    assert data[-1]["answer"] == "".join(d["text"] for d in data[1:-1]).strip()
    plain = httpx.post(f"{service.url}/v1/answer", json=varnholt).json()
    assert plain["answer"] == data[-1]["answer"]  # streaming and batched generation agree
    again = httpx.post(f"{service.url}/v1/answer", json={**varnholt, "stream": True}).text
    assert again == streamed.text  # the second stream reuses the passages' key/values, same tokens

    metrics = httpx.get(f"{service.url}/metrics").text
    for needle in (
        'retro_step_seconds_count{step="embed"}',
        'retro_step_seconds_count{step="generate"}',
        'retro_step_seconds_count{step="first_token"}',
        'retro_cache_lookups_total{kind="answer",result="hit",tier="l1"} 1.0',
        'retro_cache_lookups_total{kind="prefix_kv",result="hit",tier="prefix"} 1.0',
        f'retro_loaded_version{{adapter_version="{pair(registry["v1"])[0]}",alias="champion",',
    ):
        assert needle in metrics
    assert httpx.get(f"{service.url}/healthz").json() == {"status": "ok"}


def test_promotion_under_load_switches_with_zero_failures(registry: dict, service: LiveService) -> None:
    questions = [f"Who makes Zorvex, question {i}?" for i in range(400)]
    seen: list[tuple[float, tuple[str, str]]] = []
    failures: list[str] = []
    moved, stop = threading.Event(), threading.Event()

    def load(offset: int) -> None:
        with httpx.Client(timeout=60) as client:
            for i in range(offset, len(questions), 4):
                if stop.is_set():
                    return
                response = client.post(f"{service.url}/v1/answer", json={"question": questions[i]})
                if response.status_code != 200:
                    failures.append(f"{response.status_code} {response.text}")
                    continue
                seen.append((moved.is_set(), versions(response.json())))

    threads = [threading.Thread(target=load, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    while len(seen) < 20:
        threading.Event().wait(0.05)
    # the call the MLflow UI makes when a person moves the alias
    client = registry["client"]
    client.set_registered_model_alias(reg.ADAPTER_MODEL, "champion", registry["v2"]["adapter_version"])
    moved.set()
    deadline = threading.Event()
    for _ in range(600):
        if sum(1 for after, v in seen if after and v == pair(registry["v2"])) >= 20:
            break
        deadline.wait(0.1)
    stop.set()
    for thread in threads:
        thread.join()

    assert failures == []
    assert {v for after, v in seen if not after} == {pair(registry["v1"])}
    assert {v for _, v in seen} == {pair(registry["v1"]), pair(registry["v2"])}  # never a mixed pair
    last = [v for _, v in seen[-10:]]
    assert set(last) == {pair(registry["v2"])}
    assert httpx.get(f"{service.url}/readyz").json()["adapter_version"] == pair(registry["v2"])[0]


def test_a_version_whose_index_is_missing_is_refused(
    registry: dict, service: LiveService, caplog: pytest.LogCaptureFixture
) -> None:
    client = registry["client"]
    client.delete_model_version(reg.INDEX_MODEL, registry["v2"]["index_version"])
    client.set_registered_model_alias(reg.ADAPTER_MODEL, "champion", registry["v2"]["adapter_version"])
    with caplog.at_level(logging.ERROR, logger="components.serving.promotion"):
        assert service.service.promoter.poll() == "refused"
    assert "not in the registry" in caplog.text and "still serving" in caplog.text
    body = httpx.post(f"{service.url}/v1/answer", json=QUESTION, timeout=60).json()
    assert versions(body) == pair(registry["v1"])
    assert 'retro_promotions_total{outcome="refused"}' in httpx.get(f"{service.url}/metrics").text


def test_redis_tier_answers_after_an_l1_miss(registry: dict, tmp_path: Path) -> None:
    redis = RedisServer(tmp_path)
    shared = settings(registry["root"], cache={"redis_url": redis.url})
    replicas = [LiveService(shared, registry["uri"]).start() for _ in range(2)]
    try:
        first = httpx.post(f"{replicas[0].url}/v1/answer", json=QUESTION, timeout=60).json()
        other = httpx.post(f"{replicas[1].url}/v1/answer", json=QUESTION, timeout=60).json()
        assert (first["cache"], other["cache"]) == (None, "l2")
        assert other["answer"] == first["answer"] and versions(other) == versions(first)
        assert httpx.post(f"{replicas[1].url}/v1/answer", json=QUESTION).json()["cache"] == "l1"
        redis.stop()  # a Redis outage costs the tier, not the request
        down = httpx.post(f"{replicas[1].url}/v1/answer", json={"question": "Is Quillan real?"}, timeout=60)
        assert down.status_code == 200 and down.json()["cache"] is None
        assert 'tier="l2"} ' in httpx.get(f"{replicas[1].url}/metrics").text
    finally:
        for replica in replicas:
            replica.stop()
        if redis.process.poll() is None:
            redis.stop()


def test_bad_requests_and_wrong_keys_get_4xx_with_a_reason(
    registry: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RETRO_API_KEYS", "k-one, k-two")
    limits = {"max_body_bytes": 512, "max_question_chars": 50, "max_k": 5}
    folder = str(registry["root"] / "serving-limits")  # its own audit log
    live = LiveService(
        settings(registry["root"], limits=limits, download_dir=folder), registry["uri"]
    ).start()
    url, key = f"{live.url}/v1/answer", {"X-API-Key": "k-two"}
    try:
        cases = [
            ({}, QUESTION, 401, "missing API key"),
            ({"X-API-Key": "k-three"}, QUESTION, 401, "invalid API key"),
            ({"Authorization": "Bearer k-on"}, QUESTION, 401, "invalid API key"),
            (key, {"question": "x" * 51}, 422, "question: String should have at most 50 characters"),
            (key, {"question": "   "}, 422, "question is empty"),
            (key, {**QUESTION, "k": 6}, 422, "k: Input should be less than or equal to 5"),
            (key, {**QUESTION, "k": 0}, 422, "k: Input should be greater than or equal to 1"),
            (key, {}, 422, "question: Field required"),
            (key, {**QUESTION, "k": "many"}, 422, "k:"),
            (key, {**QUESTION, "temperature": 2}, 422, "temperature: Extra inputs"),
            (key, {"question": "y" * 600}, 413, "over 512 bytes"),
        ]
        for headers, body, status, reason in cases:
            response = httpx.post(url, json=body, headers=headers, timeout=60)
            assert response.status_code == status, (body, response.text)
            assert reason in response.json()["reason"], response.text
            assert "Traceback" not in response.text
        broken = httpx.post(url, content=b"{not json", headers={**key, "Content-Type": "application/json"})
        assert broken.status_code == 422 and "JSON" in broken.json()["reason"]
        lone = {"question": "\ud800", "prompt": "\udfff", "messages": [{"role": "user", "content": "\ud800"}]}
        fields = {"/v1/answer": "question", "/v1/retrieve": "question", "/v1/completions": "prompt"}
        for path in (*fields, "/v1/chat/completions"):  # every endpoint; json.dumps escapes it as \ud800
            field = fields.get(path, "messages")
            body = {field: lone[field]} | ({"model": "auto"} if "completions" in path else {})
            raw = {**key, "Content-Type": "application/json"}
            refused = httpx.post(f"{live.url}{path}", content=json.dumps(body), headers=raw, timeout=60)
            invalid = (
                "lone surrogate" in refused.text or "unable to parse raw data as a unicode" in refused.text
            )
            assert refused.status_code == 422 and invalid, (path, refused.text)
        for odd in ("Who makes\u200f Zorvex?\x07", "\u202eZorvex\u0000?"):  # RTL marks, controls
            assert httpx.post(url, json={"question": odd}, headers=key, timeout=60).status_code == 200
        ok = httpx.post(url, json=QUESTION, headers={"Authorization": "Bearer k-one"}, timeout=60)
        assert ok.status_code == 200
        cached = httpx.post(url, json=QUESTION, headers=key)
        assert cached.json()["cache"] == "l1"
        for headers, body, status, reason in cases:  # with the answer cached, the same refusals
            response = httpx.post(url, json=body, headers=headers, timeout=60)
            assert response.status_code == status and reason in response.json()["reason"], response.text
        assert httpx.get(f"{live.url}/readyz").status_code == 200  # probes need no key
        audited = [json.loads(line) for line in (registry["root"] / "serving-limits" / "audit.jsonl").open()]
        answered = 1 + 1 + 2  # the first answer, its cached repeat, the two odd questions
        assert len(audited) == answered and {line["key_id"] for line in audited} >= {audit_id("k-one")}
        text = json.dumps(audited)
        assert "k-one" not in text and "k-two" not in text and "Zorvex" not in text  # no key, no question
        assert [line["cache"] for line in audited if line["question_sha256"] == sha(QUESTION)] == [None, "l1"]
        assert all(line["adapter_version"] and line["sources"] for line in audited)
        gauges = httpx.get(f"{live.url}/metrics").text
        assert 'retro_answer_support{model="retro-adapter"}' in gauges
        assert 'retro_abstention_rate{model="retro-adapter"} 0.0' in gauges
    finally:
        live.stop()


def test_not_ready_until_an_alias_exists(registry: dict) -> None:
    live = LiveService(settings(registry["root"], alias="nobody"), registry["uri"]).start(ready=False)
    try:
        assert live.service.promoter.poll() == "missing"
        ready = httpx.get(f"{live.url}/readyz")
        assert ready.status_code == 503 and "alias 'nobody'" in ready.json()["reason"]
        answer = httpx.post(f"{live.url}/v1/answer", json=QUESTION)
        assert answer.status_code == 503 and "no model loaded" in answer.json()["reason"]
    finally:
        live.stop()


def test_retro_serve_runs_several_workers(registry: dict, tmp_path: Path) -> None:
    import os
    import subprocess
    import sys
    import time
    from concurrent.futures import ThreadPoolExecutor

    import psutil
    from serving_helpers import free_port

    params = tmp_path / "params.yaml"
    params.write_text(f"serve:\n  download_dir: {tmp_path / 'dl'}\n  poll_seconds: 0.5\n")
    port = free_port()
    command = [sys.executable, "-m", "components.cli", "serve", "--workers", "2", "--port", str(port)]
    command += ["--tracking-uri", registry["uri"], "--params", str(params), "--log-level", "warning"]
    root = Path(__file__).resolve().parents[2]
    server = subprocess.Popen(command, cwd=root, env={**os.environ, "PYTHONPATH": str(root)})
    try:
        waiting: dict[int, str] = {}  # worker pid -> why it is not ready yet

        def ready_worker(_: int) -> int | None:
            try:
                answer = httpx.get(f"http://127.0.0.1:{port}/readyz")
            except httpx.TransportError:
                return None
            if answer.status_code != 200:
                waiting[answer.json()["worker_pid"]] = answer.json()["reason"]
                return None
            return answer.json()["worker_pid"]

        deadline, ready = time.monotonic() + 240, set()
        with ThreadPoolExecutor(8) as pool:  # concurrent connections reach both workers
            while len(ready) < 2 and time.monotonic() < deadline:  # each worker has said it is ready
                ready |= set(pool.map(ready_worker, range(8))) - {None}
                time.sleep(0.1)
        assert len(ready) == 2, f"retro serve --workers 2 did not become ready: {ready}, {waiting}"
        assert ready <= {child.pid for child in psutil.Process(server.pid).children()}
        with httpx.Client(timeout=60) as client:
            answers = [client.post(f"http://127.0.0.1:{port}/v1/answer", json=QUESTION) for _ in range(8)]
        assert {a.status_code for a in answers} == {200}
        assert {versions(a.json()) for a in answers} == {pair(registry["v1"])}
    finally:
        server.terminate()
        assert server.wait(timeout=60) is not None


def test_llamacpp_engine_streams_caches_and_follows_promotion(
    registry: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("llama_cpp", reason="the llama.cpp engine needs the cpu-engine extra (make install)")
    monkeypatch.setenv("RETRO_GGUF_CACHE", str(tmp_path / "gguf"))
    engine = {"engine": "llamacpp", "llamacpp": {"weights": "f32", "threads": 1, "context_tokens": 256}}
    live = LiveService(settings(registry["root"], **engine), registry["uri"]).start()
    torch_live = LiveService(
        settings(tmp_path, download_dir=str(tmp_path / "torch")), registry["uri"]
    ).start()
    try:
        assert live.service.promoter.current.llama is not None
        varnholt = {"question": "When is the Varnholt Act from?"}
        plain = httpx.post(f"{live.url}/v1/answer", json=varnholt, timeout=60).json()
        same_on_torch = httpx.post(f"{torch_live.url}/v1/answer", json=varnholt, timeout=60).json()
        assert plain["answer"] == same_on_torch["answer"] and versions(plain) == pair(registry["v1"])
        streamed = httpx.post(f"{live.url}/v1/answer", json={**QUESTION, "stream": True}, timeout=60)
        events = [block.split("\n") for block in streamed.text.strip().split("\n\n")]
        data = [orjson.loads(lines[1].removeprefix("data: ")) for lines in events]
        assert events[0][0] == "event: sources" and events[-1][0] == "event: done"
        assert data[-1]["answer"] == "".join(d["text"] for d in data[1:-1]).strip()
        again = httpx.post(f"{live.url}/v1/answer", json={**QUESTION, "stream": True}, timeout=60).text
        assert again == streamed.text  # the passages' llama.cpp state restored: the same tokens
        assert 'kind="prefix_kv",result="hit",tier="prefix"}' in httpx.get(f"{live.url}/metrics").text

        client = registry["client"]
        client.set_registered_model_alias(reg.ADAPTER_MODEL, "champion", registry["v2"]["adapter_version"])
        for _ in range(300):
            body = httpx.post(f"{live.url}/v1/answer", json=QUESTION, timeout=60).json()
            if versions(body) == pair(registry["v2"]):
                break
            threading.Event().wait(0.1)
        assert versions(body) == pair(registry["v2"]) and len(body["sources"]) == 2
        assert live.service.promoter.current.llama is not None  # the new version on llama.cpp too
    finally:
        live.stop()
        torch_live.stop()


def test_a_key_over_its_rate_gets_429_with_retry_after_and_other_keys_do_not(
    registry: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RETRO_API_KEYS", "k-one, k-two")
    limits = {"requests_per_minute": 6, "burst": 2}  # a token every 10 s after two at once
    folder = str(registry["root"] / "serving-rate")
    live = LiveService(
        settings(registry["root"], limits=limits, download_dir=folder), registry["uri"]
    ).start()
    try:
        url = f"{live.url}/v1/retrieve"
        codes = [httpx.post(url, json=QUESTION, headers={"X-API-Key": "k-one"}).status_code for _ in range(3)]
        assert codes == [200, 200, 429]
        limited = httpx.post(f"{live.url}/v1/answer", json=QUESTION, headers={"X-API-Key": "k-one"})
        assert limited.status_code == 429 and 1 <= int(limited.headers["retry-after"]) <= 10
        assert "6 requests a minute" in limited.json()["reason"]
        assert httpx.post(url, json=QUESTION, headers={"X-API-Key": "k-two"}).status_code == 200  # its own
        client = openai.OpenAI(base_url=f"{live.url}/v1", api_key="k-one", max_retries=0)
        with pytest.raises(openai.RateLimitError):
            client.completions.create(model="auto", prompt=QUESTION["question"])
        assert httpx.get(f"{live.url}/readyz").status_code == 200  # probes are not limited
    finally:
        live.stop()
