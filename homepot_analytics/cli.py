"""``homepot-analytics``: a thin command line over functions the tests call directly.

Each command imports its work when it runs, so ``--help`` and ``token`` start at once without
loading the SDK, SQLAlchemy or uvicorn (the layers allow the imports at the top as well).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Any

import typer

from homepot_foundation.settings import get_settings

app = typer.Typer(
    help="HOMEPOT analytics: OpenTelemetry into PostgreSQL, queryable over REST.", no_args_is_help=True
)


def _logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


@app.command("create-tables")
def create_tables(verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False) -> None:
    """Create the five analytics tables, or upgrade an older schema in place."""
    _logging(verbose)
    from exporter.migrations import LATEST_VERSION, migrate
    from homepot_foundation.database import create_engine, resolve_database_url

    engine = create_engine(resolve_database_url(get_settings()))
    try:
        applied = migrate(engine)
    finally:
        engine.dispose()
    if not applied:
        typer.echo(f"Schema is up to date (version {LATEST_VERSION}): nothing to do.")
        return
    for migration in applied:
        typer.echo(f"Applied migration {migration.version}: {migration.description}")
    changes = [change for migration in applied for change in migration.changes]
    if changes:
        # Tables that were there before (HOMEPOT's, on a shared database): what their other
        # writers and readers now find different. The README lists these changes too.
        typer.echo("Changed in the tables that were already there:")
        for change in changes:
            typer.echo(f"  - {change}")
    typer.echo(f"Schema is at version {LATEST_VERSION}.")


@app.command()
def demo(
    requests: Annotated[int, typer.Option(help="API requests the demo traffic makes per round.")] = 200,
    rounds: Annotated[int, typer.Option(help="Rounds of traffic; 0 = until interrupted.", min=0)] = 1,
    history_hours: Annotated[
        int, typer.Option(help="Hours of past traffic recorded first, for the dashboard's trends.", min=0)
    ] = 24,
    serve: Annotated[
        bool,
        typer.Option("--serve", help="Then serve the dashboard on the demo data and print a sign-in link."),
    ] = False,
    host: Annotated[str, typer.Option(help="With --serve: interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="With --serve: port to listen on.")] = 8000,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Run an instrumented HOMEPOT-like service, drive traffic, and summarise the five tables."""
    _logging(verbose)
    from homepot_analytics.demo import port_is_free, run_demo, serve_dashboard

    if serve and not port_is_free(host, port):
        # Before the demo runs, not after: the printed link would point at someone else's server.
        raise typer.BadParameter(f"{host}:{port} is in use: pass another --port", param_hint="--port")
    run_demo(requests=requests, rounds=rounds, serve=serve, history_hours=history_hours)
    if serve:
        serve_dashboard(get_settings(), host=host, port=port)


@app.command("stop-embedded")
def stop_embedded() -> None:
    """Stop the embedded PostgreSQL that runs when no database URL is configured."""
    from homepot_foundation.embedded_db import stop_embedded_postgres

    stopped = stop_embedded_postgres(get_settings().data_dir / "postgres")
    typer.echo("Embedded PostgreSQL stopped." if stopped else "Embedded PostgreSQL was not running.")


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    workers: Annotated[
        int, typer.Option(min=1, help="Worker processes on the port (uvicorn's), each a whole service.")
    ] = 1,
) -> None:
    """Run the analytics service: dashboard, query API, OTLP/HTTP sink and frontend intake."""
    import uvicorn

    # By import path, so that each worker process builds its own app (engines, writer threads).
    uvicorn.run("homepot_analytics.cli:serving_app", factory=True, host=host, port=port, workers=workers)


def serving_app() -> Any:
    """The service as ``serve`` runs it: its modules, settings and app made, then frozen out of
    the garbage collector's sight (``gc.freeze()``: they live as long as the process), so a full
    collection walks only what requests leave behind. The process is ours: no host pays."""
    import gc

    from query_api.app import create_app

    app = create_app()
    gc.freeze()  # sink, 40 requests of 200 spans: 6.2-6.3k rows/s against 5.5-6.0k (bench/README.md)
    return app


@app.command()
def token(
    subject: Annotated[str, typer.Option(help="The token's subject (sub claim).")],
    role: Annotated[str, typer.Option(help="The role claim; admin may read analytics.")] = "admin",
    expires_in: Annotated[int, typer.Option(help="Lifetime in seconds.")] = 3600,
) -> None:
    """Print a JWT signed with HOMEPOT_ANALYTICS_JWT_SECRET for the query API."""
    from query_api.auth import MissingSecretError, issue_token

    try:
        typer.echo(issue_token(get_settings(), subject=subject, role=role, expires_in=expires_in))
    except MissingSecretError as error:
        typer.secho(str(error), err=True, fg=typer.colors.RED)
        raise typer.Exit(2) from None


@app.command()
def purge(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Report what would go; remove nothing.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Apply retention now: drop expired monthly partitions, report what was removed per table."""
    _logging(verbose)
    from exporter.retention import purge as purge_tables
    from exporter.retention import run_retention
    from homepot_foundation.database import create_engine, resolve_database_url

    settings = get_settings()
    engine = create_engine(resolve_database_url(settings))
    try:
        results = purge_tables(engine, settings, dry_run=True) if dry_run else run_retention(engine, settings)
    finally:
        engine.dispose()
    if results is None:
        typer.echo("Another process is applying retention right now; nothing done.", err=True)
        raise typer.Exit(1)
    for result in results:
        typer.echo(("Would remove: " if dry_run else "") + result.describe())
    typer.echo(f"{'Would remove' if dry_run else 'Removed'} {sum(r.rows for r in results)} rows in total.")


@app.command("export")
def export_dataset(
    table: Annotated[str, typer.Option(help="The table: api_request_logs, error_logs, ...")],
    start: Annotated[
        str, typer.Option(help="From (inclusive): 2026-01-01 or ISO 8601, UTC unless an offset.")
    ],
    end: Annotated[str, typer.Option(help="To (exclusive), like --start.")],
    out: Annotated[Path, typer.Option(help="The file to write (replaced when complete).")],
    export_format: Annotated[str, typer.Option("--format", help="csv, jsonl or parquet.")] = "csv",
    progress: Annotated[bool, typer.Option(help="Show a progress bar on stderr.")] = True,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Export a table's rows in a time range for training sets: pseudonymous user ids only."""
    _logging(verbose)
    from homepot_analytics.dataset_export import ExportFormat, export_table, parse_moment, rich_progress
    from homepot_foundation.database import resolve_database_url

    try:
        begin, finish = parse_moment(start), parse_moment(end)
        chosen = ExportFormat(export_format)
    except ValueError as error:
        raise typer.BadParameter(str(error)) from None
    settings = get_settings()
    with rich_progress(f"{table} -> {out.name}", enabled=progress) as bar:
        try:
            result = export_table(
                resolve_database_url(settings), settings, table, begin, finish, chosen, out, progress=bar
            )
        except ValueError as error:
            raise typer.BadParameter(str(error)) from None
    typer.echo(f"Exported {result.rows} rows of {result.table} to {result.path}")


rollups_app = typer.Typer(help="The rollups behind summaries and time series.", no_args_is_help=True)
app.add_typer(rollups_app, name="rollups")


@rollups_app.command("rebuild")
def rebuild_rollups(
    start: Annotated[
        str, typer.Option(help="From (inclusive): 2026-01-01 or ISO 8601, UTC unless an offset.")
    ],
    end: Annotated[str, typer.Option(help="To (exclusive), like --start.")],
    progress: Annotated[bool, typer.Option(help="Show a progress bar on stderr.")] = True,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Recompute the rollup buckets of a time range from the raw rows, an hour at a time (only
    where raw rows are still kept: older history stays as it is)."""
    _logging(verbose)
    from exporter.rollups.rebuild import rebuild
    from homepot_analytics.dataset_export import parse_moment, rich_progress
    from homepot_foundation.database import create_engine, resolve_database_url

    try:
        begin, finish = parse_moment(start), parse_moment(end)
    except ValueError as error:
        raise typer.BadParameter(str(error)) from None
    if finish <= begin:
        raise typer.BadParameter(f"--end ({end}) must be after --start ({start})")
    engine = create_engine(resolve_database_url(get_settings()))
    try:
        with rich_progress("rebuilding rollups (hours)", enabled=progress) as bar, engine.connect() as conn:
            started = False

            def report(done: int, total: int) -> None:
                nonlocal started
                if not started:
                    bar.start(total)
                    started = True
                bar.advance(1)

            hours = rebuild(conn, begin, finish, report)
    finally:
        engine.dispose()
    typer.echo(f"Rebuilt {hours} hours of rollups from the raw rows.")


@rollups_app.command("refresh")
def refresh_rollups(
    progress: Annotated[bool, typer.Option(help="Show a progress bar on stderr.")] = True,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Rebuild now the rollup buckets that new rows made stale (`serve` does it every
    HOMEPOT_ANALYTICS_ROLLUP_REFRESH_SECONDS; run this where no `serve` runs)."""
    _logging(verbose)
    from exporter.rollups.refresh import refresh
    from homepot_analytics.dataset_export import rich_progress
    from homepot_foundation.database import create_engine, resolve_database_url

    engine = create_engine(resolve_database_url(get_settings()))
    try:
        with (
            rich_progress("refreshing rollups (5-minute buckets)", enabled=progress) as bar,
            engine.connect() as conn,
        ):
            reported = -1

            def report(done: int, total: int) -> None:
                nonlocal reported
                if reported < 0:
                    bar.start(total)
                    reported = 0
                bar.advance(done - reported)
                reported = done

            result = refresh(conn, report)
    finally:
        engine.dispose()
    if result.busy:
        typer.echo("Another process is refreshing the rollups; nothing done.")
        return
    skipped = f" ({result.skipped} older than the raw rows, left as they are)" if result.skipped else ""
    typer.echo(f"Refreshed {result.buckets} stale 5-minute buckets of rollups{skipped}.")


if __name__ == "__main__":  # pragma: no cover
    app()
