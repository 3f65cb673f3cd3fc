"""The FastAPI service the per-request benchmark loads, one process per variant."""
