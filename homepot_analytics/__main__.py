"""The ``homepot-analytics`` command (also ``python -m homepot_analytics``).

The CLI and what its commands run come with the ``server`` extra (the embedded PostgreSQL with
``embedded``): on an installation without them, the command says which extra to install instead
of ending in an ImportError's traceback. Nothing here imports beyond the standard library and
``homepot_foundation.extras`` before the CLI itself.
"""

from __future__ import annotations

import sys

from homepot_foundation.extras import MissingExtraError, extra_for, install_hint


def _fail(message: str) -> None:
    print(f"homepot-analytics: {message}", file=sys.stderr)
    raise SystemExit(1)


def _command(argv: list[str]) -> str:
    words = [word for word in argv if not word.startswith("-")]
    return f"homepot-analytics {words[0]}" if words else "homepot-analytics"


def main() -> None:
    command = _command(sys.argv[1:])
    try:
        from homepot_analytics.cli import app

        app()
    except MissingExtraError as error:
        _fail(str(error))
    except ModuleNotFoundError as error:
        extra = extra_for(error)
        if extra is None:
            raise
        _fail(f"{command} needs the {extra!r} extra ({error.name} is missing): {install_hint(extra)}")


if __name__ == "__main__":  # pragma: no cover
    main()
