"""The `serve` section of params.yaml: what the service loads, caches, batches and accepts."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from components.core.config import StrictModel, yaml_off


class CacheSettings(StrictModel):
    """`serve.cache`: the in-process and Redis caches of embeddings, retrievals and answers."""

    l1_entries: int = Field(4096, ge=0, description="in-process LRU entries per kind (0: off)")
    l1_ttl_seconds: float = Field(600, gt=0, description="lifetime of an L1 entry")
    redis_url: str | None = Field(
        None, description="shared L2 tier, e.g. redis://localhost:6379/0 (None: off)"
    )
    l2_ttl_seconds: int = Field(3600, ge=1, description="lifetime of an L2 entry")
    l2_timeout_seconds: float = Field(
        0.05, gt=0, description="an L2 call slower than this counts as a miss (one attempt, no retries)"
    )
    l2_pause_seconds: float = Field(
        5.0, ge=0, description="after a failed L2 call, requests skip L2 this long before trying again"
    )
    prefix_entries: int = Field(
        16, ge=0, description="key/values of prompt prefixes (passages) kept for streaming, per pair (0: off)"
    )
    fast_path: bool = Field(
        True,
        description="answer L1 answer-cache hits in a lean ASGI handler before routing and validation "
        "(same keys and limits; components/serving/fast_path.py)",
    )


class BatchSettings(StrictModel):
    """`serve.batch`: how concurrent requests are batched."""

    max_batch: int = Field(8, ge=1, description="requests batched into one embedding or generation call")
    max_wait_ms: float = Field(3.0, ge=0, description="how long the first request waits for others")


class AbstainSettings(StrictModel):
    """`serve.abstain`: when the service declines to answer."""

    mode: Literal["off", "similarity", "support"] = Field(
        "off",
        description="when the service says the documents do not answer instead of guessing: off; "
        "similarity (the best passage's cosine to the question is below `threshold`, checked before "
        "generating); support (under `threshold` of the answer's content words are in the passages)",
    )
    threshold: float = Field(
        0.5, ge=0, le=1, description="the mode's threshold (benchmarks/abstention.py fits one on a corpus)"
    )
    message: str = Field(
        "The retrieved documents do not answer this question.",
        min_length=1,
        description="the answer given instead (the response also carries abstained: true and the reason)",
    )
    _off = field_validator("mode", mode="before")(classmethod(lambda cls, v: yaml_off(v)))


class AuditSettings(StrictModel):
    """`serve.audit`: the audit log of answers."""

    path: str | None = Field(
        "audit.jsonl",
        description="JSON lines, one per answer, under download_dir unless absolute (None: off); {pid} "
        "in it gives each worker its own file",
    )
    questions: bool = Field(False, description="write the question text too (by default only its hash)")
    max_mb: float = Field(64, gt=0, description="size at which the file is rotated")
    backups: int = Field(5, ge=0, description="rotated files kept")
    window: int = Field(200, ge=1, description="answers per adapter behind the rolling quality gauges")


class LimitSettings(StrictModel):
    """`serve.limits`: request size and rate limits."""

    max_body_bytes: int = Field(16_384, ge=256, description="larger request bodies get 413")
    max_question_chars: int = Field(2_000, ge=1)
    max_k: int = Field(20, ge=1, description="largest k a client may ask for")
    requests_per_minute: float | None = Field(
        None, gt=0, description="per API key (per client address without keys); None: no limit; over it: 429"
    )
    burst: int = Field(20, ge=1, description="requests a key may send at once before the rate applies")


class AuthSettings(StrictModel):
    """`serve.auth`: API keys."""

    api_keys_env: str = Field("RETRO_API_KEYS", description="env var with comma-separated keys")
    api_keys_file: str | None = Field(
        None,
        description="file with one key per line, optionally followed by the documents it may see as "
        'a JSON metadata filter: sk-acme {"tenant": "acme"} (a list means any of: {"domain": ["law"]})',
    )

    def keys(self) -> list[bytes]:
        """Every accepted key; none means the service is open (auth off)."""
        return list(self.entries())

    def entries(self) -> dict[bytes, dict | None]:
        """Every accepted key with the document filter it carries (None: every document)."""
        found: dict[bytes, dict | None] = {}
        for key in os.environ.get(self.api_keys_env, "").split(","):
            if key.strip():
                found[key.strip().encode()] = None
        if self.api_keys_file:
            lines = Path(self.api_keys_file).read_text().splitlines()
            for number, line in enumerate(lines, start=1):
                if line.strip() and not line.strip().startswith("#"):
                    key, where = key_line(line, f"{self.api_keys_file}:{number}")
                    found[key] = where
        return found


def key_line(line: str, where_it_is: str) -> tuple[bytes, dict | None]:
    """A keys-file line: the key, and its document filter when one follows it. A malformed filter
    is refused with its place (the key itself is never shown)."""
    key, _, rest = line.strip().partition(" ")
    if not rest.strip():
        return key.encode(), None
    try:
        where = json.loads(rest)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{where_it_is}: the document filter is not JSON ({exc.msg})") from None
    scalar = (str, int, float, bool)
    valid = (
        isinstance(where, dict)
        and where
        and all(
            isinstance(v, scalar) or (isinstance(v, list) and v and all(isinstance(x, scalar) for x in v))
            for v in where.values()
        )
    )
    if not valid:
        raise ValueError(
            f"{where_it_is}: the document filter must be a JSON object of metadata values or lists "
            'of values, e.g. {"tenant": "acme"} or {"domain": ["law", "finance"]}'
        )
    return key.encode(), where


class LlamaCppSettings(StrictModel):
    """`serve.llamacpp`: the llama.cpp engine."""

    threads: int | None = Field(None, ge=1, description="CPU threads for llama.cpp (None: every core)")
    context_tokens: int = Field(
        4096,
        ge=128,
        description="llama.cpp's context window: prompt and answer (key/values allocated up front)",
    )
    base_gguf: str | None = Field(
        None,
        description="GGUF file of the base model (None: written once from the model's transformers "
        "weights in `weights`; for the default model those are the packaged Q4_1 weights dequantized)",
    )
    weights: Literal["f32", "f16", "q8_0", "q4_1", "q4_0"] = Field(
        "q8_0",
        description="weights of the GGUF models written here (the base, an IA3 adapter folded in); q8_0, "
        "q4_1 and q4_0 by llama.cpp's quantizer. LoRA and AdaLoRA adapters stay f32 GGUF LoRA adapters",
    )
    flash_attention: bool = Field(True, description="llama.cpp's fused attention kernel")
    kv_cache: Literal["f16", "f32"] = Field(
        "f16",
        description="precision of llama.cpp's key/value cache: f16 (llama.cpp's default, half the memory) "
        "or f32. Only f32 with flash_attention off gives torch's logits to float rounding; f16 or the "
        "fused kernel (which computes in f16) moves them by up to about 0.3",
    )
    repack_weights: Literal["auto", "on", "off"] = Field(
        "auto",
        description="llama.cpp's repacked layouts of quantized weights (AMX tiles, interleaved q4_0/q8_0 "
        "rows); auto: off where the build would use AMX, whose matrix multiply segfaults on q8_0 and q4_0",
    )
    prefix_state_mb: int = Field(
        512, ge=0, description="memory for saved llama.cpp states of prompt prefixes (passages); 0: off"
    )
    _off = field_validator("repack_weights", mode="before")(classmethod(lambda cls, v: yaml_off(v)))


Device = Literal["auto", "cpu", "cuda"]  # where a model runs (components/adapters/precision.py)
WeightDtype = Literal["float32", "bfloat16", "float16"]


class TorchEngineSettings(StrictModel):
    """`serve.torch`: the torch engine's device, dtype and decode weights."""

    decode_weights: Literal["full", "int8"] = Field(
        "full",
        description="weights of the one-token decode steps: full (the model's own) or int8 (a per-row "
        "int8 copy of every base linear layer, multiplied in bfloat16; prompts still run on the full "
        "weights, adapters stay float). Faster decoding on CPUs, answers may differ slightly",
    )
    device: Device = Field(
        "auto", description="where the served model runs: auto = cuda when torch sees a GPU, else cpu"
    )
    dtype: WeightDtype = Field(
        "float32", description="the served base weights' dtype (float16 needs a GPU; model.dtype says which)"
    )


class ServeSettings(StrictModel):
    """`serve`: the service answering with the promoted adapter and index."""

    tracking_uri: str | None = Field(None, description="MLflow store (default: register.tracking_uri)")
    alias: str = Field("champion", description="registry alias of the retro-adapter version to serve")
    poll_seconds: float = Field(5.0, gt=0, description="how often the alias is checked for a promotion")
    download_dir: str = Field("data/serving", description="where registered versions are downloaded")
    max_new_tokens: int = Field(24, ge=1, le=512)
    abstain: AbstainSettings = AbstainSettings()
    audit: AuditSettings = AuditSettings()
    chunk_kv_folder: str = Field(
        "data/cache/chunk_kv",
        description="kv and gated adapters: the chunk key/value disk tier (paths.chunk_kv)",
    )
    chunk_kv_budget_gb: float = Field(
        8.0, gt=0, description="disk budget of chunk_kv_folder for this service"
    )
    engine: Literal["torch", "llamacpp"] = Field(
        "torch",
        description="what generates answers: torch (every fusion mode) or llamacpp (in_context adapters, "
        "about 5x faster decoding on CPUs; needs the cpu-engine extra)",
    )
    domain_adapters: Literal["auto", "none"] | list[str] = Field(
        "auto",
        description="per-domain adapters (<name>-adapter-<domain>) served beside <name>-adapter on one "
        "base model: auto (every registered one, found at start), none, or a list of domains; each "
        "follows its own alias. torch engine, in_context adapters",
    )
    torch: TorchEngineSettings = TorchEngineSettings()
    llamacpp: LlamaCppSettings = LlamaCppSettings()
    cache: CacheSettings = CacheSettings()
    batching: BatchSettings = BatchSettings()
    limits: LimitSettings = LimitSettings()
    auth: AuthSettings = AuthSettings()
