"""A bounded on-disk spool for batches the database could not take right now.

One file per batch, named so that lexical order is arrival order. A file is written to a
temporary name and renamed, so a crash never leaves half a batch behind; a replayer claims a
file by renaming it, so two processes sharing a spool never replay the same batch at once
(and if they did, the writer's idempotent path would still store each row once).

Files are pickles readable only by the owner (the directory is created 0700): whoever can
write the spool directory can run code as the exporter, exactly as with its own source files.
"""

from __future__ import annotations

import itertools
import os
import pickle
import threading
import time
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from exporter.own_logging import exporter_logger

logger = exporter_logger(__name__)

SpooledRows = dict[str, list[dict[str, Any]]]

# Every spool of this process, so /metrics can report their size without being handed them.
_LIVE: weakref.WeakSet[Spool] = weakref.WeakSet()


class Spool:
    """Batches of rows kept on disk, oldest first, at most ``max_bytes`` in all."""

    def __init__(self, directory: Path, max_bytes: int = 512 * 1024 * 1024) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._sequence = itertools.count(1)
        # Serialises the size check with writes and renames, so two exporter threads cannot both
        # squeeze into the last free bytes, nor a file be missed while it changes name. (Another
        # process sharing the directory can overshoot the limit by at most one batch.)
        self._lock = threading.Lock()
        _LIVE.add(self)

    def put(self, rows: SpooledRows) -> bool:
        """Keep a batch; False when the spool is full (the caller counts the rows as dropped)."""
        payload = pickle.dumps(rows, protocol=pickle.HIGHEST_PROTOCOL)
        with self._lock:
            if self.size_bytes() + len(payload) > self.max_bytes:
                return False
            name = f"{time.time_ns():020d}-{os.getpid()}-{next(self._sequence):06d}.batch"
            temporary = self.directory / (name + ".tmp")
            with open(temporary, "wb") as handle:
                handle.write(payload)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, self.directory / name)
        return True

    def pending(self) -> list[Path]:
        return sorted(self.directory.glob("*.batch"))

    def has_pending(self) -> bool:
        """Cheaper than ``pending()`` on the hot path: stops at the first batch found."""
        return next(self.directory.glob("*.batch"), None) is not None

    def size_bytes(self) -> int:
        """Bytes of batches waiting or being replayed (what counts against ``max_bytes``)."""
        total = 0
        with os.scandir(self.directory) as entries:
            for entry in entries:
                if entry.name.endswith((".batch", ".claimed")):
                    try:
                        total += entry.stat().st_size
                    except FileNotFoundError:
                        continue
        return total

    def claim(self) -> Iterator[tuple[Path, SpooledRows]]:
        """Yield (claimed path, rows) oldest first; the caller deletes or releases each."""
        for path in self.pending():
            claimed = path.with_name(f"{path.name}.{os.getpid()}.claimed")
            try:
                with self._lock:
                    os.replace(path, claimed)
            except FileNotFoundError:
                continue  # another process took it
            try:
                with open(claimed, "rb") as handle:
                    rows = pickle.load(handle)
            except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ValueError) as error:
                logger.error("unreadable spool file %s set aside: %s", claimed, error)
                self.set_aside(claimed, "corrupt")
                continue
            yield claimed, rows

    def release(self, claimed: Path) -> None:
        """Give a claimed batch back (its write failed): it is replayed later."""
        original = claimed.name.split(".batch", 1)[0] + ".batch"
        with self._lock:
            os.replace(claimed, claimed.with_name(original))

    def done(self, claimed: Path) -> None:
        claimed.unlink(missing_ok=True)

    def set_aside(self, claimed: Path, why: str) -> Path:
        """Keep a batch that can never be written out of the replay queue, for a human to read."""
        target = claimed.with_name(claimed.name.split(".batch", 1)[0] + f".{why}")
        with self._lock:
            os.replace(claimed, target)
        return target

    def recover_claims(self) -> None:
        """Put back batches claimed by a process that died mid-replay."""
        for claimed in self.directory.glob("*.claimed"):
            pid = claimed.name.rsplit(".", 2)[-2]
            if pid.isdigit() and _process_alive(int(pid)) and int(pid) != os.getpid():
                continue
            try:
                self.release(claimed)
            except FileNotFoundError:
                continue  # its owner finished it meanwhile


def spool_usage() -> dict[Path, tuple[int, int, int]]:
    """(bytes used, waiting batches, byte limit) of every spool directory this process uses."""
    usage: dict[Path, tuple[int, int, int]] = {}
    for spool in list(_LIVE):
        if spool.directory not in usage:
            usage[spool.directory] = (spool.size_bytes(), len(spool.pending()), spool.max_bytes)
    return usage


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
