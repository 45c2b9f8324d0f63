"""Answering questions with a registered adapter and its linked index."""
