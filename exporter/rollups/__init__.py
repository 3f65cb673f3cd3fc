"""Rollups: per time bucket, what the summaries and time series need, kept exact as rows are
written (``deltas``), rebuildable from raw rows (``rebuild``), outliving the raw rows."""
