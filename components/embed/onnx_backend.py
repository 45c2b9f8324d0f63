"""The ONNX embedding engine (`embed.backend: onnx`): the sentence-transformers embedder exported
once with `torch.onnx.export` (transformer, mean or CLS pooling and normalisation in one graph),
its BERT-family blocks fused by onnxruntime's transformer optimizer (attention, skip layer norm,
bias GELU), and run with onnxruntime, optionally int8 (`embed.quantize: int8`, onnxruntime's
dynamic quantization of the weights). Texts are tokenized by the embedder's own fast tokenizer
(the `tokenizers` library) without the Python wrapper around it.

Exports are cached by the embedder's content hash (the packaged or fine-tuned weights) under
`RETRO_ONNX_CACHE` (default `data/cache/onnx`, outside git), so each embedder is exported once
per machine and the embed stage and serving load the same file.
"""

from __future__ import annotations

import contextlib
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
EXPORT_FORMAT = 2
"""Bumped when the export changes (2: fused blocks), so caches of older exports are not reused."""
FUSED_FAMILIES = {"bert", "roberta", "xlm-roberta", "camembert", "electra"}
"""Model types whose graph onnxruntime's `bert` optimizer fuses; others are exported unfused."""
FUSED_COSINE = 0.9999
"""A fused graph is kept only when its vectors agree with the unfused graph's to this cosine."""


def backend_name(backend: str, quantize: str) -> str:
    """The engine for params `embed.backend` and `embed.quantize` (one of BACKENDS; EmbedParams
    refuses int8 without onnx)."""
    if backend == "torch":
        return "torch"
    return "onnx-int8" if quantize == "int8" else "onnx"


def cache_root() -> Path:
    """Where exported ONNX models are cached (the env var, or the default folder)."""
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
    transformer = model[0].auto_model
    sample = model.tokenizer(["an example sentence", "two"], padding=True, return_tensors="pt")
    float_path = folder / "float.onnx"
    with _eager_attention(transformer):  # the attention pattern onnxruntime knows how to fuse
        _export_graph(pooled_module(transformer, pooling_of(model)), sample, float_path)
    fused = _fuse_blocks(float_path, transformer.config, sample)
    if quantize:
        from onnx import TensorProto
        from onnxruntime.quantization import QuantType, quantize_dynamic

        quantize_dynamic(
            str(float_path), str(folder / MODEL_FILE), per_channel=True, weight_type=QuantType.QInt8,
            extra_options={"DefaultTensorType": TensorProto.FLOAT},  # fused ops carry no inferred types
        )  # fmt: skip
        float_path.unlink()
    else:
        float_path.rename(folder / MODEL_FILE)
    model.tokenizer.save_pretrained(str(folder / "tokenizer"))
    report = {"max_length": model.max_seq_length, "int8": quantize, "fused": fused, "format": EXPORT_FORMAT}
    (folder / "export.json").write_text(json.dumps(report))


@contextlib.contextmanager
def _eager_attention(transformer):  # noqa: ANN001, ANN202
    """The transformer with eager attention for the duration (the loaded embedder is shared)."""
    before = getattr(transformer.config, "_attn_implementation", None)
    switch = getattr(transformer, "set_attn_implementation", None)
    if switch is None or before in (None, "eager"):
        yield
        return
    switch("eager")
    try:
        yield
    finally:
        switch(before)


def _export_graph(module, sample, path: Path) -> None:  # noqa: ANN001
    import torch

    dynamic = {"input_ids": {0: "batch", 1: "tokens"}, "attention_mask": {0: "batch", 1: "tokens"}}
    torch.onnx.export(
        module, (sample["input_ids"], sample["attention_mask"]), str(path),
        input_names=["input_ids", "attention_mask"], output_names=["embedding"],
        dynamic_axes={**dynamic, "embedding": {0: "batch"}}, opset_version=OPSET, dynamo=False,
    )  # fmt: skip


def _fuse_blocks(path: Path, config, sample) -> dict[str, int]:  # noqa: ANN001
    """Fuse the graph at `path` in place with onnxruntime's transformer optimizer when the model
    is BERT-family and the fused graph embeds `sample` as the unfused one does; the fused
    operators counted, or {} when the graph stays as exported."""
    if getattr(config, "model_type", "") not in FUSED_FAMILIES:
        return {}
    from onnxruntime.transformers.optimizer import optimize_model

    fused_path = path.with_name("fused.onnx")
    try:
        optimized = optimize_model(
            str(path), model_type="bert", num_heads=config.num_attention_heads, hidden_size=config.hidden_size
        )
        optimized.save_model_to_file(str(fused_path))
        feed = {k: sample[k].numpy().astype(np.int64) for k in ("input_ids", "attention_mask")}
        before, after = _session(path).run(None, feed)[0], _session(fused_path).run(None, feed)[0]
    except Exception as error:  # noqa: BLE001 - an optimizer that cannot fuse leaves the export as it was
        logging.getLogger(__name__).info("onnx export left unfused: %s", error)
        fused_path.unlink(missing_ok=True)
        return {}
    if float((before * after).sum(1).min()) < FUSED_COSINE:
        fused_path.unlink()
        return {}
    fused_path.replace(path)
    return {op: n for op, n in optimized.get_fused_operator_statistics().items() if n}


def _session(path: Path, threads: int | None = None):  # noqa: ANN202
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads or min(os.cpu_count() or 1, 4)
    options.log_severity_level = 3
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # torch shares the cores
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class OnnxEncoder:
    """Encodes texts with an exported embedder: L2-normalised float32 rows, as `encode` does."""

    def __init__(self, folder: Path, threads: int | None = None) -> None:
        from transformers import AutoTokenizer

        self.session = _session(folder / MODEL_FILE, threads)
        self.max_length = int(json.loads((folder / "export.json").read_text())["max_length"])
        self.dim = int(self.session.get_outputs()[0].shape[-1])
        wrapper = AutoTokenizer.from_pretrained(str(folder / "tokenizer"))
        self.tokenizer = wrapper.backend_tokenizer  # the Rust tokenizer: a tenth of the wrapper's time
        self.tokenizer.enable_truncation(self.max_length)
        self.tokenizer.enable_padding(
            pad_id=wrapper.pad_token_id or 0, pad_token=wrapper.pad_token or "[PAD]"
        )

    def encode(self, texts: list[str], batch_size: int = 64, progress: bool = False) -> np.ndarray:
        """Embed texts with onnxruntime, batched by length, as float32 rows."""
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
            encoded = self.tokenizer.encode_batch([texts[i] for i in picked])
            feed = {
                "input_ids": np.array([e.ids for e in encoded], dtype=np.int64),
                "attention_mask": np.array([e.attention_mask for e in encoded], dtype=np.int64),
            }
            rows[picked] = self.session.run(None, feed)[0]
        return rows


def exported_folder(name: str, backend: str) -> Path:
    """The cached export of embedder `name` for `backend` (onnx or onnx-int8), made when missing."""
    from components.embed.encoder import resolve_embedder

    source = Path(resolve_embedder(name))
    if not source.is_dir():
        raise ValueError(f"embed.backend onnx needs the embedder as a local folder; {name!r} is not one")
    target = cache_root() / f"{embedder_hash(source)}-{backend}-v{EXPORT_FORMAT}"
    if not (target / MODEL_FILE).is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        export_embedder(str(source), target, quantize=backend == "onnx-int8")
    return target


@functools.lru_cache(maxsize=4)
def onnx_encoder(name: str, backend: str, version: str = "") -> OnnxEncoder:
    """The OnnxEncoder of embedder `name` (once per process and `version`, its fine-tuning hash)."""
    return OnnxEncoder(exported_folder(name, backend))
