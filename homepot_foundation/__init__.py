"""The foundation every other package stands on: the process settings, database URLs and
engines, and the embedded PostgreSQL used when no database URL is configured.

It imports none of the project's other packages (``make lint`` checks the layers)."""
