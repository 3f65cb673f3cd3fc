"""The one builder of 422 answers for bad input the framework cannot see (a range the wrong way
round, a malformed cursor, a NUL byte): shaped like FastAPI's own validation errors, with
``loc`` naming the parameter, so a client handles every 422 the same way."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError


def invalid(parameter: str, message: str, value: object, location: str = "query") -> RequestValidationError:
    """A 422 for one parameter: raise it."""
    return RequestValidationError(
        [{"type": "value_error", "loc": (location, parameter), "msg": message, "input": value}]
    )


# Kept on the route itself (routes are not hashable): computed once per route.
_KNOWN_ATTRIBUTE = "_homepot_query_names"


def _query_names(route: object) -> frozenset[str] | None:
    """The query parameters ``route`` declares, its dependencies' included (None: not a FastAPI route)."""
    known: frozenset[str] | None = getattr(route, _KNOWN_ATTRIBUTE, None)
    if known is None:
        dependant = getattr(route, "dependant", None)
        if dependant is None:
            return None
        known = frozenset(_declared_query(dependant))
        setattr(route, _KNOWN_ATTRIBUTE, known)
    return known


def _declared_query(dependant: Any) -> set[str]:
    """The query parameter names of a FastAPI dependant and of the dependencies it has."""
    names = {str(field.alias) for field in getattr(dependant, "query_params", ())}
    for child in getattr(dependant, "dependencies", ()):
        names |= _declared_query(child)
    return names


def reject_unknown_query(request: Request) -> None:
    """422 for a query parameter the endpoint does not take: a misspelt filter (``servce_name``)
    must not silently widen the answer to every row."""
    known = _query_names(request.scope.get("route"))
    if known is None:
        return
    for name, value in request.query_params.multi_items():
        if name not in known:
            accepted = ", ".join(sorted(known)) or "none"
            raise invalid(name, f"unknown query parameter; this endpoint takes: {accepted}", value)


def reject_nul_in_query(request: Request) -> None:
    """422 for a query parameter holding a NUL character: PostgreSQL text cannot hold one, and
    it must never surface as a server error."""
    for name, value in request.query_params.multi_items():
        if "\x00" in value:
            raise invalid(name, "must not contain NUL characters", value)
