"""Secrets in decoded JSON (``extra_data``, ``context``): strings masked as free text, and the
value under a key naming a secret (``secret_names``: ``password``, ``api_key``, not ``config_key``)
replaced whatever it looks like, unless it is a validation message (``{"password": "Field
required"}`` names a field, it holds no password)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from exporter.privacy.text_masking import REDACTED, is_validation_message


def mask_json(
    value: Any, mask_text: Callable[[str], str | None], is_secret_key: Callable[[str], bool]
) -> Any:
    """``value`` with every string passed through ``mask_text`` and, under a key for which
    ``is_secret_key`` holds (``{"password": ...}``), every non-empty value replaced but a
    validation message."""
    if isinstance(value, str):
        return mask_text(value)
    if isinstance(value, dict):
        return {
            str(key): REDACTED
            if item not in (None, "") and is_secret_key(str(key)) and not _is_message(item)
            else mask_json(item, mask_text, is_secret_key)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return [mask_json(item, mask_text, is_secret_key) for item in value]
    return value


def _is_message(item: Any) -> bool:
    return isinstance(item, str) and is_validation_message(item)
