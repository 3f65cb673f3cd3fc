"""Values ready for COPY: attributes read fast, bounded text, clamped ints, timestamps, ids, JSON."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from opentelemetry.attributes import BoundedAttributes

from exporter import conventions as c

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import ReadableSpan

    from exporter.privacy import Privacy

Row = dict[str, Any]
TableRow = tuple[str, Row]


# --- attribute access ------------------------------------------------------------------------
# The mapping reads ~15 attributes per record, many of them absent (each key is looked up in
# both semantic-convention sets). Through the SDK's public views every lookup runs Python code:
# ``ReadableSpan.attributes`` is a mappingproxy over ``BoundedAttributes``, whose ``get`` is
# ``collections.abc.Mapping.get`` (a miss raises and catches KeyError). Read straight from the
# plain dict inside instead: same values, a fraction of the cost. Read only, never modified.
def plain(attributes: Mapping[str, Any] | None) -> Mapping[str, Any]:
    """The dict holding ``attributes`` when it is (or wraps) one; else ``attributes`` itself."""
    if attributes is None:
        return {}
    if type(attributes) is dict:
        return attributes
    if isinstance(attributes, BoundedAttributes):
        inner = getattr(attributes, "_dict", None)
        if type(inner) is dict:
            return inner
    return attributes


def _sdk_properties(cls: type) -> bool:
    """Whether ``cls.attributes`` and ``cls.events`` are the SDK ``ReadableSpan``'s own
    properties (not overridden by a subclass), so that its private fields hold the same."""

    def defined_by(name: str) -> type | None:
        return next((klass for klass in cls.__mro__ if name in klass.__dict__), None)

    return all(
        owner is not None
        and owner.__module__ == "opentelemetry.sdk.trace"
        and owner.__qualname__ == "ReadableSpan"
        for owner in (defined_by("attributes"), defined_by("events"))
    )


# Per span class, whether its private fields can be read; found once per class, without
# importing the SDK (a span made elsewhere, or a subclass that overrides them, uses the properties).
_DIRECT: dict[type, bool] = {}


def _learn(cls: type) -> bool:
    direct = _DIRECT[cls] = _sdk_properties(cls)
    return direct


def span_attributes(span: ReadableSpan) -> Mapping[str, Any]:
    """``span.attributes``, as a plain dict when the SDK's own property would wrap one."""
    direct = _DIRECT.get(type(span))
    if direct is None:
        direct = _learn(type(span))
    return plain(span._attributes if direct else span.attributes)


def has_events(span: ReadableSpan) -> bool:
    """Whether ``span.events`` is not empty, without the tuple the property copies them into."""
    direct = _DIRECT.get(type(span))
    if direct is None:
        direct = _learn(type(span))
    return len(span._events if direct else span.events) > 0


# --- small value helpers ---------------------------------------------------------------------
def first(attributes: Mapping[str, Any], keys: Iterable[str]) -> Any:
    for key in keys:
        value = attributes.get(key)
        if value is not None:
            return value
    return None


def bounded_text(value: Any, limit: int) -> str | None:
    """A bounded string PostgreSQL accepts (text columns reject NUL bytes)."""
    if value is None:
        return None
    text = value if isinstance(value, str) else str(value)
    if "\x00" in text:
        text = text.replace("\x00", "\ufffd")
    return text if len(text) <= limit else text[: limit - 1] + "…"


INT4_MAX = 2**31 - 1
INT8_MAX = 2**63 - 1


def str_or_none(value: Any) -> str | None:
    return None if value is None else str(value)


def clamped_int(value: Any, limit: int = INT4_MAX) -> int | None:
    """An integer clamped to what its column holds (a huge value must not fail the batch)."""
    if type(value) is int:  # what the SDK nearly always holds: no conversion needed
        return value if -limit <= value <= limit else (limit if value > 0 else -limit)
    try:
        number = int(value) if value is not None and value != "" else None
    except (TypeError, ValueError, OverflowError):
        return None
    return None if number is None else max(-limit, min(number, limit))


def timestamp(nanoseconds: int | None) -> datetime:
    if not nanoseconds:
        return datetime.now(UTC)
    return datetime.fromtimestamp(nanoseconds / 1e9, tz=UTC)


def hex_trace_id(trace_id: int | None) -> str | None:
    if not trace_id:
        return None
    try:
        return trace_id.to_bytes(16, "big").hex()  # the digits of format(.., "032x"), 4x faster
    except (OverflowError, AttributeError):  # not a 128-bit id: as it always was
        return format(trace_id, "032x")


def hex_span_id(span_id: int | None) -> str | None:
    if not span_id:
        return None
    try:
        return span_id.to_bytes(8, "big").hex()
    except (OverflowError, AttributeError):
        return format(span_id, "016x")


def event_id(*parts: object) -> str:
    """A deterministic row identity, so the same telemetry maps to the same key every time."""
    return uuid_of("|".join(map(str, parts)))


# A row's identity is the uuid's text, not a ``uuid.UUID``: a UUID is an object the garbage
# collector tracks, and it was the only one in a row, so every row dict was tracked too. With
# text only (str, int, float, datetime, None) a row is never tracked: collections walk none of
# the batch's rows (bench/README.md has the figures). COPY's text format takes the text as it is.
def uuid_of(text: str) -> str:
    """The uuid (in its canonical text) of the MD5 digest of ``text``."""
    h = hashlib.md5(text.encode()).hexdigest()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def canonical_uuid(value: object) -> str | None:
    """``value`` as a uuid's canonical text (lower case, hyphenated); None when it is none."""
    try:
        return str(uuid.UUID(str(value)))
    except ValueError:
        return None


# What json.dumps(value, default=str, ensure_ascii=False) builds on every call, built once.
_JSON_ENCODER = json.JSONEncoder(default=str, ensure_ascii=False)


def json_text(value: Any, privacy: Privacy) -> str | None:
    """JSON text for a jsonb column from a JSON-encoded attribute (or any value)."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            value = {"value": value}
    if not isinstance(value, dict):
        value = {"value": value}
    cleaned = privacy.json(value)
    encoded = _JSON_ENCODER.encode(cleaned)
    # jsonb rejects \u0000 as well; the escaped form survives json.dumps.
    return encoded.replace("\\u0000", "\\ufffd")


def path_of(attributes: Mapping[str, Any], fallback: str) -> str:
    path = first(attributes, c.HTTP_PATH)
    if path is None:
        url = first(attributes, c.HTTP_URL)
        if url is not None:
            # scheme://host/path?query -> /path
            after_scheme = str(url).split("://", 1)[-1]
            path = "/" + after_scheme.split("/", 1)[1] if "/" in after_scheme else "/"
        else:
            path = fallback
    return str(path).split("?", 1)[0]


# The service columns of a resource, per resource object: every span of a provider shares one
# resource, so they are computed once, not per row. The value keeps its resource alive, so an
# id is never reused while cached; the cache is emptied when full (OTLP batches bring new ones).
_SERVICE_COLUMNS: dict[int, tuple[object, dict[str, str | None]]] = {}
_SERVICE_COLUMNS_MAX = 256


def service_columns(resource: Any, limits: Mapping[str, int]) -> dict[str, str | None]:
    """``service_name``, ``service_version`` and ``deployment_environment`` of a resource."""
    cached = _SERVICE_COLUMNS.get(id(resource))
    if cached is not None and cached[0] is resource:
        return cached[1]
    attributes = plain(resource.attributes) if resource is not None else {}
    columns = {
        "service_name": bounded_text(attributes.get(c.SERVICE_NAME), limits["service_name"]),
        "service_version": bounded_text(attributes.get(c.SERVICE_VERSION), limits["service_version"]),
        "deployment_environment": bounded_text(
            first(attributes, c.DEPLOYMENT_ENVIRONMENT), limits["deployment_environment"]
        ),
    }
    if len(_SERVICE_COLUMNS) >= _SERVICE_COLUMNS_MAX:
        _SERVICE_COLUMNS.clear()
    _SERVICE_COLUMNS[id(resource)] = (resource, columns)
    return columns
