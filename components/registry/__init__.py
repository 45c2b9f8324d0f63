"""The MLflow registry: logging, linked index/adapter versions, aliases, loading by alias."""
