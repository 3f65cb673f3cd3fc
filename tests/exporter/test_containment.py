"""``never_raise``: an error in our code is logged with its traceback and stops there."""

from __future__ import annotations

import asyncio

import pytest

from exporter.containment import never_raise


def test_an_error_is_logged_with_what_was_lost_and_goes_no_further(
    capsys: pytest.CaptureFixture[str],
) -> None:
    reached = []
    with never_raise("could not record job %s; not recorded", "j-1"):
        raise ValueError("broken attribute")
    reached.append(True)
    err = capsys.readouterr().err
    assert reached == [True]
    assert "could not record job j-1; not recorded" in err
    assert "ValueError: broken attribute" in err  # the traceback, for whoever debugs it


def test_cancellation_and_exit_pass_through() -> None:
    with pytest.raises(asyncio.CancelledError), never_raise("never logged"):
        raise asyncio.CancelledError()
    with pytest.raises(KeyboardInterrupt), never_raise("never logged"):
        raise KeyboardInterrupt()


def test_a_block_without_error_runs_as_it_is(capsys: pytest.CaptureFixture[str]) -> None:
    with never_raise("unused"):
        value = 41 + 1
    assert value == 42 and capsys.readouterr().err == ""
