"""process.event_loop: the standard asyncio loop by default, uvloop on request,
the standard loop (and a warning) when uvloop is asked for but missing."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import Launcher, gracerun, wait_for

pytestmark = pytest.mark.timeout(60)

# Any pre-stop phase puts gracerun on an asyncio loop.
PIPELINE = '[shutdown.propagate]\nsleep = "0s"\n'


def loop_maps(pid: int) -> str | None:
    """gracerun's memory maps once an asyncio loop's extension is among them."""
    with open(f"/proc/{pid}/maps") as fh:
        maps = fh.read()
    return maps if "_asyncio" in maps or "uvloop" in maps else None


def loop_of(launcher: Launcher, tmp_path: Path, *opts: str, prefix: tuple[str, ...] = ()
            ) -> tuple[str, str]:
    """Start gracerun with a pipeline config and `opts`; once its start-up is over,
    return ("uvloop" or "asyncio", gracerun's stderr so far)."""
    config = tmp_path / "g.toml"
    config.write_text(PIPELINE)
    proc = launcher.start([*prefix, *gracerun("--config", str(config), *opts,
                                              cmd=["sleep", "60"])])
    proc.err.wait(r"phase ended phase=starting")
    maps = wait_for(lambda: loop_maps(proc.pid), what="an event loop's extension in the maps")
    kind = "uvloop" if "uvloop" in maps else "asyncio"
    proc.send(15)
    assert proc.wait() == 143
    return kind, proc.stderr


def test_the_standard_loop_is_the_default(launcher: Launcher, tmp_path: Path) -> None:
    kind, err = loop_of(launcher, tmp_path)
    assert kind == "asyncio" and "warning" not in err


def test_uvloop_on_request(launcher: Launcher, tmp_path: Path) -> None:
    pytest.importorskip("uvloop")
    kind, err = loop_of(launcher, tmp_path, "--event-loop", "uvloop")
    assert kind == "uvloop" and "warning" not in err


def test_uvloop_missing_runs_the_standard_loop_and_says_so(launcher: Launcher,
                                                           tmp_path: Path) -> None:
    """Steps: a `uvloop` package that fails to import shadows the real one; gracerun
    asked for uvloop runs (the service started before the loop is chosen), on the
    standard loop, and warns once."""
    fake = tmp_path / "hide" / "uvloop"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text('raise ImportError("not installed here")\n')
    pythonpath = f"{fake.parent}:{launcher.env()['PYTHONPATH']}"
    kind, err = loop_of(launcher, tmp_path, "--event-loop", "uvloop",
                        prefix=("env", f"PYTHONPATH={pythonpath}"))
    assert kind == "asyncio"
    assert err.count('process.event_loop = "uvloop" but uvloop is not installed') == 1


def test_an_unknown_loop_is_a_usage_error(launcher: Launcher, tmp_path: Path) -> None:
    config = tmp_path / "g.toml"
    config.write_text('[process]\nevent_loop = "tokio"\n' + PIPELINE)
    rc, out, err = launcher.run(gracerun("--config", str(config), cmd=["true"]))
    assert rc == 2 and out == "" and "Traceback" not in err
    assert len(err.splitlines()) == 1 and "process.event_loop" in err and "uvloop" in err


@pytest.mark.parametrize("kind", ["asyncio", "uvloop"])
def test_asyncio_errors_go_through_gracerun_log(kind: str) -> None:
    """asyncio reports an exception in a callback through Python's logging, whose
    last-resort handler writes to stderr directly (a blocking write on a stalled
    pipe).  Steps: a loop from new_loop(); a callback that raises; the report
    arrives as one of gracerun's own events, with the error, and the asyncio
    logger has no other way out."""
    import asyncio
    import logging

    from gracerun.core import log
    from gracerun.core.loop import new_loop

    if kind == "uvloop":
        pytest.importorskip("uvloop")

    def boom() -> None:
        raise RuntimeError("callback failed")

    loop = new_loop(True, kind)
    try:
        with log.capture(log.WARNING) as records:
            loop.call_soon(boom)
            loop.run_until_complete(asyncio.sleep(0.01))
    finally:
        loop.close()
    reports = [r for r in records if r.fields.get("logger") == "asyncio"]
    assert reports and "RuntimeError('callback failed')" in reports[0].fields["error"]
    assert reports[0].level == log.ERROR and "Exception in callback" in reports[0].message()
    asyncio_logger = logging.getLogger("asyncio")
    assert not asyncio_logger.propagate and len(asyncio_logger.handlers) == 1
