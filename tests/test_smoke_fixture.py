from tests.conftest import fetch_rows


def test_fresh_database_has_the_five_empty_tables(db_url: str) -> None:
    for table in (
        "api_request_logs",
        "device_state_history",
        "job_outcomes",
        "error_logs",
        "user_activities",
    ):
        assert fetch_rows(db_url, table) == []
