"""OTLP/JSON documents into OTLP protobuf messages, by the messages' own descriptors.

protobuf's ``json_format.ParseDict`` walks a document field by field in Python: 200-250 us a span
here, more than everything else the OTLP sink does with the span. OTLP/JSON needs far less than
protobuf's whole JSON mapping (OTLP has no maps, ``Any`` or well-known types), so this module
turns each JSON object into its message's keyword arguments (a dict per message, a list of dicts
per repeated field) and protobuf's C implementation builds the whole tree in one constructor
call. What each field accepts is read once per message type from its descriptor.

The rules (OTLP specification, "JSON Protobuf Encoding"):
- keys are the fields' lowerCamelCase JSON names; the proto names are accepted too, as by
  ``json_format``; unknown keys are ignored (newer senders may add fields), ``null`` is absent;
- trace and span ids are hex, not base64; base64 of the right size is accepted too (senders that
  used protobuf's own mapping). An id that is neither becomes one byte, so that the decoder
  rejects that record alone for its id and keeps the rest of the request;
- 64-bit integers come as strings or numbers, enums as numbers or names (an unknown name is
  ignored, as ``json_format`` ignores it with ``ignore_unknown_fields``), other bytes as base64.
A value of the wrong type raises ``ValueError``: the request is malformed.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

M = TypeVar("M", bound=Message)
Convert = Callable[[Any], Any]

# The id fields of spans, links and log records, and their sizes in bytes.
ID_SIZES = {"trace_id": 16, "span_id": 8, "parent_span_id": 8}
# What an id that is neither hex nor base64 of its size becomes: the wrong size, rejected later.
_INVALID_ID = b"\x00"
# An enum name the message does not know: its field is left unset.
_ABSENT = object()


# Per JSON key (JSON name and proto name), the field it sets and how its value converts.
Plan = dict[str, tuple[str, Convert]]
_PLANS: dict[str, Plan] = {}  # per message type, by full name


def message_from_json(document: Any, message_type: type[M]) -> M:
    """The ``message_type`` message an OTLP/JSON ``document`` (parsed JSON) holds."""
    descriptor = message_type.DESCRIPTOR
    try:
        return message_type(**_fields(document, _plan(descriptor), descriptor.name))
    except (TypeError, ValueError, OverflowError) as error:  # protobuf refusing a value
        raise ValueError(str(error)) from error


def _fields(document: Any, plan: Plan, type_name: str) -> dict[str, Any]:
    if type(document) is not dict:
        raise ValueError(f"{type_name} must be a JSON object, not {type(document).__name__}")
    fields = {}
    for key, value in document.items():
        entry = plan.get(key)
        if entry is None or value is None:
            continue
        name, convert = entry
        converted = convert(value)
        if converted is not _ABSENT:
            fields[name] = converted
    return fields


def _plan(descriptor: Descriptor) -> Plan:
    """Built once per message type; registered before it is filled, so that a type nested in
    itself (an AnyValue's array of AnyValues) finds its own plan."""
    plan = _PLANS.get(descriptor.full_name)
    if plan is not None:
        return plan
    plan = _PLANS[descriptor.full_name] = {}
    for field in descriptor.fields:
        plan[field.json_name] = plan[field.name] = (field.name, _converter(field))
    return plan


def _is_repeated(field: FieldDescriptor) -> bool:
    # protobuf 7 has only ``is_repeated``; before 6, only ``label``.
    repeated = getattr(field, "is_repeated", None)
    if repeated is None:
        return bool(field.label == FieldDescriptor.LABEL_REPEATED)
    return bool(repeated)


def _converter(field: FieldDescriptor) -> Convert:
    name = field.name
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        plan, type_name = _plan(field.message_type), field.message_type.name
        if _is_repeated(field):  # the common case (spans, attributes, events) in one step
            return lambda values: [_fields(item, plan, type_name) for item in _items(values, name)]
        return lambda value: _fields(value, plan, type_name)
    convert = _scalar(field)
    if _is_repeated(field):
        return lambda values: [convert(item) for item in _items(values, name)]
    return convert


def _items(values: Any, name: str) -> list[Any]:
    if type(values) is not list:
        raise ValueError(f"{name} must be a JSON array")
    return [value for value in values if value is not None]


def _scalar(field: FieldDescriptor) -> Convert:
    kind, name = field.type, field.name
    if kind == FieldDescriptor.TYPE_BYTES:
        size = ID_SIZES.get(name)
        return _base64 if size is None else lambda value: _id(value, size)
    if kind == FieldDescriptor.TYPE_ENUM:
        numbers = {value.name: value.number for value in field.enum_type.values}
        return lambda value: _enum(value, numbers, name)
    if kind == FieldDescriptor.TYPE_STRING:
        return lambda value: _typed(value, str, name)
    if kind == FieldDescriptor.TYPE_BOOL:
        return lambda value: _typed(value, bool, name)
    if kind in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return lambda value: _number(value, name)
    return lambda value: _integer(value, name)


def _typed(value: Any, kind: type, name: str) -> Any:
    if type(value) is not kind:
        raise ValueError(f"{name} must be a JSON {'string' if kind is str else 'boolean'}")
    return value


def _integer(value: Any, name: str) -> int:
    if type(value) is int:
        return value
    if type(value) is float and value.is_integer():
        return int(value)
    if type(value) is str and value.strip() == value:
        try:
            return int(value)
        except ValueError:
            pass
    raise ValueError(f"{name} must be an integer (a JSON number or string), not {value!r}")


def _number(value: Any, name: str) -> float:
    if type(value) in (int, float):
        return float(value)
    if type(value) is str:
        try:
            return float(value)  # "NaN", "Infinity", "-Infinity", "1.5"
        except ValueError:
            pass
    raise ValueError(f"{name} must be a number, not {value!r}")


def _enum(value: Any, numbers: Mapping[str, int], name: str) -> Any:
    if type(value) is int:
        return value  # OTLP's enums are open: an unknown number is kept as it is
    if type(value) is str:
        return numbers.get(value, _ABSENT)
    raise ValueError(f"{name} must be an enum number or name, not {value!r}")


def _base64(value: Any) -> bytes:
    if type(value) is not str:
        raise ValueError("bytes must be a base64 JSON string")
    padded = value + "=" * (-len(value) % 4)
    try:
        if "-" in value or "_" in value:
            return base64.urlsafe_b64decode(padded)
        return base64.b64decode(padded, validate=True)
    except (binascii.Error, ValueError) as error:
        raise ValueError(f"invalid base64: {value!r}") from error


def _id(value: Any, size: int) -> bytes:
    if type(value) is not str:
        raise ValueError("a trace or span id must be a JSON string")
    if value == "":
        return b""
    if len(value) == 2 * size:
        try:
            return bytes.fromhex(value)
        except ValueError:
            pass
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return _INVALID_ID
    return raw if len(raw) == size else _INVALID_ID
