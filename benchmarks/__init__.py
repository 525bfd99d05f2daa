"""Benchmarks for jobsync (not part of the installed package)."""
