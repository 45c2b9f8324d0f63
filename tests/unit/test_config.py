from pathlib import Path

import pytest

from components.core.config import ParamsError, apply_overrides, load_params_file, parse_section
from components.core.params import ChunkParams, RetrievalParams, TrainParams

ROOT = Path(__file__).resolve().parents[2]


def test_repo_params_are_valid_for_every_stage() -> None:
    from components.core.params import (
        ContinualParams,
        EmbedParams,
        EvaluateParams,
        IndexParams,
        IngestParams,
        RegisterParams,
    )

    data = load_params_file(ROOT / "params.yaml")
    for model, section in [
        (IngestParams, "ingest"),
        (ChunkParams, "chunk"),
        (EmbedParams, "embed"),
        (IndexParams, "index"),
        (TrainParams, "adapter-train"),
        (ContinualParams, "continual-update"),
        (EvaluateParams, "evaluate"),
        (RegisterParams, "register"),
        (RetrievalParams, "retrieval"),
    ]:
        parse_section(model, data, section)


@pytest.mark.parametrize(
    ("section", "model", "raw", "key"),
    [
        ("adapter-train", TrainParams, {"steps": -1}, "adapter-train.steps"),
        ("adapter-train", TrainParams, {"stpes": 3}, "adapter-train.stpes"),
        ("retrieval", RetrievalParams, {"mode": "fuzzy"}, "retrieval.mode"),
        ("chunk", ChunkParams, {"max_tokens": 10, "overlap": 10}, "overlap must be smaller"),
    ],
)
def test_bad_value_names_the_key(section: str, model: type, raw: dict, key: str) -> None:
    with pytest.raises(ParamsError, match=key.replace(".", r"\.")):
        parse_section(model, {section: raw}, section)


def test_overrides_keep_comments_and_parse_values(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text("# top comment\nadapter-train:\n  steps: 60  # optimiser steps\n  lr: 0.001\n")
    data = apply_overrides(path, ["adapter-train.steps=5", "ingest.source=/some/folder"])
    assert data["adapter-train"]["steps"] == 5 and data["ingest"]["source"] == "/some/folder"
    text = path.read_text()
    assert "# top comment" in text and "# optimiser steps" in text
    with pytest.raises(ParamsError, match="section.key=value"):
        apply_overrides(path, ["steps"])
