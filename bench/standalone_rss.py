#!/usr/bin/env python3
"""Idle RSS of gracerun builds side by side, one process at a time, interleaved.

    bench/standalone_rss.py --runs 20 --config bench/full.toml \\
        standalone=build/standalone/gracerun/gracerun pip=/path/to/venv/bin/gracerun \\
        tini=/usr/bin/tini

Each NAME=EXECUTABLE runs `EXECUTABLE [--config FILE] -- sleep 1000`, alone,
not PID 1 and as PID 1 of a PID namespace (unshare --pid --fork --mount-proc),
with no config and with --config (not for tini); /proc/PID/status is read one
second after the start.  Unlike bench/bench.py, whose wrappers' services are
all alive together, one at a time lets a config listen on a fixed port
(bench/full.toml's endpoint).  Prints medians (kB of VmRSS, RssAnon, RssFile)
and, with --json, saves every sample.  Each process is SIGKILLed and reaped,
with its service, before the next starts.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time

from procs import become_subreaper

FIELDS = ("VmRSS", "RssAnon", "RssFile")
NO_CONFIG = {"tini", "dumb-init", "catatonit"}


def status_kb(pid: int) -> dict[str, int]:
    """The RSS fields of /proc/PID/status, in kB."""
    out = {}
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            key, _, value = line.partition(":")
            if key in FIELDS:
                out[key] = int(value.split()[0])
    return out


def children(pid: int) -> list[int]:
    """pid's children (all threads), [] once it is gone."""
    kids: list[int] = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as fh:
                kids += [int(k) for k in fh.read().split()]
    except (FileNotFoundError, ProcessLookupError):
        pass
    return kids


def tree(pid: int) -> list[int]:
    """pid and everything below it, parents first."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += children(p)
    return out


def first_child(pid: int, deadline: float) -> int:
    while time.monotonic() < deadline:
        kids = children(pid)
        if kids:
            return kids[0]
        time.sleep(0.005)
    raise SystemExit(f"standalone_rss: no child of {pid} within the deadline")


def sample(argv: list[str], pid1: bool, settle: float) -> dict[str, int]:
    """Start argv, read the wrapper's status after `settle` seconds, kill its whole tree."""
    if pid1:
        argv = ["unshare", "--pid", "--fork", "--mount-proc", *argv]
    env = {k: v for k, v in os.environ.items() if k != "GRACERUN_CONFIG"}
    proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        wrapper = first_child(proc.pid, time.monotonic() + 10) if pid1 else proc.pid
        time.sleep(settle)  # the idle window is the measurement
        return status_kb(wrapper)
    finally:
        # The service runs in its own process group: kill the tree by PID, top first
        # so that nothing is restarted, then reap the one child we have.
        below = tree(proc.pid)
        for pid in below:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.wait()
        for pid in below[1:]:
            try:
                os.waitpid(pid, 0)  # ours once its parent died (subreaper)
            except ChildProcessError:
                pass  # reaped by its own parent, or in the PID namespace that died


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("wrappers", nargs="+", metavar="NAME=EXECUTABLE")
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--config", help="also measure each gracerun with --config FILE")
    p.add_argument("--settle", type=float, default=1.0, help="seconds after the start (1)")
    p.add_argument("--json", metavar="FILE")
    args = p.parse_args()
    # A service whose wrapper is killed first is re-parented to us, to be reaped here.
    become_subreaper()
    wrappers = dict(w.split("=", 1) for w in args.wrappers)
    cases = [(name, config, pid1) for name in wrappers
             for config in ((None, args.config) if args.config and name not in NO_CONFIG
                            else (None,))
             for pid1 in (False, True)]
    samples: dict[str, list[dict[str, int]]] = {}
    for i in range(args.runs):
        for name, config, pid1 in cases[i % len(cases):] + cases[:i % len(cases)]:
            key = name + (" --config" if config else "") + (" (PID 1)" if pid1 else "")
            options = ["--config", config] if config else []
            argv = [wrappers[name], *options, "--", "sleep", "1000"]
            samples.setdefault(key, []).append(sample(argv, pid1, args.settle))
    print(f"idle RSS, medians of {args.runs} runs [kB]   " + "  ".join(f"{f:>8}" for f in FIELDS))
    medians = {}
    for key, got in samples.items():
        medians[key] = {f: statistics.median(s[f] for s in got) for f in FIELDS}
        print(f"  {key:<40}" + "  ".join(f"{medians[key][f]:>8.0f}" for f in FIELDS))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                       "runs": args.runs, "settle_s": args.settle, "wrappers": wrappers,
                       "config": args.config, "medians_kb": medians, "samples_kb": samples},
                      fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
