"""Answers from llama.cpp (llama-cpp-python) for in_context adapters.

The prompt is built and tokenized by the same code as in the torch engine, the token ids go to
llama.cpp as they are, decoding is greedy, and the text is cut at the first line break: the same
answer rules, on a faster decoder. A LoRA or AdaLoRA adapter becomes a GGUF LoRA adapter over the
base model's GGUF; IA3 is folded into a GGUF model of its own. The files are written once per
adapter content and kept under the model cache. The key/values of recent passage prefixes are
kept as llama.cpp sequence states and restored for the next question over the same passages.
"""

from __future__ import annotations

import contextlib
import copy
import ctypes
import hashlib
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from cachetools import LRUCache

from components.adapters import gguf_export
from components.adapters.base_model import cache_dir, load_base_model, packaged_gguf
from components.adapters.prompting import context_prefix
from components.core.params import DEFAULT_BASE_MODEL
from components.core.serve_params import LlamaCppSettings
from components.embed.finetune import model_hash

log = logging.getLogger(__name__)
CACHE_ENV = "RETRO_GGUF_CACHE"
INSTALL_HINT = (
    "pip install 'retro-peft[cpu-engine]' (make install does this; it compiles llama.cpp, about 5 min)"
)


class EngineUnavailable(RuntimeError):
    """The llama.cpp engine cannot serve this adapter; the message says why and what to do."""


def gguf_cache() -> Path:
    """Where written GGUF files live: $RETRO_GGUF_CACHE, else the model cache's gguf/ (outside git)."""
    return Path(os.environ.get(CACHE_ENV, cache_dir() / "gguf")).expanduser()


def _llama_cpp():  # noqa: ANN202
    try:
        import llama_cpp
    except ImportError as exc:
        raise EngineUnavailable(f"serve.engine llamacpp needs llama-cpp-python: {INSTALL_HINT}") from exc
    return llama_cpp


def _quantize(source: Path, out: Path, weights: str) -> None:
    """llama.cpp's own quantizer (what its llama-quantize tool runs), into `out` atomically."""
    llama_cpp = _llama_cpp()
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = {
        "q8_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0,
        "q4_1": llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_1,
        "q4_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_0,
    }[weights]
    params.nthread = os.cpu_count() or 1

    def fill(staging: str) -> None:
        if llama_cpp.llama_model_quantize(str(source).encode(), staging.encode(), ctypes.byref(params)) != 0:
            raise RuntimeError(f"llama.cpp could not quantize {source} to {weights}")

    gguf_export.atomic_write(out, fill)


def write_model(model: Any, tokenizer: Any, out: Path, weights: str, tokenizer_gguf: Path | None) -> Path:
    """A transformers Llama model as GGUF with `weights` f32 | f16 (written directly) or q8_0 | q4_1
    | q4_0 (written in f32, then quantized by llama.cpp)."""
    if weights in gguf_export.DTYPES:
        return gguf_export.write_model_gguf(model, tokenizer, out, weights, tokenizer_gguf)
    full = out.with_name(f".{out.name}.f32")
    try:
        gguf_export.write_model_gguf(model, tokenizer, full, "f32", tokenizer_gguf)
        _quantize(full, out, weights)
    finally:
        full.unlink(missing_ok=True)
    return out


def _tokenizer_gguf(base_model: str) -> Path | None:
    """The packaged GGUF's own tokenizer fields for the default model; others use their tokenizer."""
    return packaged_gguf() if base_model == DEFAULT_BASE_MODEL else None


def _base_gguf(base_model: str, settings: LlamaCppSettings) -> Path:
    """The base model's GGUF: `base_gguf` when given, else written once from the transformers
    weights (for the default model: the packaged Q4_1 weights as the torch engine sees them)."""
    if settings.base_gguf:
        return Path(settings.base_gguf)
    name = base_model if base_model == DEFAULT_BASE_MODEL else str(Path(base_model).resolve())
    key = hashlib.sha256(f"{name}|{settings.weights}".encode()).hexdigest()[:16]
    out = gguf_cache() / f"base-{key}-{settings.weights}.gguf"
    if not out.exists():
        log.info("writing %s as GGUF (%s) to %s, once", base_model, settings.weights, out)
        base, tokenizer = load_base_model(base_model)
        write_model(base, tokenizer, out, settings.weights, _tokenizer_gguf(base_model))
    return out


def engine_files(model: Any, adapter_dir: Path, settings: LlamaCppSettings) -> tuple[Path, Path | None]:
    """(model GGUF, LoRA GGUF or None) for this artifact, written on first use."""
    if model.uses_memory:
        raise EngineUnavailable(
            f"this adapter uses {model.fusion_mode} fusion, which reads each chunk's key/values inside the "
            "model's attention; llama.cpp runs only in_context adapters: set serve.engine to torch"
        )
    base_model = model.artifact_config.get("base_model", "")
    gguf_export.check_llama(model.model.config)
    folder = gguf_cache() / f"adapter-{model_hash(adapter_dir)}"
    if gguf_export.is_low_rank(model.model):
        lora = folder / "lora.gguf"
        if not lora.exists():
            log.info("writing %s as a GGUF LoRA adapter to %s, once", adapter_dir, lora)
            gguf_export.write_lora_gguf(model.model, lora)
        return _base_gguf(base_model, settings), lora
    merged = folder / f"merged-{settings.weights}.gguf"
    if not merged.exists():  # IA3 and other scaling adapters: folded into a model of their own
        log.info("folding %s into a GGUF model (%s) at %s, once", adapter_dir, settings.weights, merged)
        folded = copy.deepcopy(model.model).merge_and_unload()
        write_model(folded, model.tokenizer, merged, settings.weights, _tokenizer_gguf(base_model))
    return merged, None


def amx_repacking_crashes(llama_cpp: Any) -> bool:
    """Whether this llama.cpp build would repack quantized weights into AMX tiles: its AMX matrix
    multiply segfaults on q8_0 and q4_0 models (llama.cpp issue 20824, seen with 0.3.36)."""
    return b"AMX_INT8 = 1" in llama_cpp.llama_cpp.llama_print_system_info()


def repack_weights(setting: str, llama_cpp: Any) -> bool:
    """`serve.llamacpp.repack_weights` resolved: auto repacks except where AMX would crash."""
    if setting == "auto":
        return not amx_repacking_crashes(llama_cpp)
    return setting == "on"


@contextlib.contextmanager
def _model_params(llama_cpp: Any, use_extra_bufts: bool) -> Iterator[None]:
    """llama-cpp-python builds a model's parameters from llama.cpp's defaults and has no argument
    for the extra (repacked) buffer types, so the defaults are set for the load that follows."""
    bindings = llama_cpp.llama_cpp
    defaults = bindings.llama_model_default_params

    def params():  # noqa: ANN202
        values = defaults()
        values.use_extra_bufts = use_extra_bufts
        return values

    bindings.llama_model_default_params = params
    try:
        yield
    finally:
        bindings.llama_model_default_params = defaults


def _llama(model_path: Path, lora_path: Path | None, settings: LlamaCppSettings):  # noqa: ANN202
    llama_cpp = _llama_cpp()
    kv_type = {"f32": llama_cpp.GGML_TYPE_F32, "f16": llama_cpp.GGML_TYPE_F16}[settings.kv_cache]
    with _model_params(llama_cpp, repack_weights(settings.repack_weights, llama_cpp)):
        return llama_cpp.Llama(
            model_path=str(model_path),
            lora_path=str(lora_path) if lora_path else None,
            n_ctx=settings.context_tokens,
            n_batch=min(512, settings.context_tokens),
            n_threads=settings.threads or os.cpu_count(),
            n_threads_batch=settings.threads or os.cpu_count(),
            use_mmap=lora_path is None,
            flash_attn=settings.flash_attention,
            type_k=kv_type,
            type_v=kv_type,
            verbose=False,
        )


class LlamaCppEngine:
    """Greedy, line-cut answers from llama.cpp with reusable passage-prefix states."""

    def __init__(
        self,
        model: Any,
        adapter_dir: Path,
        settings: LlamaCppSettings,
        prefix_entries: int = 0,
        on_prefix: Callable[[bool], None] | None = None,
    ) -> None:
        model_path, lora_path = engine_files(model, Path(adapter_dir), settings)
        self.llm = _llama(model_path, lora_path, settings)
        self.tokenizer = model.tokenizer
        self.eos = self.tokenizer.eos_token_id
        self.context_tokens = settings.context_tokens
        self.states: LRUCache | None = None
        if prefix_entries and settings.prefix_state_mb:
            self.states = LRUCache(settings.prefix_state_mb * 2**20, getsizeof=lambda s: len(s[0]))
            self.max_states = prefix_entries
        self.on_prefix = on_prefix
        self.files = (model_path, lora_path)

    def _ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    # -- passage prefixes --------------------------------------------------------------------------
    def _save_state(self) -> tuple[bytes, np.ndarray]:
        llama_cpp = _llama_cpp()
        ctx = self.llm.ctx
        size = llama_cpp.llama_state_seq_get_size(ctx, 0)
        buffer = (ctypes.c_uint8 * size)()
        written = llama_cpp.llama_state_seq_get_data(ctx, buffer, size, 0)
        return bytes(buffer)[:written], self.llm.input_ids[: self.llm.n_tokens].copy()

    def _load_state(self, state: tuple[bytes, np.ndarray]) -> None:
        llama_cpp = _llama_cpp()
        data, ids = state
        self.llm.reset()
        self.llm._ctx.kv_cache_seq_rm(-1, 0, -1)
        buffer = (ctypes.c_uint8 * len(data)).from_buffer_copy(data)
        if llama_cpp.llama_state_seq_set_data(self.llm.ctx, buffer, len(data), 0) != len(data):
            raise RuntimeError("llama.cpp refused a saved prefix state")
        self.llm.input_ids[: len(ids)] = ids
        self.llm.n_tokens = len(ids)
        self.llm._requires_eval = True

    def _use_prefix(self, prompt: str, ids: list[int]) -> None:
        """Put the prompt's passage prefix into llama.cpp's context: already there, restored from a
        saved state, or evaluated now and saved. `generate` then evaluates only what follows."""
        prefix = context_prefix(prompt) if self.states is not None else None
        if prefix is None:
            return
        prefix_ids = self._ids(prefix)
        n = len(prefix_ids)
        if ids[:n] != prefix_ids or n >= len(ids):
            return  # the tokenizer merged across the boundary: no exact reuse
        key = tuple(prefix_ids)
        current = self.llm.input_ids[: min(self.llm.n_tokens, n)].tolist()
        state = self.states.get(key)
        if self.on_prefix is not None:
            self.on_prefix(current == prefix_ids or state is not None)
        if current == prefix_ids:
            return
        if state is not None:
            self._load_state(state)
            return
        self.llm.reset()
        self.llm.eval(prefix_ids)
        if len(self.states) >= self.max_states:
            self.states.popitem()
        with contextlib.suppress(ValueError):  # a state larger than the whole budget is not kept
            self.states[key] = self._save_state()

    def clear_prefixes(self) -> None:
        """Forget the saved prompt-prefix states (after a version switch)."""
        if self.states is not None:
            self.states.clear()

    # -- answers -------------------------------------------------------------------------------------
    def greedy(self, ids: list[int]) -> Iterator[int]:
        """llama.cpp's greedy continuation of these token ids, token by token (the longest prefix
        already in its context is not evaluated again)."""
        return self.llm.generate(ids, temp=0.0, top_k=1, top_p=1.0, min_p=0.0, repeat_penalty=1.0)

    def answer(self, prompt: str, max_new_tokens: int, on_token: Callable[[int], bool] | None = None) -> str:
        """The greedy answer to one prompt, cut at its first line break. `on_token(id)` sees each
        new token and stops generation by returning False."""
        ids = self._ids(prompt)
        if len(ids) + max_new_tokens > self.context_tokens:
            raise ValueError(
                f"the prompt has {len(ids)} tokens; with {max_new_tokens} new ones it passes "
                f"serve.llamacpp.context_tokens ({self.context_tokens})"
            )
        self._use_prefix(prompt, ids)
        new: list[int] = []
        for token in self.greedy(ids):
            if token == self.eos:
                break
            new.append(int(token))
            if on_token is not None and not on_token(int(token)):
                break
            text = self.tokenizer.decode(new, skip_special_tokens=True).lstrip()
            if "\n" in text or len(new) >= max_new_tokens:
                break
        text = self.tokenizer.decode(new, skip_special_tokens=True).strip()
        return text.split("\n")[0].strip()

    def answer_tokens(self, prompt: str, max_new_tokens: int) -> list[int]:
        """The greedy token ids themselves (no line cut), for comparing engines token by token."""
        new: list[int] = []
        for token in self.greedy(self._ids(prompt)):
            if token == self.eos or len(new) >= max_new_tokens:
                break
            new.append(int(token))
        return new
