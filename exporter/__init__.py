"""The core both sides build on: the five tables' schema, the attribute keys, the pure mapping
from spans and log records to rows, and the path rows take into PostgreSQL (delivery, spool,
writer), wired by ``exporter.pipeline.build_pipeline``.

Importing the package imports nothing else: ``exporter.conventions`` and the other pure modules
stay light for a producer that only needs the keys.
"""
