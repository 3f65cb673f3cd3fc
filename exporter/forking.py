"""Repairing an object's threads and locks in a forked child (gunicorn --preload forks workers).

Only the forking thread exists in the child, and a lock another thread held at fork time stays
held for ever. Objects that own threads or locks register a repair to run in each child.
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def repair_after_fork(instance: T, repair: Callable[[T], None]) -> None:
    """Call ``repair(instance)`` in every forked child while ``instance`` is alive (held weakly:
    registering never keeps an object alive)."""
    if not hasattr(os, "register_at_fork"):
        return
    reference = weakref.ref(instance)

    def in_child() -> None:
        alive = reference()
        if alive is not None:
            repair(alive)

    os.register_at_fork(after_in_child=in_child)
