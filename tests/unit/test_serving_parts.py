"""Serving parts without a model: dynamic batching, cache keys, API-key checks."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

from components.serving.batching import MicroBatcher
from components.serving.cache import cache_key
from components.serving.settings import AuthSettings, key_accepted


def test_concurrent_requests_share_a_call_but_never_across_pairs() -> None:
    calls: list[tuple[str, list[int]]] = []

    def run(owner: str, items: list[int]) -> list[int]:
        calls.append((owner, items))
        return [owner.count("x") * 100 + i for i in items]

    async def main() -> list[int]:
        pool = ThreadPoolExecutor(1)
        batcher = MicroBatcher(run, pool, max_batch=8, max_wait_ms=50, in_flight=lambda: 6)
        jobs = [batcher.submit("x" if i < 4 else "xx", i) for i in range(6)]
        return await asyncio.gather(*jobs)

    results = asyncio.run(main())
    assert results == [100, 101, 102, 103, 204, 205]
    assert sorted(calls) == [("x", [0, 1, 2, 3]), ("xx", [4, 5])]


def test_a_lone_request_does_not_wait() -> None:
    async def main() -> float:
        batcher = MicroBatcher(lambda _, items: items, ThreadPoolExecutor(1), 8, max_wait_ms=2000)
        loop = asyncio.get_running_loop()
        started = loop.time()
        assert await batcher.submit("x", 7) == 7
        return loop.time() - started

    assert asyncio.run(main()) < 0.5


def test_a_failing_batch_fails_each_of_its_requests() -> None:
    def run(_: str, items: list[int]) -> list[int]:
        raise RuntimeError("model crashed")

    async def main() -> list[object]:
        batcher = MicroBatcher(run, ThreadPoolExecutor(1), 8, 0)
        return await asyncio.gather(batcher.submit("x", 1), batcher.submit("x", 2), return_exceptions=True)

    assert [str(e) for e in asyncio.run(main())] == ["model crashed", "model crashed"]


def test_cache_keys_hold_both_versions() -> None:
    key = cache_key("answer", ("3", "7"), "Who?", 2)
    assert key.startswith("retro:answer:a3:i7:")
    assert key != cache_key("answer", ("4", "7"), "Who?", 2) != cache_key("answer", ("3", "8"), "Who?", 2)
    assert key != cache_key("answer", ("3", "7"), "Who?", 3)


def test_api_keys_from_env_and_file(tmp_path, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setenv("KEYS", "alpha, beta,")
    (tmp_path / "keys").write_text("# rotated monthly\ngamma\n\n")
    keys = AuthSettings(api_keys_env="KEYS", api_keys_file=str(tmp_path / "keys")).keys()
    assert keys == [b"alpha", b"beta", b"gamma"]
    assert key_accepted("gamma", keys) and key_accepted("alpha", keys)
    assert not key_accepted("alph", keys) and not key_accepted(None, keys) and not key_accepted("", keys)


def test_kubernetes_manifests_agree_with_the_app() -> None:
    """Probe paths exist, the ConfigMap is valid serve params, and the objects point at each other."""
    from pathlib import Path

    import yaml

    from components.serving.app import create_app
    from components.serving.settings import ServeSettings

    folder = Path(__file__).resolve().parents[2] / "infra" / "k8s"
    listed = yaml.safe_load((folder / "kustomization.yaml").read_text())["resources"]
    docs = [d for name in listed for d in yaml.safe_load_all((folder / name).read_text()) if d]
    by_kind = {(d["kind"], d["metadata"]["name"]): d for d in docs}
    config = yaml.safe_load(by_kind["ConfigMap", "retro-serve-config"]["data"]["params.yaml"])
    settings = ServeSettings.model_validate(config["serve"])
    assert settings.cache.redis_url.startswith("redis://retro-redis:6379")
    routes = {route.path for route in create_app(settings, "sqlite:///unused.db").routes}

    deployment = by_kind["Deployment", "retro-serve"]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert container[probe]["httpGet"]["path"] in routes
    assert {"/v1/answer", "/v1/retrieve", "/metrics", "/v1/chat/completions", "/v1/models"} <= routes
    assert container["args"][-1] == "/config/params.yaml"
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert by_kind["Service", "retro-serve"]["spec"]["selector"] == labels
    hpa = by_kind["HorizontalPodAutoscaler", "retro-serve"]
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert ("Service", "retro-redis") in by_kind


def test_the_schema_states_the_keys_the_limits_and_every_refusal(tmp_path) -> None:  # noqa: ANN001
    from fastapi.testclient import TestClient

    from components.serving.app import create_app
    from components.serving.settings import ServeSettings

    (tmp_path / "keys.txt").write_text("k-one\n")
    serve = {"auth": {"api_keys_file": str(tmp_path / "keys.txt")}, "limits": {"requests_per_minute": 60}}
    app = create_app(ServeSettings.model_validate(serve), f"sqlite:///{tmp_path}/mlflow.db")
    schema = app.openapi()
    assert set(schema["components"]["securitySchemes"]) == {"APIKeyHeader", "HTTPBearer"}
    for path in ("/v1/answer", "/v1/retrieve", "/v1/completions", "/v1/chat/completions"):
        operation = schema["paths"][path]["post"]
        assert operation["security"] and {"400", "401", "404", "413", "422", "429", "503"} <= set(
            operation["responses"]
        )
    question = schema["components"]["schemas"]["AnswerRequest"]["properties"]["question"]
    assert question["pattern"] and question["maxLength"] == 2000
    with TestClient(app) as client:  # no pair loaded: validation still answers, in words
        headers = {"X-API-Key": "k-one"}
        for body, reason in [
            ({"question": " \u3000\n"}, "question is empty (white space only)"),
            ({"question": "Who?", "k": True}, "k: Value error, a number, not true or false"),
            ({"question": "Who?", "stream": 0}, "stream: Input should be a valid boolean"),
        ]:
            refused = client.post("/v1/answer", json=body, headers=headers)
            assert refused.status_code == 422 and reason in refused.json()["reason"], refused.text
