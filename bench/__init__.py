"""Benchmarks of fedjax_med (scripts; ``harness`` is their shared timing machinery)."""
