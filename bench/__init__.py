"""Benchmarks for voxray (run `.venv/bin/python bench/run.py`)."""
