"""The one builder of 422 answers for bad input the framework cannot see (a range the wrong way
round, a malformed cursor, a NUL byte): shaped like FastAPI's own validation errors, with
``loc`` naming the parameter, so a client handles every 422 the same way."""

from __future__ import annotations

from fastapi import Request
from fastapi.exceptions import RequestValidationError


def invalid(parameter: str, message: str, value: object, location: str = "query") -> RequestValidationError:
    """A 422 for one parameter: raise it."""
    return RequestValidationError(
        [{"type": "value_error", "loc": (location, parameter), "msg": message, "input": value}]
    )


def reject_nul_in_query(request: Request) -> None:
    """422 for a query parameter holding a NUL character: PostgreSQL text cannot hold one, and
    it must never surface as a server error."""
    for name, value in request.query_params.multi_items():
        if "\x00" in value:
            raise invalid(name, "must not contain NUL characters", value)
