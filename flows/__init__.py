"""Prefect flows that run the DVC stages."""
