"""A bounded on-disk spool for batches the database could not take right now.

One file per batch, named so that lexical order is arrival order. A file is written to a
temporary name and renamed, so a crash never leaves half a batch behind; a replayer claims a
file by renaming it, so two processes sharing a spool never replay the same batch at once
(and if they did, the writer's idempotent path would still store each row once).
"""

from __future__ import annotations

import logging
import os
import pickle
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

SpooledRows = dict[str, list[dict[str, Any]]]


class Spool:
    """Batches of rows kept on disk, oldest first, at most ``max_bytes`` in all."""

    def __init__(self, directory: Path, max_bytes: int = 512 * 1024 * 1024) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.directory.mkdir(parents=True, exist_ok=True)
        self._sequence = 0

    def put(self, rows: SpooledRows) -> bool:
        """Keep a batch; False when the spool is full (the caller counts the rows as dropped)."""
        payload = pickle.dumps(rows, protocol=pickle.HIGHEST_PROTOCOL)
        if self.size_bytes() + len(payload) > self.max_bytes:
            return False
        self._sequence += 1
        name = f"{time.time_ns():020d}-{os.getpid()}-{self._sequence:06d}.batch"
        temporary = self.directory / (name + ".tmp")
        with open(temporary, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, self.directory / name)
        return True

    def pending(self) -> list[Path]:
        return sorted(self.directory.glob("*.batch"))

    def size_bytes(self) -> int:
        total = 0
        for path in self.directory.glob("*.batch"):
            try:
                total += path.stat().st_size
            except FileNotFoundError:
                continue
        return total

    def claim(self) -> Iterator[tuple[Path, SpooledRows]]:
        """Yield (claimed path, rows) oldest first; the caller deletes or releases each."""
        for path in self.pending():
            claimed = path.with_name(f"{path.name}.{os.getpid()}.claimed")
            try:
                os.replace(path, claimed)
            except FileNotFoundError:
                continue  # another process took it
            try:
                with open(claimed, "rb") as handle:
                    rows = pickle.load(handle)
            except (OSError, pickle.UnpicklingError, EOFError) as error:
                logger.error("unreadable spool file %s set aside: %s", claimed, error)
                os.replace(claimed, claimed.with_suffix(".corrupt"))
                continue
            yield claimed, rows

    @staticmethod
    def release(claimed: Path) -> None:
        """Give a claimed batch back (its write failed): it is replayed later."""
        original = claimed.name.split(".batch", 1)[0] + ".batch"
        os.replace(claimed, claimed.with_name(original))

    @staticmethod
    def done(claimed: Path) -> None:
        claimed.unlink(missing_ok=True)

    def recover_claims(self) -> None:
        """Put back batches claimed by a process that died mid-replay."""
        for claimed in self.directory.glob("*.claimed"):
            pid = claimed.name.rsplit(".", 2)[-2]
            if pid.isdigit() and _process_alive(int(pid)) and int(pid) != os.getpid():
                continue
            self.release(claimed)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
