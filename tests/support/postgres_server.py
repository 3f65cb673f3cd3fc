"""Which PostgreSQL the tests use: the server on 127.0.0.1:5432 when there is one, else a
throwaway cluster of the embedded PostgreSQL (the demo's), so ``make test`` passes on any machine.

``HOMEPOT_ANALYTICS_TEST_ADMIN_URL`` names another server; ``HOMEPOT_ANALYTICS_TEST_POSTGRES``
chooses: ``auto`` (the default: the server if it answers, else embedded), ``server`` (fail
without one) or ``embedded`` (always the throwaway cluster). The choice is written back to the
environment so the processes tests start use the same server.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import psycopg

from homepot_foundation.embedded_db import ensure_embedded_postgres, stop_embedded_postgres

DEFAULT_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
ADMIN_URL_VARIABLE = "HOMEPOT_ANALYTICS_TEST_ADMIN_URL"
MODE_VARIABLE = "HOMEPOT_ANALYTICS_TEST_POSTGRES"
MODES = ("auto", "server", "embedded")
# The benchmark's own tests (tests/test_bench_quick.py) read this one.
BENCH_ADMIN_URL_VARIABLE = "HOMEPOT_ANALYTICS_BENCH_ADMIN_URL"


def answers(url: str) -> bool:
    """Whether a PostgreSQL server accepts a connection at ``url`` (within 3 s)."""
    try:
        with psycopg.connect(url, connect_timeout=3):
            return True
    except psycopg.Error:
        return False


class ServerForTests:
    """The admin URL of the tests' server, and the throwaway cluster if one was started."""

    def __init__(self) -> None:
        self.cluster_dir: Path | None = None
        given = os.environ.get(ADMIN_URL_VARIABLE)
        mode = os.environ.get(MODE_VARIABLE, "auto").strip().lower() or "auto"
        if mode not in MODES:
            raise SystemExit(f"{MODE_VARIABLE}={mode!r}: use one of {', '.join(MODES)}")
        if given:
            self.admin_url = given
        elif mode != "embedded" and answers(DEFAULT_ADMIN_URL):
            self.admin_url = DEFAULT_ADMIN_URL
        elif mode == "server":
            raise SystemExit(f"no PostgreSQL server answers at {DEFAULT_ADMIN_URL} ({MODE_VARIABLE}=server)")
        else:
            why = (
                f"{MODE_VARIABLE}=embedded"
                if mode == "embedded"
                else f"no PostgreSQL server at {DEFAULT_ADMIN_URL}"
            )
            self.admin_url = self._start_cluster(why)
        os.environ[ADMIN_URL_VARIABLE] = self.admin_url
        os.environ.setdefault(BENCH_ADMIN_URL_VARIABLE, self.admin_url)

    def _start_cluster(self, why: str) -> str:
        self.cluster_dir = Path(tempfile.mkdtemp(prefix="homepot-test-postgres-"))
        print(
            f"{why}: the tests run against a throwaway embedded PostgreSQL in {self.cluster_dir}",
            file=sys.stderr,
        )
        return ensure_embedded_postgres(self.cluster_dir)

    def stop(self) -> None:
        """Stop and remove the throwaway cluster (nothing to do for a server the tests found)."""
        if self.cluster_dir is None:
            return
        try:
            stop_embedded_postgres(self.cluster_dir)
        finally:
            shutil.rmtree(self.cluster_dir, ignore_errors=True)
            self.cluster_dir = None
