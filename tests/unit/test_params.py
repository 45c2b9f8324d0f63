"""The whole params.yaml as one model (components/core/params.py): every section validated, unknown
sections and keys named with the closest valid one, overrides checked before anything is written."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from components.core.config import PARAMS_READ, ParamsError, apply_overrides
from components.core.params import load_params, parse_params
from tests.conftest import ROOT

BIN = Path(sys.executable).parent


def test_the_repository_params_file_is_valid() -> None:
    params = load_params(ROOT / "params.yaml")
    assert (
        params.adapter_train.method == "lora"
        and params.layout(".").metrics_of("adapter-train").name == "train.json"
    )


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"adapter_train": {"steps": 5}}, "adapter_train: unknown section; did you mean adapter-train?"),
        (
            {"adapter-train": {"stpes": 5}},
            "adapter-train.stpes: unknown key; did you mean adapter-train.steps?",
        ),
        (
            {"index": {"sharding": {"shard": 2}}},
            "index.sharding.shard: unknown key; did you mean index.sharding.shards?",
        ),
        ({"retreival": {"k": 5}}, "did you mean retrieval?"),
        (
            {"adapter-train": {"supervision": {"weight": 0.0}}},
            "adapter-train.supervision was removed: the adapter's own reranker",
        ),
        (
            {"adapter-train": {"fusion": {"fusion": "gated", "rank": 16}}},
            "adapter-train.fusion.rank was removed: it configured the retired low-rank cross-attention",
        ),
        (
            {"adapter-train": {"fusion": {"fusion": "cross_attention"}}},
            "adapter-train.fusion.fusion: Value error, fusion cross_attention was retired",
        ),
        (
            {"evaluate": {"max_questions": -1}},
            "evaluate.max_questions: Input should be greater than or equal to 0",
        ),
    ],
)
def test_unknown_or_bad_keys_name_the_closest_valid_one(data: dict, message: str) -> None:
    with pytest.raises(ParamsError) as err:
        parse_params(data)
    assert message in str(err.value)


def test_reads_are_recorded_per_key() -> None:
    PARAMS_READ.clear()
    params = parse_params({"retrieval": {"k": 4}})
    assert params.retrieval.k == 4 and params.index.sharding.active is False
    params.chunk.model_dump()
    assert {"retrieval.k", "index.sharding.shards", "chunk.max_tokens", "chunk.overlap"} <= PARAMS_READ
    assert "retrieval.mode" not in PARAMS_READ


def test_a_bad_override_leaves_params_yaml_byte_identical(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    shutil.copy(ROOT / "params.yaml", path)
    before = path.read_bytes()
    for bad in (
        ["evaluate.max_questions=-3"],
        ["adapter_train.steps=5"],
        ["retrieval.k=5", "chunk.overlap=900"],
    ):
        with pytest.raises(ParamsError):
            apply_overrides(path, bad, check=parse_params)
        assert path.read_bytes() == before
    apply_overrides(path, ["retrieval.k=5"], check=parse_params)
    assert load_params(path).retrieval.k == 5


def _project(tmp_path: Path) -> Path:
    for name in ("params.yaml", "dvc.yaml"):
        shutil.copy(ROOT / name, tmp_path / name)
    return tmp_path


def test_retro_pipeline_refuses_a_bad_set_before_writing(tmp_path: Path) -> None:
    root = _project(tmp_path)
    before = (root / "params.yaml").read_bytes()
    proc = subprocess.run(
        [str(BIN / "retro"), "pipeline", "-S", "adapter_train.steps=5"],
        cwd=root,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and "did you mean adapter-train?" in proc.stderr
    assert (root / "params.yaml").read_bytes() == before


def test_a_stage_reports_a_yaml_syntax_error_with_its_position(tmp_path: Path) -> None:
    root = _project(tmp_path)
    (root / "params.yaml").write_text("model:\n  seed: 0\nretrieval:\n  k: [3\n")
    proc = subprocess.run(
        [str(BIN / "python"), "-m", "components.stages.chunk"], cwd=root, capture_output=True, text=True
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "params.yaml:5:1: YAML syntax error" in proc.stderr, proc.stderr


def test_a_stage_refuses_an_unknown_key_in_the_file(tmp_path: Path) -> None:
    root = _project(tmp_path)
    text = (root / "params.yaml").read_text().replace("  steps: null ", "  stepz: null ")
    (root / "params.yaml").write_text(text)
    proc = subprocess.run(
        [str(BIN / "python"), "-m", "components.stages.ingest"], cwd=root, capture_output=True, text=True
    )
    assert (
        proc.returncode == 2
        and "adapter-train.stepz: unknown key; did you mean adapter-train.steps?" in proc.stderr
    )


def test_a_bare_off_means_the_option_off_not_false() -> None:
    import yaml

    from components.core.params import parse_params

    parsed = parse_params(yaml.safe_load("ingest: {ocr: off}\nadapter-train: {synthesize: off}\n"))
    assert parsed.ingest.ocr == "off" and parsed.adapter_train.synthesize.mode == "off"
    for word in ("on", "off"):
        assert parse_params(yaml.safe_load(f"retrieval: {{finetune: {word}}}")).retrieval.finetune == word
    nested = parse_params({"adapter-train": {"synthesize": {"mode": "always", "max_chunks": 5}}})
    assert (
        nested.adapter_train.synthesize.mode == "always" and nested.adapter_train.synthesize.max_chunks == 5
    )
