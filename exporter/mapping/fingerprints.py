"""Error grouping: messages normalised, fingerprinted and categorised, so occurrences group."""

from __future__ import annotations

import hashlib
import re

_VOLATILE = [
    (re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"), "<uuid>"),
    (re.compile(r"\b\d{1,3}(?:\.\d{1,3}){3}\b"), "<ip>"),
    (re.compile(r"\b0x[0-9a-fA-F]+\b|\b[0-9a-fA-F]{12,}\b"), "<hex>"),
    # A short hex id with a digit in it, also after an underscore (job_1a2b3c4d, dev_00af3):
    # digit by digit it would leave its letters behind and make a group per id.
    (re.compile(r"(?<![0-9A-Za-z])(?=[a-fA-F]*\d)[0-9a-fA-F]{6,}(?![0-9A-Za-z])"), "<hex>"),
    (re.compile(r"'[^']*'|\"[^\"]*\""), "<str>"),
    (re.compile(r"\d+(?:\.\d+)?"), "<n>"),
]


def normalise_message(message: str) -> str:
    """The message with ids, numbers and quoted values replaced, so occurrences group."""
    for pattern, placeholder in _VOLATILE:
        message = pattern.sub(placeholder, message)
    return " ".join(message.split())[:500]


def error_fingerprint(error_type: str | None, message: str | None) -> str:
    """md5 of error type and normalised message: one group per kind of error."""
    basis = f"{error_type or ''}|{normalise_message(message or '')}"
    return hashlib.md5(basis.encode()).hexdigest()


_CATEGORY_HINTS = (
    ("validation", ("validation", "decodeerror", "invalid")),
    (
        "database",
        ("operationalerror", "integrityerror", "programmingerror", "databaseerror", "sql", "psycopg"),
    ),
    ("external_service", ("connect", "timeout", "httperror", "httpstatus", "requestexception", "mqtt")),
)


def error_category(error_type: str | None) -> str:
    """A spec category (api, database, external_service, validation) guessed from the type."""
    lowered = (error_type or "").lower()
    for category, hints in _CATEGORY_HINTS:
        if any(hint in lowered for hint in hints):
            return category
    return "api"


def short_type(error_type: str | None) -> str | None:
    """The class name of a qualified exception type (``a.b.ValueError`` -> ``ValueError``)."""
    return error_type.rsplit(".", 1)[-1] if error_type else None
