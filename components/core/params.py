"""Every section of params.yaml as a typed model, and the whole file as one.

A stage reads its own section and the shared keys it needs through `PipelineParams`; every read
is recorded (see `components.core.config`), which is how the dependency check knows what a stage
really reads. The whole file is validated at load time, so an unknown section or key (a typo,
`adapter_train` for `adapter-train`) is an error that names the closest valid one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, PrivateAttr, field_validator, model_validator

from components.core.config import ParamsError, StrictModel, load_params_file, validate, yaml_off
from components.core.paths import PathParams, Paths
from components.core.serve_params import Device, ServeSettings, WeightDtype

DEFAULT_BASE_MODEL = "smollm2-135m-instruct"
DEFAULT_EMBEDDER = "all-MiniLM-L6-v2"
DEFAULT_TRACKING_URI = "sqlite:///mlruns/mlflow.db"


class ModelParams(StrictModel):
    """The `model` section: which base model and embedder every stage uses."""

    base: str = DEFAULT_BASE_MODEL
    embedder: str = DEFAULT_EMBEDDER
    dtype: WeightDtype = Field(
        "float32",
        description="the base weights' dtype: float16 needs a GPU, bfloat16 a GPU or a CPU with AVX512-BF16 "
        "or AMX (refused where it would be emulated)",
    )
    quantization: Literal["none", "int8", "nf4"] = Field(
        "none",
        description="base weights stored in 8 bits (LLM.int8()) or 4 (NF4, QLoRA-style: the adapter "
        "trains on top in `dtype`); bitsandbytes, needs a CUDA GPU",
    )
    gradient_checkpointing: bool = Field(
        False, description="recompute activations in the backward pass: less memory, more time a step"
    )
    attention: Literal["auto", "eager", "sdpa", "flash_attention_2"] = Field(
        "auto",
        description="transformers' attention implementation: auto = its default (SDPA where the model has "
        "it); flash_attention_2 needs a CUDA GPU and flash-attn",
    )
    device: Device = Field(
        "auto", description="where the base model runs: auto = cuda when torch sees a GPU, else cpu"
    )
    seed: int = 0
    teacher: str | None = Field(
        None, description="model that writes synthesized questions: null = `base`, or any HF id / local path"
    )


class RetrievalParams(StrictModel):
    """The `retrieval` section: how passages are found for training, evaluation and serving."""

    k: int = Field(3, ge=1, le=50)
    mode: Literal["dense", "bm25", "hybrid"] = "hybrid"
    rrf_k: int = Field(60, ge=1)
    fusion: Literal["tuned", "equal"] = Field(
        "tuned",
        description="hybrid weights: tuned = fitted per index version on validation questions, "
        "equal = plain RRF",
    )
    validation_share: float = Field(
        0.2, gt=0, lt=1, description="share of the train questions that fit retrieval (by hash of the id)"
    )
    tune_min_questions: int = Field(
        20, ge=1, description="validation questions with a located gold chunk needed to fit the weights"
    )
    finetune: Literal["auto", "on", "off"] = Field(
        "auto",
        description="fine-tune the embedder on (train question, gold chunk) pairs once per corpus lineage: "
        "auto = when there are finetune_min_pairs pairs, on = always, off = never",
    )
    finetune_min_pairs: int = Field(100, ge=1, description="auto: fewer pairs keep the embedder as it is")
    finetune_epochs: float = Field(3.0, gt=0)
    finetune_learning_rate: float = Field(3e-5, gt=0)
    finetune_batch_size: int = Field(
        32, ge=2, description="in-batch negatives: larger batches, more negatives"
    )
    rerank: Literal["auto", "on", "off"] = Field(
        "auto",
        description="a cross-encoder reranker trained at a full index build: auto = kept when it beats the "
        "first stage's MRR@10 on the validation questions, on = always kept, off = none",
    )
    rerank_min_pairs: int = Field(200, ge=1, description="auto: fewer training questions train no reranker")
    rerank_epochs: float = Field(1.0, gt=0)
    rerank_learning_rate: float = Field(3e-5, gt=0)
    gold_min_overlap: float = Field(
        0.6,
        gt=0,
        le=1,
        description="an answer not found verbatim is located in the chunk holding this share of its tokens",
    )

    _off = field_validator("finetune", "rerank", mode="before")(classmethod(lambda cls, v: yaml_off(v)))


class IngestParams(StrictModel):
    """`ingest`: where the documents are and which ones are accepted."""

    source: str = "data/raw/sample"
    min_chars: int = Field(20, ge=1)
    max_chars: int = Field(200_000, ge=1)
    max_file_mb: float = Field(
        100.0, gt=0, description="larger files are quarantined with the reason before they are read"
    )
    ocr: Literal["auto", "off"] = Field(
        "auto",
        description="auto: a PDF page without a text layer is read by tesseract-ocr when it is installed; "
        "off: such a PDF is quarantined",
    )

    _off = field_validator("ocr", mode="before")(classmethod(lambda cls, v: yaml_off(v)))

    @model_validator(mode="after")
    def _min_below_max(self) -> IngestParams:
        if self.min_chars > self.max_chars:
            raise ValueError("min_chars must not exceed max_chars")
        return self


class ChunkParams(StrictModel):
    """`chunk`: how documents are cut into token windows."""

    max_tokens: int = Field(128, ge=8, description="window size in tokens of `tokenizer`")
    overlap: int = Field(24, ge=0)
    tokenizer: str = Field("embedder", description="'embedder' or any tokenizer id/path")
    split_at_headings: bool = Field(
        True, description="windows end before a markdown heading: whole sections packed, long ones cut"
    )

    @model_validator(mode="after")
    def _overlap_below_window(self) -> ChunkParams:
        if self.overlap >= self.max_tokens:
            raise ValueError("overlap must be smaller than max_tokens")
        return self


class ShardingParams(StrictModel):
    """Sharded work (embed, index) as parallel Prefect tasks on a Dask or Ray cluster."""

    shards: int = Field(0, ge=0, description="0 or 1: run in the stage's own process")
    runner: Literal["dask", "ray"] = "dask"
    address: str | None = None
    workers: int = Field(2, ge=1, description="processes of the local cluster (when no address)")
    threads_per_worker: int = Field(1, ge=1, description="torch / FAISS threads in each worker")

    @property
    def active(self) -> bool:
        """True when the work is split over more than one shard."""
        return self.shards > 1


class EmbedParams(StrictModel):
    """`embed`: how chunks are embedded (batching, sharding, backend)."""

    batch_size: int = Field(64, ge=1)
    sharding: ShardingParams = ShardingParams()
    backend: Literal["torch", "onnx"] = Field(
        "torch",
        description="torch: sentence-transformers on PyTorch; onnx: the same embedder exported once to ONNX "
        "and run with onnxruntime (components/embed/onnx_backend.py). Queries use the index's engine",
    )
    quantize: Literal["none", "int8"] = Field(
        "none", description="onnx only: int8 = onnxruntime's dynamic int8 quantization of the weights"
    )

    @model_validator(mode="after")
    def _int8_needs_onnx(self) -> EmbedParams:
        if self.quantize != "none" and self.backend != "onnx":
            raise ValueError("embed.quantize: int8 needs embed.backend: onnx")
        return self


class IndexParams(StrictModel):
    """`index`: the vector store and how index versions are built."""

    store: str = "faiss"
    store_params: dict[str, Any] = Field(default_factory=lambda: {"factory": "Flat"})
    sharding: ShardingParams = ShardingParams()
    chunk_kv: Literal["lazy", "precompute"] = Field(
        "lazy",
        description="kv and gated fusion: precompute = the index stage encodes every new chunk's "
        "key/values into paths.chunk_kv; lazy = whoever reads a chunk first encodes and keeps it",
    )
    chunk_kv_budget_gb: float = Field(
        8.0, gt=0, description="disk budget of paths.chunk_kv; the least recently used entries go first"
    )


class FusionParams(StrictModel):
    """How retrieved passages reach the model (see components/adapters/retro_model.py)."""

    fusion: Literal["in_context", "kv", "gated"] = Field(
        "in_context",
        description="in_context: passages in the prompt; kv: the chunks' own key/values; gated: kv with "
        "a zero-initialised tanh gate on the attention over them",
    )
    gate: Literal["layer", "head"] = Field("layer", description="gated only: one gate per layer, or per head")
    gate_lr: float = Field(
        0.2, gt=0, description="gated only: the gates' learning rate (they start closed at zero)"
    )
    chunk_tokens: int = Field(256, ge=8, description="kv and gated: tokens of each chunk kept as key/values")
    chunk_kv_dtype: Literal["auto", "bfloat16", "int8"] = Field(
        "auto",
        description="kv and gated: how chunk key/values are stored: auto (the model's dtype), bfloat16, or "
        "int8 with a float16 scale per head and token (about 1/4 of float32)",
    )

    @field_validator("fusion", mode="before")
    @classmethod
    def _retired_fusion(cls, value: Any) -> Any:
        if value == "cross_attention":
            raise ValueError(RETIRED_CROSS_ATTENTION)
        return value


RETIRED_CROSS_ATTENTION = (
    "fusion cross_attention was retired: its low-rank block scored EM 0.000 after 40 steps and 0.025 "
    "after 160 on the sample corpus; use kv (the chunks' own key/values, read by the model's own "
    'attention) or gated (kv with a zero-initialised gate); README "Which fusion to choose"'
)


class SynthesizeParams(StrictModel):
    """`adapter-train.synthesize`: questions made from the documents (the synthesize stage)."""

    mode: Literal["auto", "off", "always"] = Field(
        "auto",
        description="auto: when a corpus version has fewer than min_questions train questions; "
        "always: beside any human questions; off: never",
    )
    min_questions: int = Field(20, ge=0, description="train questions below which auto synthesizes")
    max_chunks: int = Field(768, ge=1, description="chunks sampled per version, stratified by document")
    cloze_per_chunk: int = Field(1, ge=0, description="cloze questions per sampled chunk (no model)")
    cloze_max_share: float = Field(
        0.25,
        ge=0,
        le=1,
        description="most share of each split's kept pairs that cloze pairs (one-entity answers) may "
        "make; a seeded sample of them is kept, all of them in a split where no other generator kept one",
    )
    topic_per_chunk: int = Field(0, ge=0, description="topic questions per sampled chunk (no model)")
    clause_per_chunk: int = Field(
        2,
        ge=0,
        description="clause questions per sampled chunk (no model): the rest of a sentence's clause "
        "asked for (What does X contain?)",
    )
    clause_subjects: bool = Field(
        False,
        description="clause questions also ask for a sentence's subject (What leads to X? -> its subject)",
    )
    teacher: bool = Field(
        False, description="also ask model.teacher for one question per sampled chunk (slow on a CPU)"
    )
    teacher_answer: Literal["sentence", "span"] = Field(
        "sentence",
        description="what the teacher's question is answered by: a sentence of the chunk, or a span",
    )
    teacher_batch_size: int = Field(8, ge=1)
    roundtrip_k: int = Field(5, ge=1, description="a question must retrieve its own chunk in this top k")
    test_share: float = Field(0.2, ge=0, lt=1, description="documents held out for the synthetic test split")

    @model_validator(mode="before")
    @classmethod
    def _mode_alone(cls, value: Any) -> Any:
        """`synthesize: auto` is short for `synthesize: {mode: auto}`."""
        return {"mode": value} if isinstance(value, (str, bool)) else value

    _off = field_validator("mode", mode="before")(classmethod(lambda cls, v: yaml_off(v)))


class TrainParams(StrictModel):
    """`adapter-train`: the peft method, its config and the training budget."""

    method: str = Field("lora", description="any peft method name: lora, adalora, ia3, ...")
    config: dict[str, Any] = Field(default_factory=lambda: {"r": 8, "lora_alpha": 16, "lora_dropout": 0.05})
    epochs: float = Field(1.5, gt=0, description="passes over the training questions (sets the steps)")
    steps: int | None = Field(None, ge=1, description="optimiser steps; overrides epochs when set")
    validation_share: float = Field(
        0.1, ge=0, lt=0.5, description="train questions held out for early stopping (0: none)"
    )
    patience: int = Field(
        2, ge=0, description="validation checks without improvement before stopping (0: off)"
    )
    batch_size: int = Field(4, ge=1)
    lr: float = Field(1e-3, gt=0)
    max_length: int = Field(384, ge=32)
    ensure_gold: bool = True
    bf16: bool = True
    fusion: FusionParams = Field(default_factory=FusionParams)
    objective: Literal["auto", "qa", "lm"] = Field(
        "auto",
        description="qa: train questions; lm: continue chunks from retrieved neighbours; auto: qa if any",
    )
    synthesize: SynthesizeParams = Field(default_factory=SynthesizeParams)
    max_lm_examples: int = Field(512, ge=0, description="chunks sampled for the lm objective (0 = all)")
    max_trainable_share: float | None = Field(0.01, gt=0, description="budget vs base parameters")
    per_domain: bool = Field(
        False,
        description="also one adapter per document domain (payload `domain`), trained on that domain's "
        "questions with passages of that domain, registered as <name>-adapter-<domain>",
    )
    min_domain_questions: int = Field(
        8, ge=1, description="train questions a domain needs in the first corpus version for its own adapter"
    )
    processes: int = Field(1, ge=1, description="data-parallel processes through `accelerate launch`")
    launcher_args: list[str] = Field(
        default_factory=list, description="extra `accelerate launch` flags, e.g. [--gpu_ids, '0,1']"
    )


class ContinualParams(StrictModel):
    """`continual-update`: how each new corpus version is learned without growth or forgetting."""

    steps: int = Field(30, ge=1, description="optimiser steps per new corpus version")
    lr: float = Field(5e-4, gt=0)
    replay_size: int = Field(64, ge=0, description="fixed reservoir size (examples)")
    replay_ratio: float = Field(0.5, ge=0, lt=1, description="share of each batch drawn from replay")
    ewc_weight: float = Field(0.0, ge=0, description="online EWC penalty weight (0: off)")
    ewc_gamma: float = Field(0.9, gt=0, le=1, description="decay of the running Fisher estimate")
    ewc_batches: int = Field(8, ge=1, description="batches used to estimate the Fisher after an update")
    distill_weight: float = Field(0.0, ge=0, description="distillation from the previous version (0: off)")
    distill_top_k: int = Field(16, ge=1, description="tokens kept per answer position of the teacher")
    general_anchors: int = Field(
        0, ge=0, le=24, description="general questions answered by the base model, replayed (0: off)"
    )


class EvaluateParams(StrictModel):
    """`evaluate`: which questions are asked and which systems are compared."""

    max_questions: int = Field(40, ge=0, description="0 evaluates every test question")
    max_new_tokens: int | None = Field(
        None, ge=1, description="answer length cap; null: answer_percentile of the train answers' lengths"
    )
    answer_percentile: float = Field(95, gt=0, le=100, description="percentile behind the default cap")
    batch_size: int = Field(8, ge=1)


class RegisterParams(StrictModel):
    """`register`: the MLflow registry, the model names and the promotion gate."""

    tracking_uri: str = DEFAULT_TRACKING_URI
    model_name: str = Field(
        "auto",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
        description="registered models <name>-adapter and <name>-index; auto: retro for the bundled "
        "sample, retro-<corpus folder name> otherwise. A name holding another corpus is refused",
    )
    gate_metric: str = Field("f1", pattern="^(em|f1)$")
    min_gain: float = Field(0.0, ge=0, description="point gain over the champion needed (0: a tie passes)")
    max_regression: float = Field(
        0.02, ge=0, description="the lower bound of candidate minus champion must lie above minus this"
    )
    alias: str = "challenger"
    on_gate_failure: str = Field(
        "skip",
        pattern="^(skip|register)$",
        description="skip: a version that fails the gate is not registered (its MLflow run keeps the "
        "figures and the reason); register: it is registered with gate=failed and no alias. A corpus "
        "without held-out questions is always registered, never aliased",
    )


class ForgetParams(StrictModel):
    """`retro forget`: what to do when the adapter still answers the forgotten documents' questions."""

    retrain: Literal["auto", "always", "never"] = Field(
        "auto",
        description="auto: when the adapter still answers their questions better than the base model "
        "without passages, list them in the corpus's forgotten.txt (ingest leaves them out of every "
        "version) and retrain: the first-version adapter without them, then every later version; "
        "always: retrain whatever the figure (a takedown that must not rest on a measurement); "
        "never: only report the figure",
    )


class WatchParams(StrictModel):
    """`watch`: the folder watched for new documents and how changes are announced."""

    folder: str = "data/incoming"
    debounce_seconds: float = Field(30.0, gt=0, description="quiet time before a change is announced")
    tick_seconds: float = Field(1.0, gt=0, description="how often the quiet time is checked")
    force_polling: bool = False
    state_file: str = "data/watch/state.json"


class PipelineParams(StrictModel):
    """The whole params.yaml: one field a section, named as in the file."""

    paths: PathParams = Field(default_factory=PathParams)
    model: ModelParams = Field(default_factory=ModelParams)
    retrieval: RetrievalParams = Field(default_factory=RetrievalParams)
    ingest: IngestParams = Field(default_factory=IngestParams)
    chunk: ChunkParams = Field(default_factory=ChunkParams)
    embed: EmbedParams = Field(default_factory=EmbedParams)
    index: IndexParams = Field(default_factory=IndexParams)
    adapter_train: TrainParams = Field(default_factory=TrainParams, alias="adapter-train")
    continual_update: ContinualParams = Field(default_factory=ContinualParams, alias="continual-update")
    evaluate: EvaluateParams = Field(default_factory=EvaluateParams)
    registration: RegisterParams = Field(default_factory=RegisterParams, alias="register")
    forget: ForgetParams = Field(default_factory=ForgetParams)
    watch: WatchParams = Field(default_factory=WatchParams)
    serve: ServeSettings = Field(default_factory=ServeSettings)
    _raw: dict[str, Any] = PrivateAttr(default_factory=dict)

    @property
    def raw(self) -> dict[str, Any]:
        """The file as loaded (for handing on to a child process, e.g. `accelerate launch`)."""
        return self._raw

    def layout(self, root: Path | str = ".") -> Paths:
        """The data layout (`paths` section) under the project root."""
        return Paths(root, self.paths)


_LOW_RANK_BLOCK = (
    "it configured the retired low-rank cross-attention block; fusion kv and gated read the chunks' "
    "own key/values through the model's attention"
)
REMOVED_KEYS = [
    *(("adapter-train.fusion", key, _LOW_RANK_BLOCK) for key in ("layers", "rank", "heads", "memory_source")),
    ("adapter-train.fusion", "kv_gate", "fusion: gated with gate: layer | head is kv with a gate"),
    (
        "adapter-train",
        "supervision",
        "the adapter's own reranker learned nothing and lowered recall; retrieval.rerank trains a "
        "cross-encoder at the index build and keeps it only where it helps",
    ),
]
"""(section, key, what to use instead): keys of older params.yaml files that are refused by name."""


def parse_params(data: dict[str, Any]) -> PipelineParams:
    """Validate a whole params mapping; null sections count as empty. Reads are recorded."""
    if not isinstance(data, dict):
        raise ParamsError("params must be a mapping of sections")
    cleaned = {k: ({} if v is None else v) for k, v in data.items()}
    for section, key, instead in REMOVED_KEYS:
        if key in _section(cleaned, section):
            raise ParamsError(f"{section}.{key} was removed: {instead}; delete it from params.yaml")
    params = validate(PipelineParams, cleaned)
    params._raw = data
    params.traced("")
    return params


def _section(data: dict[str, Any], dotted: str) -> dict[str, Any]:
    """The mapping at a dotted section path, or {} where there is none."""
    node: Any = data
    for part in dotted.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node if isinstance(node, dict) else {}


def load_params(path: Path | str = "params.yaml") -> PipelineParams:
    """Load and validate params.yaml (errors name the file position or the dotted key)."""
    return parse_params(load_params_file(path))
