"""gracerun's first milliseconds: a stop signal before, during and after the spawn.

A shutdown trigger that is pending when the service is about to be spawned
means the service is not started and gracerun exits 128+N with one log line;
one that arrives later is the service's stop signal like any other (app.py).
"""

from __future__ import annotations

import signal
import socket
import time
from pathlib import Path

import pytest
from helpers import Launcher, gracerun, prog

pytestmark = pytest.mark.timeout(180)

NOT_STARTED = "stop signal before the service started: not starting it"
# Records its SIGTERM once its trap is armed; a SIGTERM before that kills it (143).
SERVICE = ("trap 'echo TERM >> \"$0\"; exit 143' TERM; echo armed >> \"$0\"; "
           "while :; do sleep 0.02; done")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_trigger_pending_at_exec_means_the_service_is_not_started(
        launcher: Launcher, tmp_path: Path) -> None:
    """Steps:
    1. launch.py blocks SIGTERM and sends it to itself, then execs gracerun, so
       gracerun starts with SIGTERM pending (the earliest a SIGTERM can come);
    2. gracerun exits 143 without starting the service (its marker file is
       never written), with exactly one line on stderr saying so.
    """
    marker = tmp_path / "started"
    argv = prog("launch.py", "--block", "TERM", "--raise", "TERM", "--",
                *gracerun(cmd=["sh", "-c", f"echo started > {marker}"]))
    rc, _, err = launcher.run(argv)
    assert rc == 143, err
    assert not marker.exists()
    lines = [line for line in err.splitlines() if line]
    assert len(lines) == 1 and NOT_STARTED in lines[0], lines
    assert "SIGTERM" in lines[0]


def test_a_non_trigger_pending_at_exec_is_forwarded(launcher: Launcher,
                                                   tmp_path: Path) -> None:
    """Negative control: SIGUSR1 pending at exec does not stop the start; the
    service starts and gets it once the inbox runs (the recorder reports it)."""
    argv = prog("launch.py", "--block", "USR1", "--raise", "USR1", "--",
                *gracerun(cmd=prog("sigrecorder.py", "--exit-on", "TERM")))
    proc = launcher.start(argv)
    proc.expect(r"^ready pid=\d+")
    proc.send(signal.SIGTERM)
    assert proc.wait() == 143
    assert NOT_STARTED not in proc.stderr


@pytest.mark.parametrize("configured", [False, True], ids=["bare", "phases+endpoint"])
def test_sigterm_in_the_first_200ms_is_never_lost(launcher: Launcher, tmp_path: Path,
                                                  configured: bool) -> None:
    """Steps, 25 runs with SIGTERM sent 0, 8, 16 ... 192 ms after gracerun's exec:
    1. gracerun -v runs a shell service that records "armed" once its TERM
       trap is set and "TERM" when the trap runs (with a config: a propagate
       phase and the HTTP endpoint, so asyncio and prometheus-client load);
    2. SIGTERM to gracerun after the delay;
    3. every run exits 143 within 10 s, and either gracerun said it did not
       start the service (and the service wrote nothing), or it started it and
       the service, if its trap was armed, recorded SIGTERM; never "the service
       is gone" for a stop signal, and nothing is left running.
    """
    opts: list[str] = ["-v"]
    if configured:
        config = tmp_path / "g.toml"
        config.write_text(f'[server]\nlisten = "127.0.0.1:{free_port()}"\n'
                          '[shutdown.propagate]\nsleep = "10ms"\n')
        opts += ["--config", str(config)]
    outcomes = {"not started": 0, "recorded": 0, "before the trap": 0}
    for i in range(25):
        delay = i * 0.008
        record = tmp_path / f"rec{i}"
        proc = launcher.start(gracerun(*opts, cmd=["sh", "-c", SERVICE, str(record)]))
        time.sleep(delay)  # the variable under test, not a synchronisation
        proc.send(signal.SIGTERM)
        rc = proc.wait(10)
        err = proc.stderr
        text = record.read_text() if record.exists() else ""
        where = f"run {i} ({delay * 1000:.0f} ms): rc={rc} record={text!r}\n{err}"
        assert rc == 143, where
        assert "the service is gone" not in err, where
        if NOT_STARTED in err:
            assert text == "", where
            outcomes["not started"] += 1
        elif "armed" in text:
            assert "TERM" in text, where
            outcomes["recorded"] += 1
        else:
            outcomes["before the trap"] += 1
        assert launcher.alive() == [], where
    print(outcomes)
    # The sweep reaches past the start-up: most runs must have a started service.
    assert outcomes["recorded"] > 0, outcomes
