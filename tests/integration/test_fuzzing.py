"""Fuzzing the running service from its own OpenAPI schema (schemathesis) and with text the
generator misses (lone surrogates, control characters, right-to-left marks, very long strings):
every endpoint, with and without an API key, valid and invalid bodies. No request may get a
server error, and every refusal is JSON with a reason (the service's `reason`, or OpenAI's
`error.message` on its paths). The figures go to BENCHMARKS.md "Reliability"."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import (
    negative_data_rejection,
    positive_data_acceptance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.core.failures import FailureGroup
from schemathesis.generation import GenerationMode
from schemathesis.openapi import from_dict
from serving_helpers import LiveService, serve_registered

KEY = "k-fuzz"
EXAMPLES = {GenerationMode.POSITIVE: 900, GenerationMode.NEGATIVE: 300}  # per operation at most
ODD = [
    "Who is it?",
    "\ud800",
    "\udfff x",
    "a\x00b\x07c",
    "\u202eevil\u200f",
    "\u200b" * 50,
    "Zorvex " * 20_000,
    "",
    " ",
]
CONFORMANCE = [
    positive_data_acceptance,  # a request the schema allows is not refused as invalid
    negative_data_rejection,  # a request the schema forbids is refused
    status_code_conformance,  # every status answered is documented
    response_schema_conformance,  # and its body matches the documented schema
]
FUZZ = settings(deadline=None, suppress_health_check=list(HealthCheck), database=None, derandomize=True)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path):  # noqa: ANN201
    root = tmp_path_factory.mktemp("fuzz")
    keys = root / "keys.txt"
    keys.write_text(f"{KEY}\n")
    serve = {
        "max_new_tokens": 2,
        "limits": {"max_body_bytes": 300_000},
        "auth": {"api_keys_file": str(keys), "api_keys_env": "RETRO_TEST_NO_KEYS"},
    }
    service, _ = serve_registered(root, tiny_model, serve)
    yield service
    service.stop()


def refused_with_a_reason(response: requests.Response) -> bool:
    try:
        body = response.json()
    except ValueError:
        return False
    if not isinstance(body, dict):
        return False
    return bool(body.get("reason") or (body.get("error") or {}).get("message"))


def test_generated_requests_never_get_a_server_error(live: LiveService) -> None:
    schema = from_dict(live.app.openapi())
    session, statuses, failures, mismatches = requests.Session(), Counter(), [], Counter()
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode, examples in EXAMPLES.items():

            @settings(FUZZ, max_examples=examples)
            @given(
                case=operation.as_strategy(generation_mode=mode),
                with_key=st.sampled_from([True] * 4 + [False]),
            )
            def send(case, with_key: bool) -> None:  # noqa: ANN001
                headers = {"X-API-Key": KEY} if with_key else {}
                response = case.call(base_url=live.url, session=session, headers=headers, timeout=60)
                statuses[response.status_code] += 1
                try:  # the schema describes the API as it is: what it allows passes, what it forbids not
                    case.validate_response(response, checks=CONFORMANCE, headers=headers)
                except FailureGroup as group:
                    for failure in group.exceptions:
                        mismatches[type(failure).__name__] += 1
                        if len(failures) < 20:
                            failures.append(
                                (case.method, case.path, case.body, response.status_code, failure.title)
                            )
                if response.status_code >= 500 or (
                    response.status_code >= 400 and not refused_with_a_reason(response)
                ):
                    failures.append(
                        (case.method, case.path, case.body, response.status_code, response.text[:200])
                    )

            try:
                send()
            except Unsatisfiable:  # nothing to make invalid (a GET without parameters)
                assert mode is GenerationMode.NEGATIVE
    total = sum(statuses.values())
    summary = {
        "requests": total,
        "statuses": dict(sorted(statuses.items())),
        "mismatches": dict(mismatches),
        "failures": failures[:5],
    }
    print(json.dumps(summary, default=repr))
    assert not failures, summary
    assert total >= 5_000 and statuses[200] > 0.3 * total, summary  # most reach the handlers


@pytest.mark.parametrize("text", ODD, ids=[f"odd{i}" for i in range(len(ODD))])
def test_odd_text_on_every_endpoint_is_answered_or_refused_with_a_reason(
    live: LiveService, text: str
) -> None:
    bodies = {
        "/v1/answer": {"question": text},
        "/v1/retrieve": {"question": text},
        "/v1/completions": {"model": "auto", "prompt": text},
        "/v1/chat/completions": {"model": "auto", "messages": [{"role": "user", "content": text}]},
    }
    headers = {"X-API-Key": KEY, "Content-Type": "application/json"}
    for path, body in bodies.items():  # json.dumps writes a lone surrogate as \ud800, as clients do
        response = requests.post(f"{live.url}{path}", data=json.dumps(body), headers=headers, timeout=60)
        assert response.status_code < 500, (path, response.text[:300])
        assert response.status_code == 200 or refused_with_a_reason(response), (path, response.text[:300])
