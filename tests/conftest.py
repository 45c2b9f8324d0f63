"""Shared fixtures: tiny corpora and tiny random models built in the test, offline settings."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
os.environ.setdefault("MLFLOW_ENABLE_TELEMETRY", "false")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

ROOT = Path(__file__).resolve().parents[1]


def build_tiny_model(folder: Path, texts: list[str], family: str = "llama") -> Path:
    """A randomly initialised causal LM with a word-level tokenizer trained on `texts`.

    The initialiser range is ten times the usual 0.02: with a frozen final norm and a tiny
    output matrix, an adapter could not move the logits far enough to learn anything.
    """
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

    special = ["<pad>", "<s>", "</s>", "<unk>"]
    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()]
    )
    tok.train_from_iterator(texts, trainers.WordLevelTrainer(special_tokens=special, min_frequency=1))
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
    )
    torch.manual_seed(0)
    if family == "llama":
        from transformers import LlamaConfig

        config = LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=1024,
            pad_token_id=0,
            bos_token_id=1,
            eos_token_id=2,
            initializer_range=0.2,
        )
    elif family == "t5":
        from transformers import AutoModelForSeq2SeqLM, T5Config

        config = T5Config(
            vocab_size=len(tokenizer),
            d_model=64,
            d_ff=128,
            num_layers=2,
            num_heads=4,
            d_kv=16,
            pad_token_id=0,
            eos_token_id=2,
            decoder_start_token_id=0,
        )
        model = AutoModelForSeq2SeqLM.from_config(config)
    else:
        from transformers import GPT2Config

        config = GPT2Config(
            vocab_size=len(tokenizer),
            n_embd=64,
            n_layer=2,
            n_head=4,
            n_positions=1024,
            pad_token_id=0,
            bos_token_id=1,
            eos_token_id=2,
            initializer_range=0.2,
        )
    if family != "t5":
        model = AutoModelForCausalLM.from_config(config)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def corpus_texts(corpus: Path) -> list[str]:
    texts = [p.read_text() for p in corpus.rglob("*.md")]
    texts += [line for p in corpus.rglob("qa.jsonl") for line in p.read_text().splitlines()]
    from components.adapters.prompting import WITH_CONTEXT, WITHOUT_CONTEXT

    return texts + [WITH_CONTEXT, WITHOUT_CONTEXT, "Context: Question: Answer:"]


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from components.data.synthetic import make_corpus

    out = tmp_path_factory.mktemp("corpus") / "kb"
    make_corpus(out, seed=3, entities_per_domain=2, versions=2, add_per_version=2, remove_per_version=1)
    return out


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory, tiny_corpus: Path) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-llama"), corpus_texts(tiny_corpus))
