"""Typed errors raised deep down; only cli.py turns them into messages and exit codes."""

from __future__ import annotations


class GracerunError(Exception):
    """Base class for expected failures: shown as one line, never as a traceback."""

    exit_code = 1


class UsageError(GracerunError):
    """Bad command line or configuration (exit 2)."""

    exit_code = 2


class ConfigError(UsageError):
    """One or more problems in gracerun.toml, each with its key path."""

    def __init__(self, problems: list[str], source: str = "") -> None:
        self.problems = problems
        self.source = source
        where = f"{source}: " if source else ""
        super().__init__("\n".join(f"{where}{p}" for p in problems))


class LaunchError(GracerunError):
    """The service could not be started: 127 when not found, 126 when not executable."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code
