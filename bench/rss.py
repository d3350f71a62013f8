"""Idle RSS of gracerun with a configuration, next to the floor of its libraries.

    python bench/rss.py --gracerun EXE [--gracerun-before EXE] [--config FILE] [--runs N]

Rows: "floor" is the same interpreter as EXE with asyncio, uvloop and
prometheus-client imported, sleeping (issue 10's definition); "floor without
uvloop" the same without uvloop, which gracerun no longer loads unless
process.event_loop = "uvloop" (the libraries a default run with a configuration
actually loads); "gracerun, config" is
`EXE --config FILE -- sleep 1000` (default FILE: bench/full.toml, a hook, a drain
probe and the HTTP endpoint); "gracerun, no config" is `EXE -- sleep 1000`; with
--gracerun-before, the same two for another install; tini beside them for scale.
Each process is read one second after it started (VmRSS and RssAnon of
/proc/PID/status: the idle figure, once start-up is over), then ended.  Runs are
interleaved; medians in MB.
"gracerun, config, --event-loop uvloop" is the configured run on uvloop (needs
uvloop in EXE's environment).  Not as PID 1: gracerun loads _ctypes to become a
subreaper when it is not (bench.py's "rss as PID 1" row has the container's
figure).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time

FLOOR = "import asyncio, uvloop, prometheus_client, time; time.sleep(1000)"
FLOOR_NO_UVLOOP = "import asyncio, prometheus_client, time; time.sleep(1000)"
FLOOR_ROW = "floor (asyncio+uvloop+prometheus)"
FLOOR_NO_UVLOOP_ROW = "floor without uvloop"
SETTLE = 1.0  # seconds: the measurement is "idle, a second after the start"


def python_of(exe: str) -> str:
    """The interpreter of a console script (its #! line)."""
    with open(exe, "rb") as fh:
        first = fh.readline().decode()
    if not first.startswith("#!"):
        sys.exit(f"{exe}: not a script with a #! line")
    return first[2:].strip().split()[0]


def status_kb(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def measure(argv: list[str]) -> tuple[float, float]:
    """(VmRSS, RssAnon) in MB of argv's process, SETTLE seconds after its start."""
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(SETTLE)  # the point of the measurement, not a synchronisation
        if proc.poll() is not None:
            sys.exit(f"{argv}: exited early with {proc.returncode}")
        return status_kb(proc.pid, "VmRSS") / 1024, status_kb(proc.pid, "RssAnon") / 1024
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--gracerun", required=True, help="an installed gracerun console script")
    p.add_argument("--gracerun-before", help="another one, measured beside it")
    here = os.path.dirname(os.path.abspath(__file__))
    p.add_argument("--config", default=os.path.join(here, "full.toml"))
    p.add_argument("--runs", type=int, default=5)
    a = p.parse_args()
    service = ["sleep", "1000"]
    rows: dict[str, list[str]] = {
        FLOOR_ROW: [python_of(a.gracerun), "-c", FLOOR],
        FLOOR_NO_UVLOOP_ROW: [python_of(a.gracerun), "-c", FLOOR_NO_UVLOOP],
        "gracerun, config": [a.gracerun, "--config", a.config, "--", *service],
        "gracerun, config, --event-loop uvloop": [a.gracerun, "--config", a.config,
                                                  "--event-loop", "uvloop", "--", *service],
        "gracerun, no config": [a.gracerun, "--", *service],
    }
    tini = shutil.which("tini")
    if tini:
        rows["tini (for scale)"] = [tini, "--", *service]
    if a.gracerun_before:
        rows["gracerun before, config"] = [a.gracerun_before, "--config", a.config, "--",
                                           *service]
        rows["gracerun before, no config"] = [a.gracerun_before, "--", *service]
    rss: dict[str, list[float]] = {k: [] for k in rows}
    anon: dict[str, list[float]] = {k: [] for k in rows}
    for _ in range(a.runs):
        for name, argv in rows.items():
            total, private = measure(argv)
            rss[name].append(total)
            anon[name].append(private)
    floor = statistics.median(rss[FLOOR_ROW])
    floor_no_uvloop = statistics.median(rss[FLOOR_NO_UVLOOP_ROW])
    print(f"{'':36s} {'VmRSS':>9s}   vs floor  vs floor without uvloop   RssAnon")
    for name in rows:
        median = statistics.median(rss[name])
        print(f"{name:36s} {median:6.1f} MB   {median / floor - 1:+7.1%}   "
              f"{median / floor_no_uvloop - 1:+7.1%}                 "
              f"{statistics.median(anon[name]):5.1f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
