"""Helpers shared by the reliability tests (spans, log records and rows built by hand)."""
