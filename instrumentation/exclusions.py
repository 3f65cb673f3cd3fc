"""Which request paths are not recorded (health checks, docs, metrics)."""

from __future__ import annotations

from collections.abc import Sequence


class ExcludedPaths:
    """Exact paths, or prefixes written with a trailing ``*`` (``/static/*``).

    An exact path also matches with a trailing slash; excluding ``/health`` does not exclude
    ``/api/health-report``. Matching is a set lookup plus a few ``startswith``: it runs on
    every request.
    """

    def __init__(self, paths: Sequence[str]) -> None:
        self._exact = frozenset(path.rstrip("/") or "/" for path in paths if not path.endswith("*"))
        self._prefixes = tuple(path[:-1] for path in paths if path.endswith("*"))

    def __bool__(self) -> bool:
        return bool(self._exact or self._prefixes)

    def __contains__(self, path: str) -> bool:
        return (path.rstrip("/") or "/") in self._exact or path.startswith(self._prefixes)
