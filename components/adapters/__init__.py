"""Base models, PEFT adapters, prompts and generation."""
