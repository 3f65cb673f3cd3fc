"""Dataset export on the real PostgreSQL: the time range, three formats, pseudonymous ids only,
bounded memory, no half-written file, and the command line."""

from __future__ import annotations

import csv
import json
import tracemalloc
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from pydantic import SecretStr
from typer.testing import CliRunner

from exporter.privacy import REDACTED, export_privacy, is_pseudonym, privacy_from_settings
from homepot_analytics.cli import app as cli
from homepot_analytics.dataset_export import export_table, parse_moment
from homepot_foundation.settings import Settings
from tests.support.throwaway import empty_tables


@pytest.fixture()
def settings(database_url: str, tmp_path: Path) -> Settings:
    """The conftest's settings, on tables emptied with DELETE (TRUNCATE of every partition is slow)."""
    empty_tables(database_url)
    return Settings(database_url=database_url, data_dir=tmp_path / "data", export_delay_ms=50)


START = datetime(2026, 3, 1, tzinfo=UTC)
END = datetime(2026, 4, 1, tzinfo=UTC)
ALREADY_PSEUDONYMOUS = "u_" + "ab" * 16


def insert_requests(url: str) -> None:
    rows = [
        # (timestamp, user_id, ip, endpoint, error)
        ("2026-02-28 23:59:59.999999+00", "early", "198.51.100.1", "/x", None),  # before the range
        (
            "2026-03-01 00:00:00+00",
            "alice@example.com",
            "203.0.113.77",
            "/login?password=x&next=/",
            "db at postgresql://app:pw-1234@db/x down",
        ),
        ("2026-03-15 10:00:00+00", ALREADY_PSEUDONYMOUS, "2001:db8:1:2::3", "/devices", None),
        ("2026-04-01 00:00:00+00", "late", "198.51.100.2", "/y", None),  # the end is exclusive
    ]
    with psycopg.connect(url, autocommit=True) as conn:
        for at, user, ip, endpoint, error in rows:
            conn.execute(
                "INSERT INTO api_request_logs (timestamp, endpoint, method, status_code, response_time_ms, "
                "user_id, ip_address, error_message, event_id) "
                "VALUES (%s, %s, 'GET', 500, 2.5, %s, %s, %s, gen_random_uuid())",
                (at, endpoint, user, ip, error),
            )


def insert_jobs(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        for at, initiated_by in (("2026-03-02 00:00:00+00", "system"), ("2026-03-03 00:00:00+00", "bob")):
            conn.execute(
                "INSERT INTO job_outcomes (timestamp, job_id, job_type, status, initiated_by, extra_data, "
                "event_id) VALUES (%s, 'j1', 'restart', 'success', %s, %s, gen_random_uuid())",
                (
                    at,
                    initiated_by,
                    json.dumps({"password": "pw-5678", "n": 1, "note": "token=abc123", "l": [1]}),
                ),
            )


def read(path: Path, export_format: str) -> list[dict[str, Any]]:
    if export_format == "csv":
        with path.open(newline="") as handle:
            return list(csv.DictReader(handle))
    if export_format == "jsonl":
        return [json.loads(line) for line in path.read_text().splitlines()]
    import pyarrow.parquet as pq

    return pq.read_table(path).to_pylist()


@pytest.mark.parametrize("export_format", ["csv", "jsonl", "parquet"])
def test_export_writes_the_range_with_pseudonymous_ids_only(
    export_format: str, settings: Settings, tmp_path: Path
) -> None:
    insert_requests(settings.database_url or "")
    out = tmp_path / f"requests.{export_format}"
    result = export_table(
        settings.database_url or "", settings, "api_request_logs", START, END, export_format, out
    )
    assert result.rows == 2 and result.path == out
    rows = read(out, export_format)
    assert [row["endpoint"] for row in rows] == ["/login?next=/", "/devices"]
    alice = export_privacy(settings).user("alice@example.com")
    # Raw ids (stored with pseudonymisation off, or before it existed) leave as the same pseudonym
    # the deployment stores; stored pseudonyms leave unchanged.
    assert alice == privacy_from_settings(settings).user("alice@example.com")
    assert [row["user_id"] for row in rows] == [alice, ALREADY_PSEUDONYMOUS]
    assert all(is_pseudonym(row["user_id"]) for row in rows)
    assert [row["ip_address"] for row in rows] == ["203.0.113.0", "2001:db8:1::"]
    assert rows[0]["error_message"] == f"db at postgresql://app:{REDACTED}@db/x down"
    assert {str(row["status_code"]) for row in rows} == {"500"}
    first_time = rows[0]["timestamp"]
    if isinstance(first_time, str):
        first_time = datetime.fromisoformat(first_time)
    assert first_time == START
    assert not list(tmp_path.glob("*.partial"))


@pytest.mark.parametrize("export_format", ["csv", "jsonl", "parquet"])
def test_json_columns_and_actors_are_exported_masked(
    export_format: str, settings: Settings, tmp_path: Path
) -> None:
    insert_jobs(settings.database_url or "")
    out = tmp_path / f"jobs.{export_format}"
    export_table(settings.database_url or "", settings, "job_outcomes", START, END, export_format, out)
    rows = read(out, export_format)
    assert [row["initiated_by"] for row in rows] == ["system", export_privacy(settings).user("bob")]
    extra = rows[0]["extra_data"]
    extra = json.loads(extra) if isinstance(extra, str) else extra
    assert extra == {"password": REDACTED, "n": 1, "note": f"token={REDACTED}", "l": [1]}


def test_memory_stays_bounded_whatever_the_range(settings: Settings, tmp_path: Path) -> None:
    url = settings.database_url or ""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO api_request_logs (timestamp, endpoint, method, status_code, response_time_ms, "
            "error_message, event_id) "
            "SELECT '2026-03-02'::timestamptz + n * interval '1 second', '/bulk', 'GET', 200, 1, "
            "repeat('x', 4000), gen_random_uuid() FROM generate_series(1, 5000) AS n"
        )
    out = tmp_path / "bulk.jsonl"
    tracemalloc.start()
    try:
        result = export_table(url, settings, "api_request_logs", START, END, "jsonl", out, batch_rows=200)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.rows == 5000
    size = out.stat().st_size
    assert size > 20_000_000
    # Holding the rows at once would take more than the file; batches of 200 take a fraction.
    assert peak < size / 4, (peak, size)


class FailingProgress:
    def __init__(self) -> None:
        self.total = -1

    def start(self, total: int) -> None:
        self.total = total

    def advance(self, rows: int) -> None:
        raise RuntimeError("disk full")


def test_a_failed_export_leaves_no_file(settings: Settings, tmp_path: Path) -> None:
    insert_requests(settings.database_url or "")
    (tmp_path / "out").mkdir()
    out = tmp_path / "out" / "requests.csv"
    progress = FailingProgress()
    with pytest.raises(RuntimeError, match="disk full"):
        export_table(
            settings.database_url or "",
            settings,
            "api_request_logs",
            START,
            END,
            "csv",
            out,
            progress=progress,
        )
    assert progress.total == 2
    assert list((tmp_path / "out").iterdir()) == []


def test_bad_arguments_are_refused(settings: Settings, tmp_path: Path) -> None:
    url = settings.database_url or ""
    with pytest.raises(ValueError, match="unknown table"):
        export_table(url, settings, "users; DROP TABLE x", START, END, "csv", tmp_path / "x")
    with pytest.raises(ValueError, match="before"):
        export_table(url, settings, "api_request_logs", END, START, "csv", tmp_path / "x")
    with pytest.raises(ValueError):
        export_table(url, settings, "api_request_logs", START, END, "xlsx", tmp_path / "x")
    assert parse_moment("2026-03-01") == START
    assert parse_moment("2026-03-01T01:00:00+01:00") == START
    with pytest.raises(ValueError, match="ISO 8601"):
        parse_moment("March")


@pytest.fixture()
def cli_env(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Any:
    from homepot_foundation.settings import get_settings

    monkeypatch.setenv("HOMEPOT_ANALYTICS_DATABASE_URL", settings.database_url or "")
    monkeypatch.setenv("HOMEPOT_ANALYTICS_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("HOMEPOT_ANALYTICS_PSEUDONYM_KEY", "a-key-for-the-ai-team-export")
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def test_export_command(cli_env: Any, settings: Settings, tmp_path: Path) -> None:
    insert_requests(settings.database_url or "")
    out = tmp_path / "out.jsonl"
    runner = CliRunner()
    args = ["export", "--table", "api_request_logs", "--start", "2026-03-01", "--end", "2026-04-01"]
    result = runner.invoke(cli, [*args, "--format", "jsonl", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert f"Exported 2 rows of api_request_logs to {out}" in result.output
    keyed = Settings(pseudonym_key=SecretStr("a-key-for-the-ai-team-export"), data_dir=tmp_path)
    assert read(out, "jsonl")[0]["user_id"] == export_privacy(keyed).user("alice@example.com")
    quiet = runner.invoke(cli, [*args, "--out", str(tmp_path / "out.csv"), "--no-progress"])
    assert quiet.exit_code == 0, quiet.output
    for bad, message in (
        (["--format", "xlsx"], "xlsx"),
        (["--table", "nope"], "unknown table"),
        (["--start", "yesterday"], "ISO 8601"),
    ):
        refused = runner.invoke(cli, [*args, "--out", str(tmp_path / "bad"), *bad])
        assert refused.exit_code == 2 and message in refused.output, refused.output
    assert not (tmp_path / "bad").exists()
