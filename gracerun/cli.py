"""The command line, and the one place that turns errors into messages and exit codes.

    gracerun [OPTIONS] -- CMD [ARGS...]     run CMD as a supervised service
    gracerun check [--config F] [--grace-period S]
    gracerun prestop [--config F]           (Kubernetes preStop hook)
    gracerun report STATE_FILE [--format text|svg]
    gracerun help-config                    print the option reference
"""

from __future__ import annotations

import gc
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from gracerun import __version__
from gracerun.config import load as config
from gracerun.errors import GracerunError, UsageError

PROG = "gracerun"
SUBCOMMANDS = ("check", "prestop", "report", "help-config")


if TYPE_CHECKING:
    import argparse


def _run_parser() -> argparse.ArgumentParser:
    import argparse

    from gracerun.commands import make_parser

    parser = make_parser(
        prog=PROG,
        usage=f"{PROG} [OPTIONS] -- CMD [ARGS...]\n       {PROG} {{{','.join(SUBCOMMANDS)}}} ...",
        description="Run CMD as a container's PID 1: forward signals, reap zombies, pass on "
                    "the exit code, and stop the service gracefully within a time budget.",
        epilog="Every option can also be set in gracerun.toml (--config, $GRACERUN_CONFIG, "
               "./gracerun.toml); flags win. 'gracerun help-config' lists the keys.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", metavar="FILE",
                        help="configuration file (default: $GRACERUN_CONFIG, ./gracerun.toml)")
    parser.add_argument("-c", "--single-child", action="store_true",
                        help="forward to the child only: the default, accepted so that "
                             "dumb-init's -c works unchanged")
    from gracerun.config import settings, values
    for setting in settings.SETTINGS:
        if not setting.flags:
            continue
        # argparse only collects; the value goes through the key's own parser in
        # config.load, so a flag and a key are checked (and worded) alike.
        kwargs: dict[str, object] = {
            "dest": setting.key.replace(".", "__"),
            "help": f"{setting.plain_help()} [{setting.key}; default: {setting.default_text()}]"
                    .replace("%", "%%"),
            "action": setting.action,
        }
        if setting.metavar:
            kwargs["metavar"] = setting.metavar
        if isinstance(setting.parse, values.Choice):
            kwargs["choices"] = setting.parse.options
        if setting.action == "count":
            kwargs["default"] = None
        parser.add_argument(*setting.flags, **kwargs)  # type: ignore[arg-type]
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    parser.add_argument("command", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    return parser


def _split(argv: list[str]) -> tuple[list[str], list[str] | None]:
    """Options before '--' and the command after it (None when there is no '--')."""
    if "--" in argv:
        i = argv.index("--")
        return argv[:i], argv[i + 1:]
    return argv, None


def _only_config(opts: list[str]) -> str | None:
    """The FILE of options that are exactly `--config FILE` or `--config=FILE`, else None.

    The usual configured ENTRYPOINT needs no argparse either: building the parser
    (argparse, gettext, locale, shutil) cost ~5 ms before the service was spawned.
    Anything else, a FILE starting with '-' included, goes to argparse, which
    words the errors and the help.
    """
    if len(opts) == 2 and opts[0] == "--config" and not opts[1].startswith("-"):
        return opts[1]
    if len(opts) == 1 and opts[0].startswith("--config="):
        return opts[0].removeprefix("--config=")
    return None


def _cmd_run(argv: list[str]) -> int:
    opts, command = _split(argv)
    config_path: str | None = None
    overrides: dict[str, object] = {}
    only_config = _only_config(opts) if command is not None else None
    if only_config is not None:
        config_path = only_config
    elif opts or command is None:  # `gracerun -- CMD` (the usual ENTRYPOINT) needs no argparse
        ns = _run_parser().parse_args(opts)
        if command is None:
            command = ns.command
        elif ns.command:
            raise UsageError(f"unexpected argument {ns.command[0]!r} before '--' "
                             f"(see '{PROG} --help')")
        config_path = ns.config
        from gracerun.config import settings
        overrides = settings.cli_overrides(vars(ns))
    if not command:
        raise UsageError(f"no command given: expected '{PROG} [OPTIONS] -- CMD [ARGS...]'")
    cfg = config.load(config.find_path(config_path), overrides)

    from gracerun import app
    from gracerun.core import log
    log.setup(cfg.log.verbosity, cfg.log.format)
    return app.run(cfg, command)


def dispatch(argv: list[str]) -> int:
    if argv and argv[0] in SUBCOMMANDS:
        name, rest = argv[0], argv[1:]
        from gracerun import commands
        return int(getattr(commands, name.replace("-", "_"))(rest))
    return _cmd_run(argv)


def main(argv: Sequence[str] | None = None) -> int:
    if argv is None:
        _take_over_process()
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        code = dispatch(args)
    except GracerunError as exc:
        for line in str(exc).splitlines() or [type(exc).__name__]:
            sys.stderr.write(f"{PROG}: error: {line}\n")
        code = exc.exit_code
    except KeyboardInterrupt:
        code = 130
    if argv is None:
        _exit_now(code)
    return code


def _take_over_process() -> None:
    """First thing in a real gracerun process, before anything can write to a
    closed stdout or a signal can be lost (core/linux.py, core/signals.py)."""
    from gracerun.core import linux, signals

    linux.fill_closed_stdio()
    if not (len(sys.argv) > 1 and sys.argv[1] in SUBCOMMANDS):
        signals.hold()
        linux.raise_own_priority()
        # No cyclic GC until the service is spawned (app.run turns it back on): the
        # path there only allocates, and the collections it triggers cost ~2 ms.
        gc.disable()


def _exit_now(code: int) -> None:
    """Exit without interpreter teardown (~9 ms): all that matters is flushed."""
    log = sys.modules.get("gracerun.core.log")
    if log is not None:
        log.flush()  # bounded: a stalled stderr must not hold up the exit
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)
