"""benchmarks/gpu_scale.py in its CPU mode (the 135M configuration, short sequences), so the
script a lent GPU runs cannot rot: every method is tried, LoRA trains only the adapter and
needs less memory than full fine-tuning, and what the CPU cannot run says why."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from benchmarks.gpu_scale import main

CPU_MODE = ["--device", "cpu", "--sizes", "135m", "--seq-len", "64", "--batch", "1", "--steps", "1",
            "--concurrency", "2", "--prompt-len", "16", "--new-tokens", "2"]  # fmt: skip


@pytest.mark.skipif(torch.cuda.is_available(), reason="the quantized rows run where there is a GPU")
def test_the_cpu_mode_measures_every_method_or_says_why_not(tmp_path: Path) -> None:
    main([*CPU_MODE, "--out", str(tmp_path / "scale")])
    report = json.loads((tmp_path / "scale.json").read_text())
    rows = {r["method"]: r for r in report["rows"]}
    assert list(rows) == ["full", "lora", "lora_gc", "lora_int8", "lora_nf4", "serve c=2"]
    full, lora, checkpointed = rows["full"], rows["lora"], rows["lora_gc"]
    assert full["status"] == lora["status"] == checkpointed["status"] == "ok"
    assert full["trainable"] == 134_515_008  # every weight of SmolLM2-135M (tied embeddings)
    assert lora["trainable"] == checkpointed["trainable"] == 460_800  # r=8 on q_proj and v_proj, 30 layers
    assert lora["peak_gb"] < full["peak_gb"] and lora["tokens_per_s"] > 0
    for quantized in ("lora_int8", "lora_nf4"):
        assert rows[quantized]["status"].startswith("not run: model.quantization:")
        assert "needs a CUDA GPU" in rows[quantized]["status"]
    assert rows["serve c=2"]["answers_per_s"] > 0 and rows["serve c=2"]["ttft_s"] > 0
    table = (tmp_path / "scale.md").read_text()
    assert "| 135m | lora | 460,800 |" in table and "| 135m | lora_nf4 | - |" in table
