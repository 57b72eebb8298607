"""Keras-level techniques: Keras model in, Keras model (+ per-layer Outcome) out."""
