"""Training adapters with retrieved context."""
