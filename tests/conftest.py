"""Fixtures for the PID-1 tests (see helpers.py for the process machinery)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import Launcher, set_child_subreaper


@pytest.fixture(scope="session")
def _subreaper() -> None:
    set_child_subreaper()


@pytest.fixture
def launcher(tmp_path: Path, _subreaper: None) -> Iterator[Launcher]:
    """Start processes with launcher.start(argv); teardown leaves none behind.

    Teardown kills the process groups the test created (and anything that left
    them), reaps, and fails the test if a process outlived a gracerun that
    exited by itself: gracerun must not exit before its whole tree is gone.
    """
    launcher = Launcher(tmp_path)
    yield launcher
    stragglers = launcher.cleanup()
    assert not stragglers, f"processes outlived the processes the test started: {stragglers}"
