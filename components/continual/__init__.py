"""Zero-growth continual learning: a bounded replay reservoir and the updater."""
