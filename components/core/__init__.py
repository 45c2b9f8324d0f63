"""What every layer shares: params loading and models, the data layout, name registries,
the offline environment and atomic writes of stage outputs."""
