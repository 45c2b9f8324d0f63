"""The ONNX embedding engine (`embed.backend: onnx`): the sentence-transformers embedder exported
once with `torch.onnx.export` (transformer, mean or CLS pooling and normalisation in one graph)
and run with onnxruntime, optionally int8 (`embed.quantize: int8`, onnxruntime's dynamic
quantization of the weights).

Exports are cached by the embedder's content hash (the packaged or fine-tuned weights) under
`RETRO_ONNX_CACHE` (default `data/cache/onnx`, outside git), so each embedder is exported once
per machine and the embed stage and serving load the same file.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np

BACKENDS = ("torch", "onnx", "onnx-int8")
"""Embedding engines: eager PyTorch (sentence-transformers), ONNX float32, ONNX with int8 weights."""
CACHE_ENV = "RETRO_ONNX_CACHE"
DEFAULT_CACHE = Path("data/cache/onnx")
MODEL_FILE = "model.onnx"
OPSET = 17


def backend_name(backend: str, quantize: str) -> str:
    """The engine for params `embed.backend` and `embed.quantize` (one of BACKENDS; EmbedParams
    refuses int8 without onnx)."""
    if backend == "torch":
        return "torch"
    return "onnx-int8" if quantize == "int8" else "onnx"


def cache_root() -> Path:
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE)


def embedder_hash(source: Path) -> str:
    """A content hash of an embedder folder: a fine-tuned one's recorded hash, else its files'."""
    from components.embed.encoder import model_version
    from components.embed.finetune import model_hash

    return model_version(str(source)) or model_hash(source)


def pooled_module(transformer, pooling: str):  # noqa: ANN001, ANN201
    """The transformer with the embedder's pooling (`mean` or `cls`) and L2 normalisation, as
    one torch module for export."""
    import torch

    class Pooled(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.transformer = transformer

        def forward(self, input_ids, attention_mask):  # noqa: ANN001, ANN202
            hidden = self.transformer(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            if pooling == "cls":
                vector = hidden[:, 0]
            else:
                mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
                vector = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(vector, dim=-1)

    return Pooled().eval()


def pooling_of(model) -> str:  # noqa: ANN001
    """`mean` or `cls`: the pooling of a sentence-transformers model; other poolings are refused."""
    modes = [getattr(m, "pooling_mode", "mean") for m in model if type(m).__name__ == "Pooling"]
    mode = modes[0] if modes else "mean"
    if mode not in ("mean", "cls"):
        raise ValueError(f"embed.backend onnx exports mean or cls pooling; this embedder pools by {mode!r}")
    return mode


def export_embedder(source: str, target: Path, quantize: bool) -> Path:
    """Export the sentence-transformers model at `source` to `target`/model.onnx with its
    tokenizer, int8-quantized when asked; written to a staging folder and renamed when complete."""
    from components.embed.encoder import load_embedder

    model = load_embedder(source)
    staging = Path(tempfile.mkdtemp(prefix=".export-", dir=target.parent))
    root = logging.getLogger()  # the exporter's tracer warnings and the quantizer's advice are noise here
    level = root.level
    try:
        root.setLevel(logging.ERROR)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _write_export(model, staging, quantize)
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
    finally:
        root.setLevel(level)
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _write_export(model, folder: Path, quantize: bool) -> None:  # noqa: ANN001
    import torch

    pooled = pooled_module(model[0].auto_model, pooling_of(model))
    sample = model.tokenizer(["an example sentence", "two"], padding=True, return_tensors="pt")
    dynamic = {"input_ids": {0: "batch", 1: "tokens"}, "attention_mask": {0: "batch", 1: "tokens"}}
    float_path = folder / ("float.onnx" if quantize else MODEL_FILE)
    torch.onnx.export(
        pooled, (sample["input_ids"], sample["attention_mask"]), str(float_path),
        input_names=["input_ids", "attention_mask"], output_names=["embedding"],
        dynamic_axes={**dynamic, "embedding": {0: "batch"}}, opset_version=OPSET, dynamo=False,
    )  # fmt: skip
    if quantize:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        quantize_dynamic(
            str(float_path), str(folder / MODEL_FILE), per_channel=True, weight_type=QuantType.QInt8
        )
        float_path.unlink()
    model.tokenizer.save_pretrained(str(folder / "tokenizer"))
    (folder / "export.json").write_text(json.dumps({"max_length": model.max_seq_length, "int8": quantize}))


class OnnxEncoder:
    """Encodes texts with an exported embedder: L2-normalised float32 rows, as `encode` does."""

    def __init__(self, folder: Path, threads: int | None = None) -> None:
        import onnxruntime
        from transformers import AutoTokenizer

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads or min(os.cpu_count() or 1, 4)
        options.log_severity_level = 3
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # torch shares the cores
        self.session = onnxruntime.InferenceSession(
            str(folder / MODEL_FILE), options, providers=["CPUExecutionProvider"]
        )
        self.tokenizer = AutoTokenizer.from_pretrained(str(folder / "tokenizer"))
        self.max_length = int(json.loads((folder / "export.json").read_text())["max_length"])
        self.dim = int(self.session.get_outputs()[0].shape[-1])

    def encode(self, texts: list[str], batch_size: int = 64, progress: bool = False) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        order = np.argsort([len(t) for t in texts])  # similar lengths together: less padding
        rows = np.zeros((len(texts), self.dim), dtype=np.float32)
        starts = range(0, len(texts), batch_size)
        if progress:
            from tqdm.auto import tqdm

            starts = tqdm(starts, desc="Batches", unit="batch")
        for start in starts:
            picked = order[start : start + batch_size]
            batch = self.tokenizer(
                [texts[i] for i in picked], padding=True, truncation=True, max_length=self.max_length,
                return_tensors="np",
            )  # fmt: skip
            feed = {k: batch[k].astype(np.int64) for k in ("input_ids", "attention_mask")}
            rows[picked] = self.session.run(None, feed)[0]
        return rows


def exported_folder(name: str, backend: str) -> Path:
    """The cached export of embedder `name` for `backend` (onnx or onnx-int8), made when missing."""
    from components.embed.encoder import resolve_embedder

    source = Path(resolve_embedder(name))
    if not source.is_dir():
        raise ValueError(f"embed.backend onnx needs the embedder as a local folder; {name!r} is not one")
    target = cache_root() / f"{embedder_hash(source)}-{backend}"
    if not (target / MODEL_FILE).is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        export_embedder(str(source), target, quantize=backend == "onnx-int8")
    return target


@functools.lru_cache(maxsize=4)
def onnx_encoder(name: str, backend: str, version: str = "") -> OnnxEncoder:
    """The OnnxEncoder of embedder `name` (once per process and `version`, its fine-tuning hash)."""
    return OnnxEncoder(exported_folder(name, backend))
