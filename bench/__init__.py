"""Benchmarks: ingest throughput, per-request cost and completeness under load (``bench/run.py``)."""
