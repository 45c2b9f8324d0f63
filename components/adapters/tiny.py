"""Tiny randomly initialised models with a word-level tokenizer, for unit tests and quick modes.

They run in milliseconds on a CPU and can learn a handful of facts, which is all a test of the
machinery (not of the quality) needs.
"""

from __future__ import annotations

from pathlib import Path


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
