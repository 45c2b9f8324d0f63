"""Loading, validation, chunking and the synthetic knowledge-base generator."""
