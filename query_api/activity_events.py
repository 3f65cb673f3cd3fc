"""What a browser may send as a user activity, and the pure rules that turn it into a record.

No I/O here: validation of one event, of a batch (invalid events reported by index), the event
time (clamped to something believable), the stored event identity, and the user named by a
bearer token. The intake router (``query_api.intake``) does the HTTP and the emitting.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
)

from homepot_foundation.tokens import bearer_token, verified_subject

# Browser clocks are often a little off; these bounds only catch the absurd (a clock set to
# 1970, an event kept for weeks in storage). Such events are stored at the time they arrived.
MAX_FUTURE_SKEW = timedelta(minutes=5)
MAX_AGE = timedelta(days=7)

# A namespace for client event ids. The stored id is derived from the event's session and id,
# never from the user or token it was sent with: an event resent after the user logged in (or
# out, or with an expired token) is stored once. Both are random ids the browser made.
_EVENT_ID_NAMESPACE = uuid.UUID("5f0e9d3c-7a39-4c4e-9a47-2c8e1b6f0d11")

ActivityType = Annotated[
    str, StringConstraints(strip_whitespace=True, pattern=r"^[A-Za-z][A-Za-z0-9_.:-]{0,63}$")
]


class ActivityEvent(BaseModel):
    """One frontend event. Unknown keys (``user_id`` among them) are ignored: the user comes
    from the request's bearer token, never from the body. Text longer than its column is
    shortened when stored."""

    model_config = ConfigDict(extra="ignore", coerce_numbers_to_str=True)

    activity_type: ActivityType
    page_url: str | None = None
    element_id: str | None = None
    search_query: str | None = None
    # ``metadata`` is what older HOMEPOT clients called it.
    extra_data: dict[str, Any] | None = Field(
        default=None, validation_alias=AliasChoices("extra_data", "metadata")
    )
    duration_ms: float | None = Field(default=None, ge=0, le=2**31 - 1)
    session_id: str | None = None
    timestamp: datetime | None = None
    event_id: uuid.UUID | None = None

    @field_validator("timestamp", mode="before")
    @classmethod
    def _epoch_milliseconds(cls, value: Any) -> Any:
        """A number is milliseconds since the epoch (what ``Date.now()`` gives)."""
        if isinstance(value, bool):
            raise ValueError("timestamp must be an ISO 8601 string or epoch milliseconds")
        if isinstance(value, int | float):
            try:
                return datetime.fromtimestamp(value / 1000, tz=UTC)
            except (OverflowError, OSError, ValueError):
                # Out of any calendar: treat as "no usable time", clamped later to arrival time.
                return datetime.min.replace(tzinfo=UTC)
        return value

    @property
    def duration(self) -> int | None:
        return None if self.duration_ms is None else round(self.duration_ms)


def describe_error(error: ValidationError) -> str:
    """One line a frontend developer can act on: ``field: reason; field: reason``."""
    parts = []
    for item in error.errors(include_url=False):
        location = ".".join(str(part) for part in item["loc"]) or "event"
        parts.append(f"{location}: {item['msg']}")
    return "; ".join(parts)


def validate_event(payload: Any) -> ActivityEvent:
    """Raises ``ValidationError`` (or ``ValueError`` for a non-object) when it is not an event."""
    if not isinstance(payload, dict):
        raise ValueError(f"an event must be a JSON object, not {type(payload).__name__}")
    return ActivityEvent.model_validate(payload)


def validate_batch(payload: Sequence[Any]) -> tuple[list[ActivityEvent], list[dict[str, Any]]]:
    """The valid events and, for each invalid one, ``{"index": i, "error": reason}``."""
    events: list[ActivityEvent] = []
    rejected: list[dict[str, Any]] = []
    for index, item in enumerate(payload):
        try:
            events.append(validate_event(item))
        except ValidationError as error:
            rejected.append({"index": index, "error": describe_error(error)})
        except ValueError as error:
            rejected.append({"index": index, "error": str(error)})
    return events, rejected


def event_time(event: ActivityEvent, received: datetime) -> tuple[datetime, bool]:
    """When the event happened, and whether the client's time was replaced by ``received``."""
    given = event.timestamp
    if given is None:
        return received, False
    if given.tzinfo is None:
        given = given.replace(tzinfo=UTC)  # a time without zone is taken as UTC
    if given > received + MAX_FUTURE_SKEW or given < received - MAX_AGE:
        return received, True
    return given, False


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def to_nanoseconds(moment: datetime) -> int:
    """Exact integer nanoseconds since the epoch (a float would lose the microseconds)."""
    return (moment - _EPOCH) // timedelta(microseconds=1) * 1000


def stored_event_id(event: ActivityEvent) -> str | None:
    """The row identity for an event that carries a client id; None lets the recorder pick one."""
    if event.event_id is None:
        return None
    return str(uuid.uuid5(_EVENT_ID_NAMESPACE, f"{event.session_id or ''}|{event.event_id}"))


def bearer_subject(authorization: str | None, secret: str | None) -> str | None:
    """The ``sub`` of an HS256 JWT in an ``Authorization: Bearer`` header, only when its signature
    (and expiry, if any) checks out with ``secret``; otherwise None (the event is anonymous)."""
    token = bearer_token(authorization)
    return verified_subject(token, secret) if token and secret else None


def sender(cookie_token: str | None, authorization: str | None, secret: str | None) -> str | None:
    """Who sent a frontend request, as the host app itself decides (HOMEPOT: the session cookie's
    JWT first, the bearer header second): a token that does not verify names nobody."""
    if not secret:
        return None
    if cookie_token:
        token = bearer_token(cookie_token) or cookie_token  # some apps store "Bearer <jwt>"
        user = verified_subject(token, secret)
        if user is not None:
            return user
    return bearer_subject(authorization, secret)
