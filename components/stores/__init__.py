"""Vector stores behind one protocol, registered by name, and the retriever built on them."""

from components.stores import faiss_store as _faiss_store  # noqa: F401  (registers "faiss")
from components.stores import pgvector_store as _pgvector_store  # noqa: F401  (registers "pgvector")
from components.stores import qdrant_store as _qdrant_store  # noqa: F401  (registers "qdrant")
from components.stores import weaviate_store as _weaviate_store  # noqa: F401  (registers "weaviate")
from components.stores.base import STORES, Hit, StoreInputError, StoreUnavailable, VectorStore

__all__ = ["STORES", "Hit", "StoreInputError", "StoreUnavailable", "VectorStore"]
