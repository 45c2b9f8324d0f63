"""A text streamer that hands on every generated token at once (transformers' own waits for the
end of a word, which costs a token or two of time to first token)."""

from __future__ import annotations

from typing import Any

from transformers import TextIteratorStreamer


class TokenStreamer(TextIteratorStreamer):
    """Yields the new text after each token, holding back only an incomplete UTF-8 character."""

    def put(self, value: Any) -> None:
        """Receive the token ids `generate` produced and queue the text that is complete."""
        if len(value.shape) > 1:
            value = value[0]
        if self.skip_prompt and self.next_tokens_are_prompt:
            self.next_tokens_are_prompt = False
            return
        self.token_cache.extend(value.tolist())
        text = self.tokenizer.decode(self.token_cache, **self.decode_kwargs)
        if text.endswith("\ufffd"):
            return
        self.on_finalized_text(text[self.print_len :])
        self.print_len = len(text)
