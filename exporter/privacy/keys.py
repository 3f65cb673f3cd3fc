"""The pseudonym key: the configured one, else one generated once under ``data_dir`` and shared
by every process that uses that directory."""

from __future__ import annotations

import contextlib
import os
import secrets
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from exporter.own_logging import exporter_logger

if TYPE_CHECKING:
    from homepot_foundation.settings import Settings

# The name these messages were always logged under (before the package split).
logger = exporter_logger("exporter.privacy")

KEY_FILE_NAME = "pseudonym.key"


def _read_or_create_key(path: Path) -> bytes:
    """The key in ``path``, created once (0600) when missing; safe against concurrent creators."""
    with contextlib.suppress(FileNotFoundError):
        existing = path.read_text().strip()
        if existing:
            return existing.encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=".pseudonym-")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_hex(32) + "\n")
        os.chmod(temporary, 0o600)
        # link() fails when the file exists: the first creator wins, everyone reads its key.
        with contextlib.suppress(FileExistsError):
            os.link(temporary, path)
            logger.warning(
                "HOMEPOT_ANALYTICS_PSEUDONYM_KEY is unset: generated a pseudonym key in %s. Every process "
                "that writes or queries these tables must use the same key: set the variable when they "
                "run on other machines or with another data_dir.",
                path,
            )
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
    return path.read_text().strip().encode()


def resolve_pseudonym_key(settings: Settings) -> bytes:
    """The configured key, else the one generated under ``data_dir`` (else a per-process key)."""
    if settings.pseudonym_key is not None:
        return settings.pseudonym_key.get_secret_value().encode()
    path = Path(settings.data_dir).expanduser() / KEY_FILE_NAME
    try:
        return _read_or_create_key(path)
    except OSError as error:
        # Never fall back to raw ids: a key of this process only keeps ids pseudonymous, though
        # they no longer match those of other processes and restarts.
        logger.error("cannot read or create %s (%s); user ids get a key of this process only", path, error)
        return _process_key()


@lru_cache(maxsize=1)
def _process_key() -> bytes:
    return secrets.token_hex(32).encode()
