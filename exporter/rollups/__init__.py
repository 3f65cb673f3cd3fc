"""Rollups: per time bucket, what the summaries and time series need, built in PostgreSQL from
the raw rows (``rebuild``) for the buckets triggers mark stale (``stale``, ``refresh``), read with
raw rows for what is not refreshed yet, outliving the raw rows."""
