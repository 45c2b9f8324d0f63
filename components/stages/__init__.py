"""One module per DVC stage: a typed params model, run(...), and a thin CLI (main)."""
