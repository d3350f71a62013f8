"""gracerun side by side with bare / tini / dumb-init / catatonit, in one run.

    python3 bench/bench.py [--quick] [--runs N] [--json FILE] [--gracerun PATH]

Five measurements, each interleaved: every iteration visits every wrapper in
turn (starting one further along each time), so the noise of a shared machine
falls on all of them alike instead of on whichever ran during a bad second.

1. start-up      wall time (and CPU time) of `WRAPPER /bin/true`, spawn to exit
2. idle RSS      VmRSS of the wrapper while its service sleeps
3. signals       time from just before os.kill(wrapper, SIG) to the first line
                 of the service's handler (both read CLOCK_MONOTONIC); SIGUSR1
                 for the many samples, since SIGTERM ends the service
4. reaping       2,000 orphans re-parented to the wrapper as PID 1 of a new PID
                 namespace, released at once: time until none is left, and
                 the CPU time PID 1 spent on it
5. idle wake-ups context switches of the wrapper over an idle window

Why a virtualenv: the system python3 here loads .pth files from its
site-packages that add tens of milliseconds to every start, which would be
charged to gracerun.  gracerun runs from a venv's console script, installed
non-editable (as in a container image): an editable install's import hook
added about 20 ms here.  --gracerun PATH measures any other build.

The bench makes itself a child subreaper, so processes orphaned by a wrapper
it kills come back to it, and its cleanup kills and reaps, by PID, every
process below it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from procs import (
    BenchError,
    Processes,
    become_subreaper,
    children,
    comm,
    context_switches,
    cpu_ns,
    event_loop_in,
    is_zombie,
    now_ns,
    proc_status,
    status_kb,
)
from report import TABLES, Samples, Table, render, standalone_targets, targets

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SERVICE = HERE / "service.py"
DEFAULT_VENV = Path("/tmp/gracerun-bench-venv")

# Other wrappers, when installed: name, path, arguments before the command.
OTHERS = (
    ("tini", "/usr/bin/tini", ("--",)),
    ("dumb-init", "/usr/bin/dumb-init", ()),
    ("catatonit", "/usr/bin/catatonit", ("--",)),
)

# Sample counts: the full run, and --quick.
FULL = {"runs": 100, "signals": 300, "rounds": 5, "reap_runs": 5}
QUICK = {"runs": 20, "signals": 60, "rounds": 2, "reap_runs": 1}

# Bounds: no wait in this file is open-ended.
SPAWN_EXIT_TIMEOUT = 10.0
READY_TIMEOUT = 15.0
LINE_TIMEOUT = 5.0
REAP_TIMEOUT = 10.0
ORPHAN_SETUP_TIMEOUT = 60.0
POLL_INTERVAL = 0.001  # reaping poll: see reap_once()


@dataclass(frozen=True)
class Wrapper:
    name: str
    prefix: tuple[str, ...]  # argv before the service's command; () for bare

    @property
    def bare(self) -> bool:
        return not self.prefix

    def argv(self, *command: str) -> list[str]:
        return [*self.prefix, *command]


STANDALONE = "gracerun (standalone)"


def find_wrappers(gracerun: str, pipeline_config: str | None,
                  standalone: str | None = None) -> list[Wrapper]:
    found = [Wrapper("bare", ()), Wrapper("gracerun", (gracerun, "--"))]
    # The asyncio path (taken when a pre-stop pipeline, the HTTP
    # endpoint or a Pushgateway is configured) is measured as its own row
    # when --gracerun-config names a config file that enables it.
    if pipeline_config:
        found.append(Wrapper("gracerun (pipeline config)",
                             (gracerun, "--config", pipeline_config, "--")))
    # The self-contained build (scripts/build-standalone), beside the pip install.
    if standalone:
        found.append(Wrapper(STANDALONE, (standalone, "--")))
        if pipeline_config:
            found.append(Wrapper("gracerun (standalone, pipeline config)",
                                 (standalone, "--config", pipeline_config, "--")))
    for name, path, args in OTHERS:
        if os.access(path, os.X_OK):
            found.append(Wrapper(name, (path, *args)))
    return found


def rotated(items: Sequence[Any], start: int) -> list[Any]:
    """items in order, beginning at index start (mod len): the round-robin."""
    k = start % len(items)
    return [*items[k:], *items[:k]]


# ------------------------------------------------------------------ services


@dataclass
class Service:
    """One wrapper running bench/service.py, with pipes to its stdin and stdout."""

    wrapper: Wrapper
    pid: int  # the process we started (and signal): the wrapper, or for bare the service
    out: int
    inp: int
    buf: bytearray = field(default_factory=bytearray)

    def read_line(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([self.out], [], [], max(0.0, left))
            if not ready:
                raise BenchError(f"{self.wrapper.name}: no line from the service in {timeout}s")
            chunk = os.read(self.out, 65536)
            if not chunk:
                raise BenchError(f"{self.wrapper.name}: the service closed its output "
                                 f"(got {bytes(self.buf)!r})")
            self.buf += chunk
        line, _, rest = self.buf.partition(b"\n")
        self.buf = bytearray(rest)
        return line.decode()

    def expect(self, word: str, timeout: float = LINE_TIMEOUT) -> list[str]:
        fields = self.read_line(timeout).split()
        if not fields or fields[0] != word:
            raise BenchError(f"{self.wrapper.name}: expected {word!r} from the service, "
                             f"got {' '.join(fields)!r}")
        return fields[1:]

    def send(self, line: str) -> None:
        os.write(self.inp, f"{line}\n".encode())

    def close(self) -> None:
        for fd in (self.out, self.inp):
            with contextlib.suppress(OSError):
                os.close(fd)


def start_service(procs: Processes, argv: list[str], wrapper: Wrapper) -> Service:
    out_r, out_w = os.pipe()
    in_r, in_w = os.pipe()
    try:
        pid = procs.spawn(argv, stdin=in_r, stdout=out_w)
    finally:
        os.close(out_w)
        os.close(in_r)
    return Service(wrapper, pid, out_r, in_w)


def service_argv(*args: str) -> list[str]:
    # -I -S: the service's own start-up is not measured; skip site and its .pth files.
    return [sys.executable, "-I", "-S", str(SERVICE), *args]


# ------------------------------------------------------------------ measurements

def measure_startup(procs: Processes, wrappers: list[Wrapper], runs: int, samples: Samples
                    ) -> None:
    """Wall time of WRAPPER /bin/true, spawn to exit status, round-robin.

    Also the CPU time (rusage, the wrapper plus /bin/true): on a shared machine
    it moves much less with other people's load than the wall time does.
    """
    for rnd in range(-3, runs):  # three untimed warm-up rounds: page cache, .pyc
        for w in rotated(wrappers, rnd):
            argv = w.argv("/bin/true")
            t0 = now_ns()
            pid = procs.spawn(argv)
            code, cpu_ms = procs.wait_cpu(pid, SPAWN_EXIT_TIMEOUT)
            t1 = now_ns()
            if code != 0:
                raise BenchError(f"{w.name}: {' '.join(argv)} exited with {code} "
                                 f"(None: still running after {SPAWN_EXIT_TIMEOUT}s)"
                                 + stderr_of(argv))
            if rnd >= 0:
                samples["startup_ms"].setdefault(w.name, []).append((t1 - t0) / 1e6)
                samples["startup_cpu_ms"].setdefault(w.name, []).append(cpu_ms)


def stderr_of(argv: list[str]) -> str:
    """What argv says on stderr when run once more, to explain a failure."""
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=SPAWN_EXIT_TIMEOUT,
                              check=False, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"; again: {exc}"
    return f"; again: exit {proc.returncode}, stderr: {proc.stderr.strip()[-500:]!r}"


def settle(pids: list[int], quiet: float = 0.5, limit: float = 10.0) -> None:
    """Wait until none of `pids` has switched context for `quiet` seconds (at most
    `limit`): a wrapper that imports asyncio after the spawn is still starting when
    its service says ready."""
    deadline = time.monotonic() + limit
    last = {pid: context_switches(pid) for pid in pids}
    still_since = time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.05)  # polling interval of the condition below
        now = {pid: context_switches(pid) for pid in pids}
        if now != last:
            last, still_since = now, time.monotonic()
        elif time.monotonic() - still_since >= quiet:
            return


def measure_signals(procs: Processes, wrappers: list[Wrapper], rounds: int, per_round: int,
                    idle: float, samples: Samples, notes: dict[str, str]) -> None:
    """One instance per wrapper at a time, all alive together: idle, RSS, signals."""
    for rnd in range(rounds):
        services: list[Service] = []
        try:
            for w in wrappers:
                services.append(start_service(procs, w.argv(*service_argv("signals")), w))
            for svc in services:
                svc.expect("ready", READY_TIMEOUT)

            settle([svc.pid for svc in services])
            # Idle wake-ups: nothing happens for `idle` seconds; sleeping is the
            # measurement here, not a way to wait for something.
            before = {svc.wrapper.name: context_switches(svc.pid) for svc in services}
            time.sleep(idle)
            for svc in services:
                vol, invol = context_switches(svc.pid)
                vol0, invol0 = before[svc.wrapper.name]
                samples["idle_voluntary_switches"].setdefault(svc.wrapper.name, []).append(
                    vol - vol0)
                samples["idle_involuntary_switches"].setdefault(svc.wrapper.name, []).append(
                    invol - invol0)

            for svc in services:
                status = proc_status(str(svc.pid))
                name = svc.wrapper.name
                if svc.wrapper.bare:
                    continue  # no wrapper: the service's own memory is not overhead
                samples["rss_mb"].setdefault(name, []).append(status_kb(status, "VmRSS") / 1024)
                samples["rss_anon_mb"].setdefault(name, []).append(
                    status_kb(status, "RssAnon") / 1024)
                if name.startswith("gracerun"):
                    notes[f"{name} event loop"] = event_loop_in(svc.pid)

            for i in range(per_round):
                for svc in rotated(services, i + rnd):
                    samples["sigusr1_ms"].setdefault(svc.wrapper.name, []).append(
                        signal_latency(svc, signal.SIGUSR1))

            for svc in rotated(services, rnd):
                t0 = now_ns()
                samples["sigterm_ms"].setdefault(svc.wrapper.name, []).append(
                    signal_latency(svc, signal.SIGTERM, t0))
                code = procs.wait(svc.pid, LINE_TIMEOUT)
                if code != 0:
                    raise BenchError(f"{svc.wrapper.name}: exit code {code} after SIGTERM, "
                                     "expected the service's 0 (None: still running)")
                samples["sigterm_to_exit_ms"].setdefault(svc.wrapper.name, []).append(
                    (now_ns() - t0) / 1e6)
        finally:
            for svc in services:
                svc.close()


def measure_pid1_rss(procs: Processes, wrappers: list[Wrapper], rounds: int,
                     samples: Samples, notes: dict[str, str]) -> None:
    """Idle VmRSS of each wrapper as PID 1 of a new PID namespace, as in a container.

    Not PID 1, gracerun loads ctypes to become a subreaper; as PID 1 it does
    not, so this is the figure a container sees.
    """
    unshare = shutil.which("unshare")
    if unshare is None or os.geteuid() != 0:
        notes["rss as PID 1"] = "skipped: needs root and unshare(1) for a PID namespace"
        return
    for rnd in range(rounds):
        for w in rotated([w for w in wrappers if not w.bare], rnd):
            argv = [unshare, "--pid", "--fork", "--kill-child", "--mount-proc",
                    *w.argv(*service_argv("signals"))]
            svc = start_service(procs, argv, w)
            try:
                svc.expect("ready", READY_TIMEOUT)
                (pid1,) = children(svc.pid)
                status = proc_status(str(pid1))
                if status.get("NSpid", "").split()[-1:] != ["1"]:
                    raise BenchError(f"{w.name}: not PID 1 of the namespace: {status['NSpid']}")
                settle([pid1])
                status = proc_status(str(pid1))
                samples["rss_pid1_mb"].setdefault(w.name, []).append(
                    status_kb(status, "VmRSS") / 1024)
                os.kill(pid1, signal.SIGTERM)
                code = procs.wait(svc.pid, LINE_TIMEOUT)
                if code != 0:
                    raise BenchError(f"{w.name} as PID 1: exit code {code} after SIGTERM, "
                                     "expected the service's 0 (None: still running)")
            finally:
                svc.close()


def signal_latency(svc: Service, signum: int, t0: int | None = None) -> float:
    """Milliseconds from just before kill() to the service's handler."""
    name = signal.Signals(signum).name
    if t0 is None:
        t0 = now_ns()
    os.kill(svc.pid, signum)
    (stamp,) = svc.expect(name)
    return (int(stamp) - t0) / 1e6


def measure_reaping(procs: Processes, wrappers: list[Wrapper], runs: int, count: int,
                    samples: Samples, notes: dict[str, str]) -> None:
    """Orphans re-parented to the wrapper as PID 1 of a new PID namespace."""
    unshare = shutil.which("unshare")
    if unshare is None or os.geteuid() != 0:
        notes["reaping"] = "skipped: needs root and unshare(1) for a PID namespace"
        return
    for rnd in range(runs):
        for w in rotated(wrappers, rnd):
            argv = [unshare, "--pid", "--fork", "--mount-proc",
                    *w.argv(*service_argv("orphans", str(count)))]
            svc = start_service(procs, argv, w)
            try:
                result = reap_once(svc, count)
            finally:
                svc.close()  # end of stdin: the service exits, and with it the namespace
                code = procs.wait(svc.pid, LINE_TIMEOUT)  # on timeout, cleanup() kills it
            if code is None:
                raise BenchError(f"{w.name}: the PID namespace did not end")
            samples["reap_ms"].setdefault(w.name, []).append(result.reaped_ms)
            samples["reap_cpu_ms"].setdefault(w.name, []).append(result.cpu_ms)
            samples["orphans_left"].setdefault(w.name, []).append(result.left)
            if result.exited_ms is not None:
                samples["orphans_exit_ms"].setdefault(w.name, []).append(result.exited_ms)


@dataclass(frozen=True)
class ReapResult:
    reaped_ms: float | None  # release to no orphan left; None: not within REAP_TIMEOUT
    exited_ms: float | None  # release to every orphan a zombie (watched for bare only)
    cpu_ms: float  # CPU time PID 1 of the namespace spent meanwhile
    left: int  # orphans still there at the end


def reap_once(svc: Service, count: int) -> ReapResult:
    """Release the orphans and watch PID 1 of the namespace collect them.

    Reaping is invisible from outside but in /proc: a zombie stays in its
    parent's children list until it is reaped.  Nothing notifies us of that,
    so this polls, every POLL_INTERVAL (a millisecond's resolution, without
    taking a CPU away from the wrapper on a two-core machine).
    """
    svc.expect("orphaned", ORPHAN_SETUP_TIMEOUT)
    kids = children(svc.pid)  # unshare's one child: PID 1 of the namespace
    if len(kids) != 1:
        raise BenchError(f"{svc.wrapper.name}: unshare has {len(kids)} children, expected 1")
    init = kids[0]
    # The cats; under a wrapper, its other child is the service.
    orphans = {pid for pid in children(init) if comm(pid) == "cat"}
    if len(orphans) != count:
        raise BenchError(f"{svc.wrapper.name}: {len(orphans)} orphans under PID 1, "
                         f"expected {count}")
    cpu0 = cpu_ns(init)
    svc.send("go")
    deadline = time.monotonic() + REAP_TIMEOUT
    done_ns = exit_ns = None
    alive = set(orphans)  # bare: not yet seen as a zombie
    left = orphans
    while time.monotonic() < deadline:
        left = orphans.intersection(children(init))
        if not left:
            done_ns = now_ns()
            break
        if svc.wrapper.bare:
            alive = {pid for pid in alive if not is_zombie(pid)}
            if not alive and exit_ns is None:
                exit_ns = now_ns()
                # Nobody reaps in a bare namespace: watch half a second more
                # to show that it stays like this, then stop.
                deadline = min(deadline, time.monotonic() + 0.5)
        time.sleep(POLL_INTERVAL)
    cpu1 = cpu_ns(init)
    (released,) = svc.expect("released")
    t0 = int(released)
    return ReapResult(reaped_ms=None if done_ns is None else (done_ns - t0) / 1e6,
                      exited_ms=None if exit_ns is None else (exit_ns - t0) / 1e6,
                      cpu_ms=(cpu1 - cpu0) / 1e6, left=len(left))


# ------------------------------------------------------------------ set-up


def install_gracerun(venv: Path) -> str:
    """Create the venv if needed and (re)install the working tree into it."""
    pip = venv / "bin" / "pip"
    if not pip.exists():
        run([sys.executable, "-m", "venv", str(venv)])
        run([str(pip), "install", "-q", str(REPO)])
    else:  # snapshot the current source; dependencies are already there
        run([str(pip), "install", "-q", "--no-deps", "--force-reinstall", str(REPO)])
    return str(venv / "bin" / "gracerun")


def run(argv: list[str]) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False)
    if proc.returncode != 0:
        raise BenchError(f"{' '.join(argv)} failed:\n{proc.stderr.strip()}")
    return proc.stdout.strip()


def interpreter_of(script: str) -> str:
    """The #! interpreter of a console script, else the script itself."""
    with open(script, "rb") as fh:
        first = fh.readline()
    return first[2:].decode().strip().split()[0] if first.startswith(b"#!") else script


def describe_machine(gracerun: str, wrappers: list[Wrapper]) -> dict[str, Any]:
    python = interpreter_of(gracerun)
    versions = {}
    for w in wrappers:
        if w.bare or w.name.startswith("gracerun ("):
            continue
        try:
            out = subprocess.run([w.prefix[0], "--version"], capture_output=True, text=True,
                                 timeout=10, check=False)
            versions[w.name] = (out.stdout or out.stderr).strip().splitlines()[0]
        except (OSError, IndexError, subprocess.TimeoutExpired):
            versions[w.name] = "?"
    git = ["git", "-C", str(REPO)]
    try:
        commit = run([*git, "rev-parse", "--short", "HEAD"])
        if run([*git, "status", "--porcelain", "--", "gracerun", "pyproject.toml"]):
            commit += " + uncommitted changes"
    except (BenchError, OSError):
        commit = "?"
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "nproc": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "kernel": platform.release(),
        "machine": platform.machine(),
        "cpu": cpu_model(),
        "load_average_at_start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "gracerun_command": f"{gracerun} -- CMD",
        "gracerun_python": f"{python} ({run([python, '-VV'])})",
        "gracerun_source": f"{REPO} @ {commit}",
        "versions": versions,
    }


def cpu_model() -> str:
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as fh:
        for line in fh:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "?"


def standalone_executable(path: str) -> str:
    """The standalone gracerun executable, given it or the directory holding it."""
    exe = os.path.join(path, "gracerun") if os.path.isdir(path) else path
    if not os.access(exe, os.X_OK):
        raise BenchError(f"no standalone gracerun at {exe} (run scripts/build-standalone)")
    return os.path.abspath(exe)


def disk_mb(*paths: str) -> float:
    """Disk usage (allocated blocks, as du shows) of files and directory trees, in MB.

    Hard links are counted once; symlinks are not followed.
    """
    seen: set[tuple[int, int]] = set()
    total = 0
    for top in paths:
        found = [top]
        if os.path.isdir(top) and not os.path.islink(top):
            for root, dirs, files in os.walk(top):
                found += [os.path.join(root, name) for name in (*dirs, *files)]
        for path in found:
            st = os.lstat(path)
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_blocks * 512
    return total / 1e6


def measure_sizes(standalone: str, gracerun: str) -> dict[str, float]:
    """Size on disk: the standalone directory; the pip install (gracerun and its
    dependencies in site-packages); Debian's packages of the same Python
    version (what a Debian-based image without Python would need first); the
    C wrappers."""
    sizes = {"gracerun (standalone): the whole directory": disk_mb(os.path.dirname(standalone))}
    python = interpreter_of(gracerun)
    names = ("gracerun", "prometheus_client")  # uvloop is an optional extra
    code = ("import json, os, sys, gracerun\n"
            "site = os.path.dirname(os.path.dirname(gracerun.__file__))\n"
            f"print(json.dumps([sys.version_info[:2], site, [n for n in os.listdir(site) "
            f"if n.split('-')[0].lower() in {names!r}]]))")
    # -I: not the working tree's gracerun (the current directory), the installed one.
    version, site, found = json.loads(run([python, "-I", "-c", code]))
    sizes["gracerun (pip install): gracerun + prometheus_client"] = disk_mb(
        *(os.path.join(site, name) for name in found))
    dpkg = shutil.which("dpkg-query")
    if dpkg:
        py = f"python{version[0]}.{version[1]}"
        packages = [py, f"{py}-minimal", f"lib{py}-minimal", f"lib{py}-stdlib"]
        proc = subprocess.run([dpkg, "-W", "-f", "${Installed-Size}\n", *packages],
                              capture_output=True, text=True, timeout=30, check=False)
        if proc.returncode == 0:
            kib = sum(int(line) for line in proc.stdout.split())
            sizes[f"Debian's {py} packages, for an image without Python"] = kib * 1024 / 1e6
    for name, path, _ in OTHERS:
        if os.access(path, os.X_OK):
            sizes[name] = disk_mb(os.path.realpath(path))
    return sizes


# ------------------------------------------------------------------ main


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, help="start-up runs per wrapper (100; quick: 20)")
    p.add_argument("--signals", type=int, help="SIGUSR1 samples per wrapper (300; quick: 60)")
    p.add_argument("--rounds", type=int,
                   help="service instances per wrapper: RSS, idle and SIGTERM samples "
                        "(5; quick: 2)")
    p.add_argument("--idle", type=float, default=3.0, help="idle window in seconds (3)")
    p.add_argument("--orphans", type=int, default=2000, help="orphans per reaping run (2000)")
    p.add_argument("--reap-runs", type=int, help="reaping runs per wrapper (5; quick: 1)")
    p.add_argument("--quick", action="store_true",
                   help="a smoke run with the smaller counts; explicit counts still win")
    p.add_argument("--only", action="append", choices=("startup", "signals", "reaping"),
                   help="run only this part (repeatable)")
    p.add_argument("--gracerun", metavar="PATH",
                   help="gracerun executable to measure (default: install the working tree "
                        f"into {DEFAULT_VENV} and use its console script)")
    p.add_argument("--venv", type=Path, default=DEFAULT_VENV, help=argparse.SUPPRESS)
    p.add_argument("--gracerun-config", metavar="FILE",
                   help="also measure 'gracerun (pipeline config)': gracerun --config FILE, "
                        "for a config that takes the asyncio path")
    p.add_argument("--standalone", metavar="PATH",
                   help="also measure the standalone build: its directory or executable "
                        "(scripts/build-standalone makes build/standalone/gracerun); adds "
                        "its size on disk and its targets against the pip install")
    p.add_argument("--json", metavar="FILE", help="save machine, settings and raw samples")
    args = p.parse_args(argv)
    preset = QUICK if args.quick else FULL
    for name, value in preset.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    for name in ("runs", "signals", "rounds", "orphans", "reap_runs"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    parts = set(args.only or ("startup", "signals", "reaping"))
    try:
        gracerun = args.gracerun or install_gracerun(args.venv)
        if not os.access(gracerun, os.X_OK):
            raise BenchError(f"{gracerun} is not executable")
        config = os.path.abspath(args.gracerun_config) if args.gracerun_config else None
        standalone = standalone_executable(args.standalone) if args.standalone else None
        wrappers = find_wrappers(os.path.abspath(gracerun), config, standalone)
        machine = describe_machine(gracerun, wrappers)
    except BenchError as exc:
        sys.stderr.write(f"bench: {exc}\n")
        return 1
    per_round = -(-args.signals // args.rounds)
    settings = {"startup_runs": args.runs, "sigusr1_per_wrapper": per_round * args.rounds,
                "rounds": args.rounds, "idle_seconds": args.idle, "orphans": args.orphans,
                "reap_runs": args.reap_runs, "parts": sorted(parts)}
    print("\n".join(f"{k}: {v}" for k, v in (*machine.items(), *settings.items())))
    print("wrappers: " + "; ".join(f"{w.name} = {' '.join(w.argv('CMD'))}" for w in wrappers))

    # No ./gracerun.toml or $GRACERUN_CONFIG may change the default path being measured.
    env = {k: v for k, v in os.environ.items() if k != "GRACERUN_CONFIG"}
    samples: Samples = {}
    for table in (*TABLES, Table("rss_anon_mb", "", ""), Table("orphans_exit_ms", "", ""),
                  Table("rss_pid1_mb", "", ""),
                  Table("orphans_left", "", ""),
                  Table("idle_involuntary_switches", "", "")):
        samples[table.key] = {}
    notes: dict[str, str] = {}
    procs = Processes(env)
    leftovers: list[int] = []
    try:
        become_subreaper()
        # From an empty directory: no ./gracerun.toml is picked up.
        with tempfile.TemporaryDirectory(prefix="gracerun-bench-") as tmp, contextlib.chdir(tmp):
            if "startup" in parts:
                progress("start-up", notes)
                measure_startup(procs, wrappers, args.runs, samples)
            if "signals" in parts:
                progress("idle, RSS and signals", notes)
                measure_signals(procs, wrappers, args.rounds, per_round, args.idle, samples,
                                notes)
                measure_pid1_rss(procs, wrappers, args.rounds, samples, notes)
            if "reaping" in parts:
                progress("reaping", notes)
                measure_reaping(procs, wrappers, args.reap_runs, args.orphans, samples, notes)
    except BenchError as exc:
        sys.stderr.write(f"bench: {exc}\n")
        return 1
    except KeyboardInterrupt:
        return 130
    finally:
        leftovers = procs.cleanup()
    if leftovers:
        notes["cleanup"] = f"killed {len(leftovers)} leftover processes: {leftovers[:20]}"

    print(render(samples, [w.name for w in wrappers], notes))
    results = targets(samples, args.orphans)
    print("\ngracerun targets:")
    for t in results:
        print(f"  {'met    ' if t['met'] else 'NOT MET'}  {t['target']}: measured {t['measured']}")
    sizes: dict[str, float] = {}
    if standalone:
        sizes = measure_sizes(standalone, gracerun)
        print("\nSize on disk [MB]:")
        for name, mb in sizes.items():
            print(f"  {name:<72}{mb:>8.2f}")
        results += standalone_targets(samples, sizes)
        print("\nstandalone targets:")
        for t in results:
            if t["target"].startswith("standalone"):
                print(f"  {'met    ' if t['met'] else 'NOT MET'}  {t['target']}: "
                      f"measured {t['measured']}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"machine": machine, "settings": settings, "notes": notes,
                       "wrappers": {w.name: w.argv("CMD") for w in wrappers},
                       "targets": results, "sizes_mb": sizes, "samples": samples}, fh, indent=1)
        print(f"\nraw samples: {args.json}")
    return 0


def progress(what: str, notes: dict[str, str]) -> None:
    """Say what is next, and note the machine's load before it (other people's work;
    the reaping part's own bursts of 2,000 processes show in the figure after it)."""
    sys.stderr.write(f"bench: measuring {what}...\n")
    notes[f"load average before {what}"] = " ".join(f"{x:.2f}" for x in os.getloadavg())


if __name__ == "__main__":
    sys.exit(main())
