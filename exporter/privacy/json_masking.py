"""Secrets in decoded JSON (``extra_data``, ``context``): strings masked as free text, and the
value under a key naming a secret replaced whatever it looks like."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from exporter.privacy.text_masking import REDACTED


def mask_json(
    value: Any, mask_text: Callable[[str], str | None], is_secret_key: Callable[[str], bool]
) -> Any:
    """``value`` with every string passed through ``mask_text`` and, under a key for which
    ``is_secret_key`` holds (``{"password": ...}``), every non-empty value replaced."""
    if isinstance(value, str):
        return mask_text(value)
    if isinstance(value, dict):
        return {
            str(key): REDACTED
            if item not in (None, "") and is_secret_key(str(key))
            else mask_json(item, mask_text, is_secret_key)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return [mask_json(item, mask_text, is_secret_key) for item in value]
    return value
