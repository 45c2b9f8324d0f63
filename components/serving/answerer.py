"""Load a registered adapter/index pair and answer questions with sources.

The steps are separate methods (embed, retrieve, generate, stream) so the service can cache and
batch each one; `answer` chains them for `retro ask`.
"""

from __future__ import annotations

import copy
import hashlib
import json
import tempfile
import threading
from collections.abc import Callable, Iterator, MutableMapping
from concurrent.futures import Executor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from cachetools import LRUCache

from components.adapters.adapter_set import AdapterSet, SlotItem
from components.adapters.builder import load_retro_model
from components.adapters.generation import generate
from components.adapters.int8_decode import use_int8_decode
from components.adapters.kv_index import KVFolder
from components.adapters.precision import LoadOptions, UnsupportedHardware, resolve_device
from components.adapters.prompting import context_prefix
from components.core.serve_params import LlamaCppSettings, TorchEngineSettings
from components.data.domains import domain_filter
from components.stores.base import Hit, both, citation
from components.stores.retriever import Retriever


def shared_retriever(
    retrievers: MutableMapping[str, Retriever] | None, index_dir: Path, index_version: str
) -> Retriever:
    """The retriever of `index_version`, loaded once for every answerer sharing `retrievers`."""
    if retrievers is None or index_version == "local":
        return Retriever.load(index_dir)
    found = retrievers.get(index_version)
    if found is None:
        found = retrievers[index_version] = Retriever.load(index_dir)
    return found


def served_options(torch_engine: TorchEngineSettings | None) -> LoadOptions | None:
    """How the torch engine loads the served base model (`serve.torch`; None: float32, CPU)."""
    if torch_engine is None:
        return None
    options = LoadOptions(dtype=torch_engine.dtype, device=torch_engine.device, section="serve.torch")
    on_gpu = options.device == "cuda" or resolve_device(options.device, options.section).type == "cuda"
    if torch_engine.decode_weights == "int8" and on_gpu:
        raise UnsupportedHardware("serve.torch.decode_weights: int8 is a CPU kernel; use full on a GPU")
    return options


class Answerer:
    """A base model with its adapter, a retriever over the linked index, and their versions."""

    def __init__(
        self,
        adapter_dir: Path,
        index_dir: Path,
        adapter_version: str = "local",
        index_version: str = "local",
        prefix_entries: int = 0,
        on_prefix: Callable[[bool], None] | None = None,
        kv_folder: KVFolder | None = None,
        engine: str = "torch",
        llamacpp: LlamaCppSettings | None = None,
        torch_engine: TorchEngineSettings | None = None,
        adapters: AdapterSet | None = None,
        slot: str | None = None,
        retrievers: MutableMapping[str, Retriever] | None = None,
    ) -> None:
        """`engine` generates the answers: torch, or llamacpp (in_context adapters converted to
        GGUF; components/serving/llamacpp_engine.py). `prefix_entries` > 0 keeps the key/values of
        that many prompt prefixes (instructions + passages) for streaming: a question whose
        passages were seen recently starts generating after encoding only its own tokens.
        `on_prefix(hit)` is told of every lookup. kv and gated adapters read chunk key/values from
        `kv_folder` (and fill it), so only the question is prefilled. `torch_engine` sets the torch
        engine's decode weights (components/adapters/int8_decode.py). With `adapters`, the adapter
        loads as `slot` onto their shared base model; `retrievers` (index version -> retriever)
        shares one loaded index between answerers. A domain adapter retrieves its own domain's
        passages only."""
        self.adapters, self.slot = adapters, slot
        self.registered_name: str | None = None  # the registered model it is a version of (serving)
        if adapters is None:
            self.model = load_retro_model(adapter_dir, options=served_options(torch_engine))
            self.artifact_config = self.model.artifact_config
        else:  # one of several adapters on a shared base model
            self.model, self.artifact_config = adapters.add(slot, adapter_dir)
        self.engine_label = engine
        if engine == "torch" and torch_engine is not None and torch_engine.decode_weights == "int8":
            if adapters is None:
                use_int8_decode(self.model)
            self.engine_label = "torch-int8"
        if kv_folder is not None:
            kv_folder.attach(self.model)
        self.on_prefix = on_prefix
        self.engine, self.llama = engine, None
        if engine == "llamacpp":  # it keeps its own passage-prefix states
            from components.serving.llamacpp_engine import LlamaCppEngine

            self.llama = LlamaCppEngine(
                self.model, adapter_dir, llamacpp or LlamaCppSettings(), prefix_entries, on_prefix
            )
        torch_prefixes = prefix_entries and not self.model.uses_memory and self.llama is None
        self.prefixes = LRUCache(prefix_entries) if torch_prefixes else None
        self.retriever = shared_retriever(retrievers, index_dir, index_version)
        self.k = int(self.artifact_config.get("retrieval", {}).get("k", 3))
        self.domain: str | None = self.artifact_config.get("domain")
        self.scope = domain_filter(self.domain) if self.domain else None  # a domain adapter's passages
        self.adapter_version, self.index_version = adapter_version, index_version
        # one generation at a time (fusion modes hold state on the model; adapters share theirs)
        self.lock = adapters.lock if adapters is not None else threading.Lock()
        self.forgotten: frozenset[str] = frozenset()

    @classmethod
    def from_registry(
        cls,
        tracking_uri: str,
        alias: str,
        cache: Path | None = None,
        model_name: str | None = None,
        kv_folder: KVFolder | None = None,
        engine: str = "torch",
        llamacpp: LlamaCppSettings | None = None,
        torch_engine: TorchEngineSettings | None = None,
    ) -> Answerer:
        """The version of `<model_name>-adapter` (default: retro) holding `alias`, with its index
        (kv and gated adapters read chunk key/values from `kv_folder`), answering on `engine`."""
        from components.registry import mlflow_registry as reg

        client = reg.configure(tracking_uri)
        names = reg.ModelNames(model_name) if model_name else reg.DEFAULT_NAMES
        pair = reg.download_pair(client, alias, cache or Path(tempfile.mkdtemp(prefix="retro-")), names)
        return cls(
            pair.adapter_dir,
            pair.index_dir,
            pair.adapter_version,
            pair.index_version,
            kv_folder=kv_folder,
            engine=engine,
            llamacpp=llamacpp,
            torch_engine=torch_engine,
        )

    @property
    def versions(self) -> tuple[str, str]:
        """The served adapter and index versions."""
        return self.adapter_version, self.index_version

    @property
    def cache_scope(self) -> tuple[str, str]:
        """What cached results depend on: the versions and the forgotten documents (a forget
        makes every earlier cache entry, in every tier, unreachable)."""
        label = self.engine_label
        adapter = self.adapter_version if label == "torch" else f"{self.adapter_version}@{label}"
        if not self.forgotten:
            return adapter, self.index_version
        digest = hashlib.sha256(json.dumps(sorted(self.forgotten)).encode()).hexdigest()[:12]
        return adapter, f"{self.index_version}.f{digest}"

    def forget(self, doc_ids: frozenset[str]) -> int:
        """Drop every chunk of these documents from the served index (in memory) and the prompt
        prefix cache; returns the chunks removed. Retrieval never returns them afterwards."""
        if doc_ids == self.forgotten:
            return 0
        with self.lock:
            store = self.retriever.store
            payloads = store.payloads(store.ids())
            gone = [cid for cid, payload in payloads.items() if payload.get("doc_id") in doc_ids]
            if gone:
                store.delete(gone)
                self.model.kv_store.forget([payloads[cid].get("text", "") for cid in gone])
            if self.prefixes is not None:
                self.prefixes.clear()
            if self.llama is not None:
                self.llama.clear_prefixes()
            self.forgotten = doc_ids
        return len(gone)

    def chunk_kv_counters(self) -> dict[str, int]:
        """Chunk key/value lookups since this pair was loaded, per tier (kv and gated adapters)."""
        return self.model.kv_store.counters.as_dict()

    def version_fields(self) -> dict[str, str]:
        """The versions as a response carries them."""
        return {"adapter_version": self.adapter_version, "index_version": self.index_version}

    def embed(self, questions: list[str]) -> np.ndarray:
        """Query embeddings with the index's own embedder."""
        return self.retriever.embed(questions)

    def retrieve(
        self, questions: list[str], k: int, vectors: np.ndarray | None = None, where: dict | None = None
    ) -> list[list[Hit]]:
        """The k passages per question among the documents `where` admits (payload metadata; None:
        all), as the index's retriever ranks them (fused, maybe reranked)."""
        return self.retriever.retrieve(questions, k, where=both(self.scope, where), vectors=vectors)

    def prompt(self, question: str, hits: list[Hit]) -> tuple[str, list[str]]:
        """The model's prompt for `question` over the retrieved passages, and the passages."""
        texts = [h.payload["text"] for h in hits]
        return self.model.prompt(question, texts), texts

    def generate(self, prompts: list[tuple[str, list[str]]], max_new_tokens: int = 24) -> list[str]:
        """Greedy answers for (prompt, passages) pairs, in one batch (one by one on llama.cpp)."""
        if self.adapters is not None:
            return self.adapters.generate_slots([(self.slot, p, t) for p, t in prompts], max_new_tokens)
        with self.lock:
            if self.llama is not None:
                return [self.llama.answer(prompt, max_new_tokens) for prompt, _ in prompts]
            return generate(
                self.model,
                [p for p, _ in prompts],
                max_new_tokens,
                batch_size=max(len(prompts), 1),
                passages=[t for _, t in prompts],
            )

    @property
    def batch_owner(self) -> Any:
        """What a generation batch runs on: the shared adapter set (requests for its different
        adapters share a batch), else this answerer."""
        return self.adapters if self.adapters is not None else self

    def generate_slots(self, items: list[SlotItem], max_new_tokens: int) -> list[str]:
        """`generate` for (slot, prompt, passages) items, as `AdapterSet.generate_slots` takes them."""
        return self.generate([(p, t) for _, p, t in items], max_new_tokens)

    def own_adapter(self, rows: int) -> dict[str, Any]:
        """The generate/forward argument that runs `rows` rows with this answerer's adapter."""
        return {} if self.adapters is None else {"adapter_names": [self.slot] * rows}

    def stream(
        self, prompt: str, passages: list[str], max_new_tokens: int, executor: Executor
    ) -> Iterator[str]:
        """The answer's text piece by piece as it is generated, cut at the first line break like
        `generate` (generation stops there too). Generation runs on `executor`, the service's
        model thread; an error there ends the stream and is raised here."""
        from transformers import StoppingCriteria, StoppingCriteriaList

        from components.serving.streaming import TokenStreamer

        class WhenDone(StoppingCriteria):
            def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> bool:
                return done.is_set()

        tokenizer = self.model.tokenizer
        streamer = TokenStreamer(tokenizer, skip_prompt=self.llama is None, skip_special_tokens=True)
        done = threading.Event()
        if self.llama is not None:
            worker = executor.submit(self._llama_into, prompt, max_new_tokens, streamer, done)
            yield from self._pieces(streamer, done, worker)
            return
        kwargs = {
            "prompt": prompt,
            "max_new_tokens": max_new_tokens,
            "do_sample": False,
            "pad_token_id": tokenizer.pad_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "streamer": streamer,
            "stopping_criteria": StoppingCriteriaList([WhenDone()]),
            **self.own_adapter(1),
        }
        memory = [passages] if self.model.uses_memory else None
        worker = executor.submit(self._generate_into, memory, kwargs)
        yield from self._pieces(streamer, done, worker)

    @staticmethod
    def _pieces(streamer: Any, done: threading.Event, worker: Any) -> Iterator[str]:
        """The visible text of a generation in `worker` as it arrives, up to the first line break."""
        received, sent, ended = "", "", False
        try:
            for piece in streamer:
                received += piece
                visible = received.lstrip()
                finished = "\n" in visible
                visible = visible.split("\n")[0].rstrip() if finished else visible
                if len(visible) > len(sent):
                    yield visible[len(sent) :]
                    sent = visible
                if finished:
                    break
            else:
                ended = True
        finally:
            done.set()
            if not ended:  # drain what was generated before the stop took effect
                for _ in streamer:
                    pass
            worker.result()

    def _llama_into(self, prompt: str, max_new_tokens: int, streamer: Any, done: threading.Event) -> None:
        """llama.cpp generation for `stream`: each token into `streamer` until `done` is set."""

        def hand_on(token: int) -> bool:
            streamer.put(np.array([token]))
            return not done.is_set()

        try:
            with self.lock:
                self.llama.answer(prompt, max_new_tokens, on_token=hand_on)
        finally:
            streamer.end()

    def _generate_into(self, memory: list[list[str]] | None, kwargs: dict[str, Any]) -> None:
        """Generation for `stream`; an error ends the stream (so its reader stops) and propagates."""
        try:
            with self.lock, torch.inference_mode():
                kwargs.update(self._prefilled(kwargs.pop("prompt")))
                self.model.generate(passages=memory, **kwargs)
        except Exception:
            kwargs["streamer"].end()
            raise

    def _prefilled(self, prompt: str) -> dict[str, Any]:
        """Token ids of the prompt, with a copy of its prefix's cached key/values when there is one."""
        tokenizer = self.model.tokenizer
        inputs = dict(tokenizer([prompt], return_tensors="pt", add_special_tokens=False))
        prefix = context_prefix(prompt) if self.prefixes is not None else None
        if prefix is None:
            return inputs
        past = self.prefixes.get(prefix)
        if self.on_prefix is not None:
            self.on_prefix(past is not None)
        if past is None:
            ids = tokenizer([prefix], return_tensors="pt", add_special_tokens=False)["input_ids"]
            if not torch.equal(inputs["input_ids"][0, : ids.shape[1]], ids[0]):
                return inputs  # the tokenizer merged across the boundary: no exact reuse possible
            past = self.model.model(input_ids=ids, use_cache=True, **self.own_adapter(1)).past_key_values
            self.prefixes[prefix] = past
        return {**inputs, "past_key_values": copy.deepcopy(past)}

    def sources(self, hits: list[Hit]) -> list[dict[str, Any]]:
        """Each passage's citation (document, page, section, character span) and score."""
        return [citation(h) | {"score": h.score} for h in hits]

    def answer_batch(self, questions: list[str], k: int | None = None, max_new_tokens: int = 24) -> list[str]:
        """The answers to several questions as the service gives them (retrieval, rerank, one batch)."""
        hits = self.retrieve(questions, k or self.k)
        prompts = [self.prompt(q, row) for q, row in zip(questions, hits, strict=True)]
        return self.generate(prompts, max_new_tokens)

    def answer(self, question: str, k: int | None = None, max_new_tokens: int = 24) -> dict[str, Any]:
        """Retrieve, generate and return the answer with its sources and versions."""
        hits = self.retrieve([question], k or self.k)[0]
        text = self.generate([self.prompt(question, hits)], max_new_tokens)[0]
        return {"answer": text, "sources": self.sources(hits), **self.version_fields()}
