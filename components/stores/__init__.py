"""Vector stores behind one protocol, registered by name, and the retriever built on them."""

from components.stores import faiss_store as _faiss_store  # noqa: F401  (registers "faiss")
from components.stores.base import STORES, Hit, VectorStore

__all__ = ["STORES", "Hit", "VectorStore"]
