"""Time from a wrapper's exec to its service's first instruction, interleaved.

    python bench/first_instruction.py [--runs N] [--config FILE] [--before DIR]
                                      [--gracerun EXE [--gracerun-before EXE]]

The service is a tiny C program (compiled here with gcc) that prints
CLOCK_MONOTONIC first thing; the bench reads the clock just before it spawns
the wrapper.  Rows: bare, tini, gracerun without and with --config (a
deregister hook, a drain probe and [server] listen), and with --before DIR the
same two for another checkout (PYTHONPATH=DIR), all interleaved run by run.
--gracerun EXE measures an installed console script instead, and
--gracerun-before EXE another one (say, main's install) beside it.
Medians in milliseconds.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

C = ('#include <stdio.h>\n#include <time.h>\nint main(void){struct timespec t;'
     'clock_gettime(CLOCK_MONOTONIC,&t);printf("%lld\\n",(long long)t.tv_sec*1000000000LL'
     '+t.tv_nsec);return 0;}\n')


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--runs", type=int, default=40)
    p.add_argument("--config", required=True)
    p.add_argument("--before")
    p.add_argument("--gracerun", help="a gracerun executable to measure (a console script "
                                      "of a non-editable install, as an image has) instead "
                                      "of `python -m gracerun` from this checkout")
    p.add_argument("--gracerun-before", help="another installed gracerun to measure beside "
                                             "--gracerun, interleaved (before/after)")
    a = p.parse_args()
    a.config = os.path.abspath(a.config)
    tmp = tempfile.mkdtemp()
    src, stamp = os.path.join(tmp, "t.c"), os.path.join(tmp, "stamp")
    with open(src, "w") as fh:
        fh.write(C)
    subprocess.run(["gcc", "-O2", "-o", stamp, src], check=True)
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    py = [sys.executable, "-m", "gracerun"]
    rows: dict[str, tuple[list[str], dict[str, str]]] = {
        "bare": ([], {}),
        "tini": (["tini", "--"], {}),
    }
    if a.gracerun:
        rows["gracerun, no config"] = ([a.gracerun, "--"], {})
        rows["gracerun, config"] = ([a.gracerun, "--config", a.config, "--"], {})
    if a.gracerun and a.gracerun_before:
        rows["gracerun before, no config"] = ([a.gracerun_before, "--"], {})
        rows["gracerun before, config"] = ([a.gracerun_before, "--config", a.config, "--"], {})
    for label, path in (("after", here), ("before", a.before)):
        if path is None or a.gracerun:
            continue
        env = {"PYTHONPATH": path}
        rows[f"gracerun {label}, no config"] = ([*py, "--"], env)
        rows[f"gracerun {label}, config"] = ([*py, "--config", a.config, "--"], env)
    out: dict[str, list[float]] = {k: [] for k in rows}
    for _ in range(a.runs):
        for name, (argv, extra) in rows.items():
            env = {**os.environ, **extra}
            t0 = time.monotonic_ns()
            proc = subprocess.run([*argv, stamp], env=env, capture_output=True, text=True,
                                  cwd=tmp, timeout=30, check=False)
            out[name].append((int(proc.stdout.split()[0]) - t0) / 1e6)
    for name, values in out.items():
        print(f"{name:32s} median {statistics.median(values):7.1f} ms   "
              f"p90 {sorted(values)[int(len(values) * 0.9)]:7.1f} ms")
    shutil.rmtree(tmp)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
