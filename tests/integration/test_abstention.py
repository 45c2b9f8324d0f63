"""Answers that admit what they do not know (`serve.abstain`, components/evaluation/abstention.py),
against the running service: a question its documents answer gets an answer, one they do not
gets the abstention message with the reason, on /v1/answer, its stream and the OpenAI API."""

from __future__ import annotations

from pathlib import Path

import httpx
import openai
import orjson
import pytest
from serving_helpers import LiveService, serve_registered

from components.core.serve_params import AbstainSettings
from components.evaluation.abstention import support_reason

ANSWERED = "Who makes Zorvex?"
UNRELATED = "What is the boiling point of mercury in kelvin?"
MESSAGE = "Not in the documents."


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path):  # noqa: ANN201
    abstain = {"mode": "similarity", "threshold": 0.4, "message": MESSAGE}
    serve = {"max_new_tokens": 4, "abstain": abstain}
    service, _ = serve_registered(tmp_path_factory.mktemp("abstain"), tiny_model, serve)
    yield service
    service.stop()


def test_the_service_abstains_on_what_its_documents_do_not_cover(live: LiveService) -> None:
    answered = httpx.post(f"{live.url}/v1/answer", json={"question": ANSWERED}, timeout=60).json()
    assert answered["abstained"] is False and answered["answer"] != MESSAGE
    unrelated = httpx.post(f"{live.url}/v1/answer", json={"question": UNRELATED}, timeout=60).json()
    assert unrelated["abstained"] is True and unrelated["answer"] == MESSAGE
    assert "similarity to the question is" in unrelated["reason"] and unrelated["sources"]
    again = httpx.post(f"{live.url}/v1/answer", json={"question": UNRELATED}, timeout=60).json()
    assert again["cache"] == "l1" and again["abstained"] is True

    streamed = httpx.post(f"{live.url}/v1/answer", json={"question": UNRELATED, "stream": True}, timeout=60)
    events = [block.split("\n") for block in streamed.text.strip().split("\n\n")]
    assert [lines[0] for lines in events] == ["event: sources", "event: done"]  # no token generated
    done = orjson.loads(events[-1][1].removeprefix("data: "))
    assert done["abstained"] is True and done["answer"] == MESSAGE

    client = openai.OpenAI(base_url=f"{live.url}/v1", api_key="unused", max_retries=0, timeout=60)
    chat = client.chat.completions.create(model="auto", messages=[{"role": "user", "content": UNRELATED}])
    assert chat.choices[0].message.content == MESSAGE and chat.model_extra["abstained"] is True
    chunks = list(
        client.chat.completions.create(
            model="auto", messages=[{"role": "user", "content": UNRELATED}], stream=True
        )
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == MESSAGE
    assert chunks[-1].model_extra["abstained"] is True


def test_support_withholds_an_answer_whose_words_are_not_in_the_passages() -> None:
    rule = AbstainSettings(mode="support", threshold=0.5)
    passages = ["Zorvex is made by Talmir Labs."]
    assert support_reason(rule, "Talmir Labs", passages) is None
    assert "0% of the answer's content words" in support_reason(rule, "Orbell Works", passages)
    assert support_reason(rule, "Talmir Works", passages) is None  # half the words: at the threshold
    assert support_reason(AbstainSettings(mode="off"), "Orbell Works", passages) is None


def test_evaluation_figures_count_abstentions_and_score_the_answers_given() -> None:
    from components.evaluation.abstention import abstention_figures

    rule = AbstainSettings(mode="support", threshold=1.0)
    figures = abstention_figures(
        rule,
        ["Who makes Zorvex?", "Where is Quillan?"],
        [["Zorvex is made by Talmir Labs."], ["Quillan is in Norway."]],
        ["Talmir Labs", "Sweden"],  # the second answer is not in its passage
        ["Talmir Labs", "Norway"],
        embed=lambda texts: None,  # support needs no embedding
    )
    assert figures == {
        "mode": "support",
        "threshold": 1.0,
        "abstained": 0.5,
        "answers_given": 1,
        "em_given": 1.0,
        "f1_given": 1.0,
    }
