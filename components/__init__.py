"""Retro-PEFT: reusable building blocks of the retrieval-augmented adapter pipeline."""
