"""Measurement scripts over the zoo (floors, technique matrix, pruning check, export survey): one table each, for notes and issues."""
