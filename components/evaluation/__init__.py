"""Answer and retrieval metrics, and the side-by-side evaluation of systems."""
