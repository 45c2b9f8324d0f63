"""Questions made from documents that have none: a teacher model writes them, filters keep the good ones."""
