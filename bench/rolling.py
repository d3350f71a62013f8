"""A rolling restart under load, behind a real HAProxy, for every wrapper, in one run.

    sudo python3 bench/rolling.py [--quick] [--reps N] [--json F] [--svg F]

Each run: HAProxy (Debian's) on loopback in front of two instances of a service,
"s1" and "s2"; wrk and a recording client send load through it; s1 is stopped
with SIGTERM, and once it has exited a new s1 starts on the same port, as a
rolling deploy would.  s1 runs as PID 1 of a new PID namespace (as in a
container) under each wrapper in turn:

    no wrapper                  the service itself is PID 1
    tini, dumb-init             Debian's
    gracerun                    `gracerun -- CMD`, no configuration
    gracerun + haproxy hooks    examples/haproxy.toml: notify (SIGUSR1), deregister
                                through HAProxy's Runtime API, propagate until
                                HAProxy stops sending (stot), drain until HAProxy
                                has nothing in flight (scur + qcur)
    gracerun + fixed sleep      bench/rolling-sleep.toml: the classic preStop
                                sleep, no deregistration

Four scenarios: the service graceful or naive (bench/services/web.py), with or
without slow requests in the load.  Repetitions are interleaved (every wrapper
once per scenario and repetition, starting one further along each time), so a
noisy moment of the shared machine falls on all of them alike.  What is
measured, and from which witness, is in rolling_report.py.

--demo is scripts/demo's run: examples/app.py (with its work queue) restarted
once under a plain wrapper and once under gracerun with the haproxy hooks.

Every wait has a deadline.  The bench is a child subreaper, and at the end it
SIGKILLs and reaps, by PID, every process below it.  Loopback only.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import rolling_report as report
from procs import BenchError, Processes, become_subreaper, children, wait_exited
from rolling_load import Client, Wrk, WrkResult

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
WEB = HERE / "services" / "web.py"
APP = REPO / "examples" / "app.py"
HOOKS_CONFIG = REPO / "examples" / "haproxy.toml"
SLEEP_CONFIG = HERE / "rolling-sleep.toml"
DEFAULT_VENV = Path("/tmp/gracerun-bench-venv")

# HAProxy's health checks: s1 is out after `fall` failed checks `inter` apart.
CHECK_INTER = 0.5
CHECK_FALL = 2
CHECK_RISE = 2
POLL = 0.02  # show stat, while s1 restarts: the resolution of the detection time

# Bounds: no wait in this file is open-ended.
READY_TIMEOUT = 15.0
BACK_TIMEOUT = 15.0
WARM_TIMEOUT = 10.0


@dataclass(frozen=True)
class Wrapper:
    name: str
    prefix: tuple[str, ...]  # argv before the service's; () for none
    deregisters: bool = False  # takes s1 out of HAProxy itself (so the bench puts it back)


@dataclass(frozen=True)
class Scenario:
    name: str
    mode: str  # graceful | naive (ignored by the demo's examples/app.py)
    slow_ms: int  # 0: no slow requests


@dataclass
class Settings:
    reps: int
    pre: float  # seconds of load before the SIGTERM
    post: float  # after s1 is back in rotation
    stop_timeout: float  # the container runtime's SIGKILL after SIGTERM
    fast_conns: int = 4
    fast_rate: float = 25.0  # requests/s per fast connection
    slow_conns: int = 4
    wrk_conns: int = 4
    wrk_delay_ms: int = 10
    pid_namespace: bool = True
    demo: bool = False


FULL = {"reps": 5, "pre": 2.0, "post": 2.0}
QUICK = {"reps": 1, "pre": 1.0, "post": 1.0}

SCENARIOS = (
    Scenario("graceful service", "graceful", 0),
    Scenario("graceful service, slow requests", "graceful", 1500),
    Scenario("naive service", "naive", 0),
    Scenario("naive service, slow requests", "naive", 1500),
)


def find_wrappers(gracerun: str) -> list[Wrapper]:
    found = [Wrapper("no wrapper", ())]
    for name, path, args in (("tini", "/usr/bin/tini", ("--",)),
                             ("dumb-init", "/usr/bin/dumb-init", ())):
        if os.access(path, os.X_OK):
            found.append(Wrapper(name, (path, *args)))
    found += [
        Wrapper("gracerun", (gracerun, "--")),
        Wrapper("gracerun + haproxy hooks", (gracerun, "--config", str(HOOKS_CONFIG), "--"),
                deregisters=True),
        Wrapper("gracerun + fixed sleep", (gracerun, "--config", str(SLEEP_CONFIG), "--")),
    ]
    return found


def rotated(items: Sequence[Wrapper], start: int) -> list[Wrapper]:
    k = start % len(items)
    return [*items[k:], *items[:k]]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(condition: Callable[[], object], timeout: float, what: str,
               interval: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


# ------------------------------------------------------------------ HAProxy


def ask(path: str, line: str, timeout: float = 2.0) -> str:
    """One Runtime API command on the admin socket: the answer up to EOF."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(timeout)
        sock.connect(path)
        sock.sendall(line.encode() + b"\n")
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer.decode()


class Haproxy:
    """HAProxy in the foreground (its PID is ours), logging each request to a file."""

    def __init__(self, procs: Processes, workdir: Path, frontend: int,
                 servers: dict[str, int], haproxy: str) -> None:
        self.procs, self.frontend = procs, frontend
        self.socket = str(workdir / "admin.sock")
        self.log = workdir / "haproxy.log"
        cfg = workdir / "haproxy.cfg"
        # The defaults are Debian's /etc/haproxy/haproxy.cfg (timeouts, dontlognull; retries
        # is HAProxy's default, 3, without redispatch), plus health checks and a log line
        # that names the server, status and termination state of every request.
        lines = [
            "global",
            "    log stdout format raw local0",
            # One thread: with several, a log line that meets another thread writing is
            # dropped rather than waited for (DroppedLogs in show info).
            "    nbthread 1",
            f"    stats socket {self.socket} level admin",
            "    stats timeout 30s",
            "defaults",
            "    log global",
            "    mode http",
            "    option dontlognull",
            f'    log-format "{report.LOG_FORMAT}"',
            "    timeout connect 5000",
            "    timeout client  50000",
            "    timeout server  50000",
            "frontend fe",
            f"    bind 127.0.0.1:{frontend}",
            "    default_backend app",
            "backend app",
            "    balance roundrobin",
            "    option httpchk",
            "    http-check send meth GET uri /healthz",
            f"    default-server check inter {int(CHECK_INTER * 1000)}ms fall {CHECK_FALL} "
            f"rise {CHECK_RISE}",
            *(f"    server {name} 127.0.0.1:{port}" for name, port in servers.items()),
        ]
        cfg.write_text("\n".join(lines) + "\n")
        check = subprocess.run([haproxy, "-c", "-q", "-f", str(cfg)], capture_output=True,
                               text=True, timeout=20, check=False)
        if check.returncode != 0:
            raise BenchError(f"haproxy -c: {check.stderr.strip()}")
        fd = os.open(self.log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            self.pid = procs.spawn([haproxy, "-f", str(cfg), "-db"], stdout=fd, stderr=fd)
        finally:
            os.close(fd)
        wait_until(self._ready, READY_TIMEOUT, f"haproxy to start (log: {self.log})")

    def _ready(self) -> bool:
        if wait_exited(self.pid, 0):
            raise BenchError(f"haproxy exited: {self.log.read_text()[-800:]}")
        try:
            return "Name: HAProxy" in ask(self.socket, "show info", 1.0)
        except OSError:
            return False

    def status(self, server: str, backend: str = "app") -> str:
        answer = ask(self.socket, "show stat")
        for row in csv.DictReader(answer.removeprefix("# ").splitlines()):
            if row["pxname"] == backend and row["svname"] == server:
                return row["status"]
        raise BenchError(f"no {backend}/{server} in show stat")

    def dropped_logs(self) -> int:
        for line in ask(self.socket, "show info").splitlines():
            if line.startswith("DroppedLogs:"):
                return int(line.split(":")[1])
        return 0

    def stop(self) -> None:
        """Soft stop (SIGUSR1): HAProxy finishes and writes what it has, then exits."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGUSR1)
        if self.procs.wait(self.pid, 10) is None:
            os.kill(self.pid, signal.SIGKILL)
            self.procs.wait(self.pid, 10)


class StatusPoller:
    """show stat every POLL seconds in a thread: when s1's status changed."""

    def __init__(self, hap: Haproxy, server: str) -> None:
        self.hap, self.server = hap, server
        self.changes: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="show-stat", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        last = None
        while True:
            try:
                status = self.hap.status(self.server)
            except (OSError, BenchError):
                status = "?"
            if status != last:
                self.changes.append((time.monotonic(), status))
                last = status
            if self._stop.wait(POLL):
                return

    def current(self) -> str:
        return self.changes[-1][1] if self.changes else "?"

    def first_out(self, after: float) -> float | None:
        """When s1 was first seen out of rotation after `after`."""
        for t, status in self.changes:
            if t >= after and not status.startswith(("UP", "no check", "?")):
                return t
        return None


# --------------------------------------------------------------- the service


class Container:
    """A wrapper and its service as PID 1 of a new PID namespace, as in a container.

    The runtime's part: SIGTERM to PID 1, SIGKILL at the stop timeout (the kernel
    then kills the whole namespace).  unshare(1) waits for its child and exits
    with its status, so unshare's exit is the container's.
    """

    def __init__(self, procs: Processes, argv: Sequence[str], log: Path, env: dict[str, str],
                 pid_namespace: bool) -> None:
        self.procs = procs
        unshare = shutil.which("unshare") or "/usr/bin/unshare"
        prefix = [unshare, "--pid", "--fork", "--kill-child", "--mount-proc"] \
            if pid_namespace else []
        out_r, out_w = os.pipe()
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        saved = procs.env
        procs.env = env
        try:
            self.pid = procs.spawn([*prefix, *argv], stdout=out_w, stderr=fd)
        finally:
            procs.env = saved
            os.close(out_w)
            os.close(fd)
        self.out = out_r
        self.log = log
        self.exited = False
        self._ready()
        if pid_namespace:
            kids = children(self.pid)
            if len(kids) != 1:
                raise BenchError(f"unshare has {len(kids)} children, expected 1")
            self.init = kids[0]
        else:
            self.init = self.pid

    def _ready(self) -> None:
        """Wait for the service's "ready port=N" line."""
        import select

        deadline = time.monotonic() + READY_TIMEOUT
        buf = b""
        while b"\n" not in buf:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([self.out], [], [], max(0.0, left))
            chunk = os.read(self.out, 4096) if ready else b""
            if not chunk:
                raise BenchError(f"no 'ready' from the service ({'closed' if ready else 'timeout'}"
                                 f"); its log:\n{self.log.read_text()[-1500:]}")
            buf += chunk
        if not buf.startswith(b"ready port="):
            raise BenchError(f"the service said {buf!r}, expected 'ready port=N'")

    def stop(self, timeout: float) -> tuple[float, float, int | None, bool]:
        """SIGTERM to PID 1; SIGKILL after timeout: (t_term, t_exit, exit code, killed)."""
        t_term = time.monotonic()
        os.kill(self.init, signal.SIGTERM)
        killed = False
        code = self.procs.wait(self.pid, timeout)
        if code is None:
            killed = True
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.init, signal.SIGKILL)
            code = self.procs.wait(self.pid, 10)
        t_exit = time.monotonic()
        self.exited = code is not None
        return t_term, t_exit, code, killed

    def kill(self) -> None:
        """SIGKILL, unless it has exited already (cleanup; not measured)."""
        if not self.exited:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.init, signal.SIGKILL)
            self.exited = self.procs.wait(self.pid, 10) is not None
        with contextlib.suppress(OSError):
            os.close(self.out)


# -------------------------------------------------------------- one run


@dataclass
class RunContext:
    procs: Processes
    haproxy: str
    settings: Settings
    workdir: Path
    env: dict[str, str]
    service: Callable[[Scenario, int], list[str]]  # (scenario, port) -> argv
    graceful_teardown: bool = False  # end the other instances with SIGTERM, not SIGKILL
    notes: list[str] = field(default_factory=list)


def run_once(ctx: RunContext, wrapper: Wrapper, scenario: Scenario, rep: int, n: int
             ) -> tuple[report.Outcome, Path]:
    """One restart of s1 under load; returns its numbers and its work directory."""
    s = ctx.settings
    workdir = ctx.workdir / f"run{n:03d}"
    workdir.mkdir()
    ports = {"s1": free_port(), "s2": free_port()}
    frontend = free_port()
    env = {**ctx.env,
           "HAPROXY_SOCKET": str(workdir / "admin.sock"), "HAPROXY_BACKEND": "app",
           "HAPROXY_SERVER": "s1", "GRACERUN_STATE": str(workdir / "last-shutdown.json"),
           "PORT": str(ports["s1"]),  # examples/haproxy.toml's start-up probe
           "GRACERUN_CONTROL_SOCKET": str(workdir / "gracerun.sock")}
    started: list[Container] = []

    def container(argv: list[str], name: str) -> Container:
        c = Container(ctx.procs, argv, workdir / f"{name}.log", env,
                      s.pid_namespace and name.startswith("s1"))
        started.append(c)
        return c

    hap: Haproxy | None = None
    client: Client | None = None
    wrk: Wrk | None = None
    wrk_result: WrkResult | None = None
    poller: StatusPoller | None = None
    try:
        container(ctx.service(scenario, ports["s2"]), "s2")
        old = container([*wrapper.prefix, *ctx.service(scenario, ports["s1"])], "s1-old")
        hap = Haproxy(ctx.procs, workdir, frontend, ports, ctx.haproxy)
        hap_ = hap
        wait_until(lambda: hap_.status("s1") == "UP" and hap_.status("s2") == "UP",
                   READY_TIMEOUT, "s1 and s2 UP in HAProxy")

        client = Client("127.0.0.1", frontend, fast_conns=s.fast_conns, fast_rate=s.fast_rate,
                        slow_conns=s.slow_conns if scenario.slow_ms else 0,
                        slow_ms=scenario.slow_ms)
        wrk = Wrk(ctx.procs, f"http://127.0.0.1:{frontend}/", workdir,
                  connections=s.wrk_conns, delay_ms=s.wrk_delay_ms)
        client.start()
        wrk.start()
        client_ = client
        wait_until(lambda: sum(r.ok for r in client_.records) >= 20, WARM_TIMEOUT,
                   "the first 20 successful responses")
        poller = StatusPoller(hap, "s1")
        poller.start()
        time.sleep(s.pre)  # load before the restart: part of the measurement, not a wait

        t_term, t_exit, code, killed = old.stop(s.stop_timeout)
        state = workdir / "last-shutdown.json"
        if state.exists():  # the new instance's own shutdown, at the end, would overwrite it
            state.rename(workdir / "restart-shutdown.json")
        container([*wrapper.prefix, *ctx.service(scenario, ports["s1"])], "s1-new")
        new_up = time.monotonic()
        # With the haproxy hooks, the shutdown left s1 in DRAIN (HAProxy's health checks
        # do not undo an admin state): the new gracerun's start-up puts it back ("set
        # server app/s1 state ready") once its probe sees the service listening.
        poller_ = poller
        wait_until(lambda: poller_.current() == "UP", BACK_TIMEOUT, "s1 back UP in HAProxy")
        # Back: the moment HAProxy showed s1 UP again; if it never took s1 out, the new
        # instance served from the moment it was ready.
        ups = [t for t, status in poller.changes if status == "UP" and t >= t_term]
        back_at = ups[-1] if poller.first_out(t_term) is not None and ups else new_up
        time.sleep(s.post)
        window_end = time.monotonic()
        client.stop()
        wrk_result = wrk.stop()
        poller.stop()
        dropped = hap.dropped_logs()
        if dropped:
            ctx.notes.append(f"run {n}: HAProxy dropped {dropped} log lines")
    finally:
        if poller is not None:
            poller.stop()
        if client is not None:
            with contextlib.suppress(BenchError):
                client.stop()
        if wrk is not None and wrk_result is None and wrk.pid:
            with contextlib.suppress(BenchError, OSError):
                wrk.stop()
        for c in started:
            if ctx.graceful_teardown and not c.exited:
                with contextlib.suppress(OSError):
                    c.stop(10.0)
            c.kill()
        if hap is not None:
            hap.stop()

    log = report.parse_log(hap.log.read_text(errors="replace"))
    outcome = report.outcome(
        wrapper=wrapper.name, scenario=scenario.name, rep=rep, records=client.records,
        wrk=wrk_result, log=log, t_term=t_term, t_exit=t_exit, killed=killed, exit_code=code,
        out_at=poller.first_out(t_term), new_up=new_up, back_at=back_at,
        check_detection=CHECK_INTER * CHECK_FALL,
        window=(t_term - s.pre, window_end))
    return outcome, workdir


# ------------------------------------------------------------------ set-up


def install_gracerun(venv: Path) -> str:
    """The working tree, installed non-editable into a venv (see bench/README.md)."""
    pip = venv / "bin" / "pip"
    if not pip.exists():
        run([sys.executable, "-m", "venv", str(venv)])
        run([str(pip), "install", "-q", str(REPO)])
    else:
        run([str(pip), "install", "-q", "--no-deps", "--force-reinstall", str(REPO)])
    return str(venv / "bin" / "gracerun")


def run(argv: list[str]) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False)
    if proc.returncode != 0:
        raise BenchError(f"{' '.join(argv)} failed:\n{proc.stderr.strip()}")
    return proc.stdout.strip()


def describe(haproxy: str, wrappers: Sequence[Wrapper]) -> dict[str, object]:
    """The machine, the programs' versions and the gracerun commit, for the record."""
    def first_line(argv: list[str]) -> str:
        try:
            out = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
        except (OSError, subprocess.TimeoutExpired):
            return "?"
        text = (out.stdout or out.stderr).strip()
        return text.splitlines()[0] if text else "?"

    versions = {"haproxy": first_line([haproxy, "-v"]), "wrk": first_line(["wrk", "-v"])}
    for w in wrappers:
        if w.prefix and not w.name.startswith("gracerun"):
            versions[w.name] = first_line([w.prefix[0], "--version"])
    commit = first_line(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"])
    if first_line(["git", "-C", str(REPO), "status", "--porcelain", "--", "gracerun"]) != "?":
        commit += " + uncommitted changes"
    return {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "cpus": os.cpu_count(), "kernel": os.uname().release,
            "load_average_start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
            "gracerun_commit": commit, "python": sys.version.split()[0], "versions": versions}


def web_service(scenario: Scenario, port: int) -> list[str]:
    return [sys.executable, "-I", "-S", str(WEB), "--mode", scenario.mode, "--port", str(port)]


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="one repetition, shorter windows")
    p.add_argument("--reps", type=int, help="repetitions of every wrapper and scenario "
                                            "(5; quick: 1)")
    p.add_argument("--stop-timeout", type=float, default=35.0, metavar="SECONDS",
                   help="SIGKILL this long after SIGTERM, as a container runtime does "
                        "(35, the terminationGracePeriodSeconds the examples are written for)")
    p.add_argument("--scenario", action="append", choices=[sc.name for sc in SCENARIOS],
                   help="run only this scenario (repeatable)")
    p.add_argument("--wrapper", action="append", metavar="NAME",
                   help="run only this wrapper (repeatable; names as in the table)")
    p.add_argument("--gracerun", metavar="PATH",
                   help=f"gracerun to measure (default: the working tree in {DEFAULT_VENV})")
    p.add_argument("--venv", type=Path, default=DEFAULT_VENV, help=argparse.SUPPRESS)
    p.add_argument("--json", metavar="FILE", help="save settings and every run's numbers")
    p.add_argument("--svg", metavar="FILE", help="write the plot of responses over time")
    p.add_argument("--keep", action="store_true", help="keep the runs' logs (printed path)")
    p.add_argument("--report", metavar="JSON",
                   help="measure nothing: print the tables (and --svg) of a saved --json run")
    p.add_argument("--demo", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    preset = QUICK if args.quick or args.demo else FULL
    args.settings = Settings(reps=args.reps or int(preset["reps"]), pre=preset["pre"],
                             post=preset["post"], stop_timeout=args.stop_timeout,
                             pid_namespace=os.geteuid() == 0 and bool(shutil.which("unshare")),
                             demo=args.demo)
    if args.settings.reps < 1:
        p.error("--reps must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    s: Settings = args.settings
    if args.report:
        saved = json.loads(Path(args.report).read_text())
        s.reps, s.post = saved["settings"]["reps"], saved["settings"]["post"]
        show([report.from_json(raw) for raw in saved["runs"]], list(saved["wrappers"]),
             [sc.name for sc in SCENARIOS if any(r["scenario"] == sc.name
                                                 for r in saved["runs"])], s, args, [])
        return 0
    haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
    missing = [name for name, path in (("haproxy", haproxy), ("wrk", "/usr/bin/wrk"))
               if not os.access(path, os.X_OK)]
    if missing:
        sys.stderr.write(f"rolling: needs {' and '.join(missing)}: "
                         f"apt-get install {' '.join(missing)}\n")
        return 2
    try:
        gracerun = args.gracerun or install_gracerun(args.venv)
    except BenchError as exc:
        sys.stderr.write(f"rolling: {exc}\n")
        return 1
    if args.demo:
        from rolling_demo import demo

        return demo(args, haproxy, os.path.abspath(gracerun))

    wrappers = find_wrappers(os.path.abspath(gracerun))
    if args.wrapper:
        unknown = set(args.wrapper) - {w.name for w in wrappers}
        if unknown:
            sys.stderr.write(f"rolling: unknown wrapper(s) {sorted(unknown)}; "
                             f"known: {[w.name for w in wrappers]}\n")
            return 2
        wrappers = [w for w in wrappers if w.name in args.wrapper]
    scenarios = [sc for sc in SCENARIOS if not args.scenario or sc.name in args.scenario]
    described = [f"{w.name} = {' '.join(w.prefix) or '(none)'}" for w in wrappers]
    print(f"wrappers: {'; '.join(described)}")
    print(f"scenarios: {'; '.join(sc.name for sc in scenarios)}; repetitions: {s.reps}; "
          f"PID 1 of a PID namespace: {s.pid_namespace}; stop timeout {s.stop_timeout:g}s")
    machine = describe(haproxy, wrappers)
    print("\n".join(f"{k}: {v}" for k, v in machine.items()))

    env = {k: v for k, v in os.environ.items() if k != "GRACERUN_CONFIG"}
    procs = Processes(env)
    outcomes: list[report.Outcome] = []
    notes: list[str] = []
    tmp = tempfile.mkdtemp(prefix="gracerun-rolling-")
    try:
        become_subreaper()
        with contextlib.chdir(tmp):
            ctx = RunContext(procs, haproxy, s, Path(tmp), env, web_service, notes=notes)
            n = 0
            total = s.reps * len(scenarios) * len(wrappers)
            for rep in range(s.reps):
                for k, scenario in enumerate(scenarios):
                    for wrapper in rotated(wrappers, rep + k):
                        n += 1
                        o, _ = run_once(ctx, wrapper, scenario, rep, n)
                        outcomes.append(o)
                        sys.stderr.write(
                            f"rolling: {n}/{total} {scenario.name} / {wrapper.name}: "
                            f"failed {o.failed_log} (log) {o.failed_client} (clients), "
                            f"exit {o.to_exit:.2f}s, least {o.least:.2f}s\n")
    except BenchError as exc:
        sys.stderr.write(f"rolling: {exc}\n(logs kept in {tmp})\n")
        args.keep = True
        return 1
    except KeyboardInterrupt:
        return 130
    finally:
        left = procs.cleanup()
        if left:
            notes.append(f"cleanup killed {len(left)} leftover processes")
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"logs: {tmp}")

    names = [w.name for w in wrappers]
    results = show(outcomes, names, [sc.name for sc in scenarios], s, args, notes)
    if args.json:
        with open(args.json, "w") as fh:
            machine["load_average_end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
            json.dump({"machine": machine, "settings": vars(s),
                       "wrappers": {w.name: list(w.prefix) for w in wrappers},
                       "check": {"inter": CHECK_INTER, "fall": CHECK_FALL, "rise": CHECK_RISE},
                       "targets": results, "notes": notes,
                       "runs": [report.to_json(o) for o in outcomes]}, fh, indent=1)
        print(f"raw numbers: {args.json}")
    return 0


def show(outcomes: Sequence[report.Outcome], names: Sequence[str], scenarios: Sequence[str],
         s: Settings, args: argparse.Namespace, notes: Sequence[str]) -> list[dict[str, object]]:
    """Print the tables and the targets; write the SVG if asked; return the targets."""
    print("\nAll scenarios:\n")
    print("\n".join(report.summary(outcomes, names)))
    for scenario in scenarios:
        print()
        print("\n".join(report.table(outcomes, names, scenario)))
        kinds = report.failure_kinds(outcomes, names, scenario)
        if kinds:
            print("\nfailures, all runs:")
            print("\n".join(kinds))
    results = targets(outcomes)
    print("\ngracerun + haproxy hooks, targets:")
    for t in results:
        print(f"  {'met    ' if t['met'] else 'NOT MET'}  {t['target']}: {t['measured']}")
    for note in notes:
        print(f"note: {note}")
    if args.svg:
        until = min(12.0, max(o.back or o.to_exit for o in outcomes) + s.post)
        Path(args.svg).write_text(report.svg(
            outcomes, names, scenarios, until,
            "Successful responses through HAProxy while s1 restarts (recording client, "
            f"mean of {s.reps} run{'s' if s.reps > 1 else ''} per line)"))
        print(f"plot: {args.svg}")
    return results


def targets(outcomes: Sequence[report.Outcome]) -> list[dict[str, object]]:
    """The issue's goal for gracerun with the haproxy hooks, over every run."""
    runs = [o for o in outcomes if o.wrapper == "gracerun + haproxy hooks"]
    if not runs:
        return []
    failed = sum(o.failed_log + o.failed_client for o in runs)
    worst = max(o.to_exit - o.least for o in runs)
    return [
        {"target": "zero failed requests (HAProxy log and clients), every run",
         "measured": f"{failed} failed in {len(runs)} runs", "met": failed == 0},
        {"target": "SIGTERM -> exit within 1 s of the least possible, every run",
         "measured": f"worst {worst:+.2f} s", "met": worst <= 1.0},
    ]


if __name__ == "__main__":
    sys.exit(main())
