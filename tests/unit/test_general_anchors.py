"""General anchors on a tiny random model: the base model's answers with the adapter off, as
closed-book training examples, whatever the adapter has learned; cut answers keep whole
sentences; the count is bounded."""

from __future__ import annotations

import pytest

from components.adapters.generation import generate
from components.continual.anchors import ANCHOR_QUESTIONS, _whole_sentences, general_anchors
from tests.unit.test_regularizers import _model, _nudge, model_dir  # noqa: F401 (the fixture)


def test_anchors_are_the_base_models_answers_not_the_adapters(model_dir) -> None:  # noqa: ANN001, F811
    model = _model(model_dir)
    _nudge(model, scale=2.0)  # an adapter far from the base model
    anchors = general_anchors(model, 4, max_new_tokens=6)
    prompts = [model.prompt(q, []) for q in ANCHOR_QUESTIONS[:4]]
    with model.base_only():
        base = generate(model, prompts, 6, 8, [[] for _ in prompts])
    adapted = generate(model, prompts, 6, 8, [[] for _ in prompts])
    assert base != adapted  # the adapter changes the answers, so the check below can fail
    expected = [(q, _whole_sentences(a)) for q, a in zip(ANCHOR_QUESTIONS[:4], base, strict=True)]
    assert [(e.question, e.answer) for e in anchors] == [(q, a) for q, a in expected if a]
    assert all(e.passages == [] and e.qid.startswith("anchor-") for e in anchors)  # closed book


def test_cut_answers_keep_whole_sentences_and_the_count_is_bounded(model_dir) -> None:  # noqa: ANN001, F811
    assert _whole_sentences("Paris") == "Paris"
    assert _whole_sentences("The capital is Paris. It lies on the Seine and") == "The capital is Paris."
    assert _whole_sentences("The story of Romeo and Juliet by William Shakespeare is set in") == ""
    model = _model(model_dir)
    assert general_anchors(model, 0) == []
    with pytest.raises(ValueError, match="between 0 and 24"):
        general_anchors(model, len(ANCHOR_QUESTIONS) + 1)
