"""Per-layer profiles: each runtime's own op profiler, ops mapped back to Keras layers."""
