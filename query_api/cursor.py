"""Opaque page cursors: the (timestamp, id) of the last row a page returned.

Paging by this keyset rather than OFFSET means rows arriving while a client pages never shift
what the next page holds, and deep pages cost as little as the first.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from datetime import datetime

_MAX_ID = 2**63 - 1
_MAX_LENGTH = 200


class InvalidCursor(ValueError):
    """The text is not a cursor this service issued."""


@dataclass(frozen=True)
class Cursor:
    timestamp: datetime
    id: int


def encode_cursor(cursor: Cursor) -> str:
    payload = json.dumps([cursor.timestamp.isoformat(), cursor.id], separators=(",", ":"))
    return base64.urlsafe_b64encode(payload.encode()).decode().rstrip("=")


def decode_cursor(text: str) -> Cursor:
    """The cursor ``text`` encodes; InvalidCursor for anything ``encode_cursor`` did not make."""
    if len(text) > _MAX_LENGTH:
        raise InvalidCursor("too long")
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        timestamp_text, row_id = json.loads(raw)
        timestamp = datetime.fromisoformat(timestamp_text)
    except (binascii.Error, ValueError, TypeError):
        raise InvalidCursor("not a cursor issued by this service") from None
    # bool is an int subclass; a float id would compare but was never issued.
    if type(row_id) is not int or not 0 <= row_id <= _MAX_ID or timestamp.tzinfo is None:
        raise InvalidCursor("not a cursor issued by this service")
    return Cursor(timestamp, row_id)
