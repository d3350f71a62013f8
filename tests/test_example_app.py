"""The bundled example service, run as a real process and driven over loopback HTTP."""

from __future__ import annotations

import http.client
import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.timeout(60)

APP = Path(__file__).resolve().parent.parent / "examples" / "app.py"
DEADLINE = 10.0  # seconds allowed for any condition a test waits for


@dataclass
class App:
    proc: subprocess.Popen[str]
    port: int
    host: str
    record: Path
    log: Path

    def url(self, path: str) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}{path}"

    def get(self, path: str, timeout: float = 5.0) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(self.url(path), timeout=timeout) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def stats(self) -> dict[str, Any]:
        status, body = self.get("/stats")
        assert status == 200
        return json.loads(body)

    def record_lines(self) -> list[str]:
        return self.record.read_text().splitlines() if self.record.exists() else []


def wait_until(condition: Callable[[], object], what: str, timeout: float = DEADLINE) -> None:
    """Poll ``condition`` until it is true, failing with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


def refuses_connections(app: App) -> bool:
    try:
        socket.create_connection((app.host, app.port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    except ConnectionResetError:  # the SYN met the listening socket as it closed
        return False
    return False


@pytest.fixture
def start_app(tmp_path: Path) -> Iterator[Callable[..., App]]:
    """Start examples/app.py and return once it printed ``ready port=N``; kill it after."""
    procs: list[subprocess.Popen[str]] = []

    def start(*args: str, host: str = "127.0.0.1", env: dict[str, str] | None = None) -> App:
        record, log = tmp_path / f"record{len(procs)}", tmp_path / f"log{len(procs)}"
        port_args = [] if env and "PORT" in env else ["--port", "0"]
        with open(log, "w") as stderr:
            proc = subprocess.Popen(
                [sys.executable, str(APP), "--host", host, *port_args, "--record", str(record),
                 *args],
                stdout=subprocess.PIPE, stderr=stderr, text=True, env={**os.environ, **(env or {})},
            )  # fmt: skip
        procs.append(proc)
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], DEADLINE)
        line = proc.stdout.readline() if ready else ""
        assert line.startswith("ready port="), f"no handshake, got {line!r}: {log.read_text()}"
        return App(proc, int(line.removeprefix("ready port=")), host, record, log)

    yield start
    for proc in procs:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        assert proc.stdout is not None
        proc.stdout.close()


def test_endpoints(start_app: Callable[..., App]) -> None:
    app = start_app()
    assert app.get("/") == (200, f"hello from pid {app.proc.pid}\n")
    assert app.get("/healthz") == (200, "ok")
    assert app.get("/work?ms=50") == (200, "done 50\n")
    assert app.get("/work") == (200, "done 0\n")
    assert app.get("/work?ms=-1")[0] == 400
    assert app.get("/work?ms=abc")[0] == 400
    assert app.get("/nope") == (404, "not found\n")
    assert app.stats()["requests_total"] == 8  # the seven above and this one
    # Earlier request threads may still be finishing: their clients have the response.
    wait_until(lambda: app.get("/inflight") == (200, "0"), "/inflight to show 0")
    wait_until(lambda: app.stats()["inflight"] == 0, "/stats to show 0 in flight")


def test_work_sleeps_server_side(start_app: Callable[..., App]) -> None:
    app = start_app()
    started = time.monotonic()
    assert app.get("/work?ms=300") == (200, "done 300\n")
    assert time.monotonic() - started >= 0.3


def test_keep_alive_with_content_length(start_app: Callable[..., App]) -> None:
    """Two requests go over one HTTP/1.1 connection, each response framed by Content-Length."""
    app = start_app()
    conn = http.client.HTTPConnection(app.host, app.port, timeout=5)
    try:
        for path in ("/healthz", "/inflight"):
            conn.request("GET", path)
            resp = conn.getresponse()
            assert resp.version == 11
            assert resp.getheader("Content-Length") == str(len(resp.read()))
            assert resp.getheader("Connection") is None
        assert app.stats()["requests_total"] == 3
        first_sock = conn.sock
        conn.request("GET", "/")
        conn.getresponse().read()
        assert conn.sock is first_sock  # not reconnected
    finally:
        conn.close()


def test_inflight_counts_a_slow_request(start_app: Callable[..., App]) -> None:
    """Steps: start /work?ms=1500 in a thread; /inflight and /stats show 1 while it runs,
    0 once it has answered."""
    app = start_app()
    with ThreadPoolExecutor(1) as pool:
        slow = pool.submit(app.get, "/work?ms=1500")
        wait_until(lambda: app.get("/inflight") == (200, "1"), "/inflight to show 1")
        assert app.stats()["inflight"] == 1
        assert not slow.done()
        assert slow.result(timeout=DEADLINE) == (200, "done 1500\n")
    # The client has the response a moment before the server thread counts it done.
    wait_until(lambda: app.get("/inflight") == (200, "0"), "/inflight to show 0")


def test_sigusr1_stops_the_consumer_only(start_app: Callable[..., App]) -> None:
    """Steps: the consumer ticks; SIGUSR1; /stats shows it stopped; HTTP still answers."""
    app = start_app()
    wait_until(lambda: app.stats()["consumer_ticks"] >= 2, "the consumer to tick")
    assert app.stats()["consumer_running"] is True
    app.proc.send_signal(signal.SIGUSR1)
    wait_until(lambda: app.stats()["consumer_running"] is False, "the consumer to stop")
    assert app.get("/healthz") == (200, "ok")
    assert app.proc.poll() is None
    assert app.record_lines() == ["signal SIGUSR1"]
    assert "app: consumer stopped" in app.log.read_text()


def test_sigterm_drains_in_flight_requests(start_app: Callable[..., App]) -> None:
    """Steps: start /work?ms=1500; wait until it is in flight; SIGTERM; new connections
    are refused while the slow request is still running; it then completes with 200; the
    app exits 0 and the record file shows the signal, then the exit."""
    app = start_app()
    with ThreadPoolExecutor(1) as pool:
        slow = pool.submit(app.get, "/work?ms=1500")
        wait_until(lambda: app.get("/inflight") == (200, "1"), "/inflight to show 1")
        app.proc.send_signal(signal.SIGTERM)
        wait_until(lambda: refuses_connections(app), "the listening socket to close")
        assert not slow.done()
        assert app.proc.poll() is None
        assert slow.result(timeout=DEADLINE) == (200, "done 1500\n")
    assert app.proc.wait(timeout=DEADLINE) == 0
    assert app.record_lines() == ["signal SIGTERM", "exit 0"]
    log = app.log.read_text()
    assert "app: stopping" in log
    assert "app: stopped inflight=0" in log


def test_drain_timeout_cuts_slow_requests(start_app: Callable[..., App]) -> None:
    """Negative control for the drain test: with --drain-timeout 0.2 the same slow request
    is cut off, so a 200 there really comes from waiting for it."""
    app = start_app("--drain-timeout", "0.2")
    with ThreadPoolExecutor(1) as pool:
        slow = pool.submit(app.get, "/work?ms=3000")
        wait_until(lambda: app.get("/inflight") == (200, "1"), "/inflight to show 1")
        app.proc.send_signal(signal.SIGTERM)
        with pytest.raises((http.client.RemoteDisconnected, ConnectionResetError)):
            slow.result(timeout=DEADLINE)
    assert app.proc.wait(timeout=DEADLINE) == 0
    assert "app: stopped inflight=1" in app.log.read_text()


def test_sigint_stops_gracefully_too(start_app: Callable[..., App]) -> None:
    app = start_app()
    app.proc.send_signal(signal.SIGINT)
    assert app.proc.wait(timeout=DEADLINE) == 0
    assert app.record_lines() == ["signal SIGINT", "exit 0"]


def test_other_signals_are_recorded_in_order(start_app: Callable[..., App]) -> None:
    """Steps: SIGHUP, then SIGUSR2, each waited for in the record file; the app keeps
    serving; SIGTERM ends it. One signal at a time: the order of signals sent together is
    not defined (pending signals are delivered lowest number first)."""
    app = start_app()
    app.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: app.record_lines() == ["signal SIGHUP"], "SIGHUP to be recorded")
    app.proc.send_signal(signal.SIGUSR2)
    wait_until(lambda: len(app.record_lines()) == 2, "SIGUSR2 to be recorded")
    assert app.get("/healthz") == (200, "ok")
    app.proc.send_signal(signal.SIGTERM)
    assert app.proc.wait(timeout=DEADLINE) == 0
    assert app.record_lines() == ["signal SIGHUP", "signal SIGUSR2", "signal SIGTERM", "exit 0"]


def test_port_from_environment(start_app: Callable[..., App]) -> None:
    with socket.socket() as probe:  # a port that was free a moment ago
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    app = start_app(env={"PORT": str(port)})
    assert app.port == port
    assert app.get("/healthz") == (200, "ok")


def test_ipv6_host(start_app: Callable[..., App]) -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    app = start_app(host="::1")
    assert app.get("/healthz") == (200, "ok")


def test_port_in_use_exits_1(start_app: Callable[..., App], tmp_path: Path) -> None:
    app = start_app()
    proc = subprocess.run(
        [sys.executable, str(APP), "--port", str(app.port), "--record", str(tmp_path / "r")],
        capture_output=True, text=True, timeout=DEADLINE,
    )  # fmt: skip
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert "app: cannot listen on 127.0.0.1 port" in proc.stderr
    assert (tmp_path / "r").read_text() == "exit 1\n"


def test_signal_bursts_reach_the_main_thread(start_app: Callable[..., App]) -> None:
    """With request threads running, a signal sent while the main thread already has one
    pending goes to another thread, and the main thread, blocked in its queue, never hears
    of it unless the app blocks its signals in every other thread. Steps: two slow requests
    in flight; five bursts of SIGUSR2 + SIGHUP, each recorded within 2 s; then SIGUSR1 stops
    the consumer, all before the slow requests finish. (Without the mask, most bursts hang.)
    """
    app = start_app()
    with ThreadPoolExecutor(2) as pool:
        slow = [pool.submit(app.get, "/work?ms=3000", DEADLINE) for _ in range(2)]
        wait_until(lambda: app.get("/inflight") == (200, "2"), "two requests in flight")

        def recorded(count: int) -> Callable[[], bool]:
            return lambda: len(app.record_lines()) == count

        for burst in range(1, 6):
            os.kill(app.proc.pid, signal.SIGUSR2)
            os.kill(app.proc.pid, signal.SIGHUP)
            wait_until(recorded(2 * burst), f"burst {burst} to be recorded", 2)
        app.proc.send_signal(signal.SIGUSR1)
        wait_until(lambda: app.stats()["consumer_running"] is False, "the consumer to stop", 2)
        assert not any(f.done() for f in slow)
        app.proc.send_signal(signal.SIGTERM)
        for f in slow:
            assert f.result(timeout=DEADLINE) == (200, "done 3000\n")
    assert app.proc.wait(timeout=DEADLINE) == 0
    lines = app.record_lines()
    assert sorted(lines[:10]) == ["signal SIGHUP"] * 5 + ["signal SIGUSR2"] * 5
    assert lines[10:] == ["signal SIGUSR1", "signal SIGTERM", "exit 0"]


# ------------------------------------------------------------------ the work queue


def make_items(queue: Path, count: int, start: int = 0) -> list[str]:
    """Item files as a producer writes them: under a "." name, then renamed into place,
    so a consumer never takes a half-written item."""
    queue.mkdir(exist_ok=True)
    names = []
    for n in range(start, start + count):
        name = f"item-{n:04d}"
        (queue / f".{name}").write_text(f"payload {n}\n")
        os.rename(queue / f".{name}", queue / name)
        names.append(name)
    return names


def ledger(path: Path) -> list[tuple[str, str, int]]:
    """(event, item, pid) for each line of a ledger file."""
    if not path.exists():
        return []
    return [(event, item, int(pid))
            for event, item, pid in (line.split() for line in path.read_text().splitlines())]


def lost(entries: list[tuple[str, str, int]]) -> set[str]:
    """Items taken and never finished."""
    taken = {item for event, item, _ in entries if event == "taken"}
    return taken - {item for event, item, _ in entries if event == "finished"}


def queued(queue: Path) -> list[str]:
    return sorted(p.name for p in queue.iterdir() if p.is_file())


def test_queue_items_are_taken_once_and_finished(start_app: Callable[..., App],
                                                 tmp_path: Path) -> None:
    """Steps: five items in a queue directory; the app works through them in name order;
    the ledger shows each taken then finished, once, by the app's pid; the queue and its
    taken/ directory end empty; /stats counts five items."""
    queue, book = tmp_path / "queue", tmp_path / "ledger"
    names = make_items(queue, 5)
    app = start_app("--queue", str(queue), "--ledger", str(book), "--item-ms", "20")
    wait_until(lambda: app.stats()["items_finished"] == 5, "five items finished")
    pid = app.proc.pid
    expected = [entry for name in names for entry in (("taken", name, pid),
                                                      ("finished", name, pid))]
    assert ledger(book) == expected
    assert queued(queue) == [] and list((queue / "taken").iterdir()) == []
    assert app.stats()["current_item"] is None


def test_two_instances_share_a_queue_and_take_each_item_once(start_app: Callable[..., App],
                                                             tmp_path: Path) -> None:
    """Steps: two apps consume one queue while 40 items arrive in batches; in the end
    every item was finished exactly once, none was lost, and the two apps' counts add
    up to 40."""
    queue, book = tmp_path / "queue", tmp_path / "ledger"
    queue.mkdir()
    apps = [start_app("--queue", str(queue), "--ledger", str(book), "--item-ms", "5")
            for _ in range(2)]
    names = []
    for batch in range(4):
        names += make_items(queue, 10, start=10 * batch)
        wait_until(lambda: queued(queue) == [], f"batch {batch} to be taken")
    wait_until(lambda: sum(a.stats()["items_finished"] for a in apps) == 40,
               "40 items finished")
    entries = ledger(book)
    finished = sorted(item for event, item, _ in entries if event == "finished")
    assert finished == sorted(names)
    assert lost(entries) == set()
    assert {pid for _, _, pid in entries} <= {a.proc.pid for a in apps}


def _item_in_hand(app: App, book: Path, item_ms: int) -> str:
    """Wait until the app is working on an item; return its name."""
    wait_until(lambda: app.stats()["current_item"] is not None, "an item in hand")
    current = app.stats()["current_item"]
    assert ("taken", current, app.proc.pid) in ledger(book)
    assert ("finished", current, app.proc.pid) not in ledger(book), \
        f"item finished before the test could signal: raise item_ms above {item_ms}"
    return str(current)


def test_sigusr1_finishes_the_item_in_hand_and_takes_no_more(start_app: Callable[..., App],
                                                              tmp_path: Path) -> None:
    """Steps: three items, each 1.5 s of work; once the first is in hand, SIGUSR1 (the
    notify hook); the consumer stops only after finishing that item; the other two stay
    in the queue, untaken; the app still serves HTTP and nothing was lost."""
    queue, book = tmp_path / "queue", tmp_path / "ledger"
    make_items(queue, 3)
    app = start_app("--queue", str(queue), "--ledger", str(book), "--item-ms", "1500")
    current = _item_in_hand(app, book, 1500)
    app.proc.send_signal(signal.SIGUSR1)
    wait_until(lambda: app.stats()["consumer_running"] is False, "the consumer to stop")
    entries = ledger(book)
    pid = app.proc.pid
    assert entries == [("taken", current, pid), ("finished", current, pid)]
    assert queued(queue) == ["item-0001", "item-0002"]
    assert app.get("/healthz") == (200, "ok")
    assert app.stats()["items_finished"] == 1
    assert lost(entries) == set()


def test_sigterm_finishes_the_item_in_hand_before_exit(start_app: Callable[..., App],
                                                       tmp_path: Path) -> None:
    """Steps: two items of 1.5 s; SIGTERM while the first is in hand; the app exits 0
    only after finishing it, and the second is still queued."""
    queue, book = tmp_path / "queue", tmp_path / "ledger"
    make_items(queue, 2)
    app = start_app("--queue", str(queue), "--ledger", str(book), "--item-ms", "1500")
    current = _item_in_hand(app, book, 1500)
    app.proc.send_signal(signal.SIGTERM)
    assert app.proc.wait(timeout=DEADLINE) == 0
    pid = app.proc.pid
    assert ledger(book) == [("taken", current, pid), ("finished", current, pid)]
    assert queued(queue) == ["item-0001"]
    assert app.record_lines() == ["signal SIGTERM", "exit 0"]


def test_sigkill_mid_item_shows_in_the_ledger_as_lost(start_app: Callable[..., App],
                                                      tmp_path: Path) -> None:
    """Negative control for the tests above: an app killed with an item in hand leaves
    that item taken and never finished, in the ledger and in taken/, so "nothing lost"
    is something the ledger can contradict."""
    queue, book = tmp_path / "queue", tmp_path / "ledger"
    make_items(queue, 2)
    app = start_app("--queue", str(queue), "--ledger", str(book), "--item-ms", "5000")
    current = _item_in_hand(app, book, 5000)
    app.proc.kill()
    app.proc.wait(timeout=DEADLINE)
    assert lost(ledger(book)) == {current}
    assert [p.name for p in (queue / "taken").iterdir()] == [current]


def test_queue_options_are_checked(tmp_path: Path) -> None:
    for args, message in ((["--ledger", str(tmp_path / "l")], "--ledger needs --queue"),
                          (["--queue", str(tmp_path), "--item-ms", "-1"],
                           "--item-ms must be 0 or more")):
        proc = subprocess.run([sys.executable, str(APP), "--port", "0", *args],
                              capture_output=True, text=True, timeout=DEADLINE)
        assert proc.returncode == 2, proc.stderr
        assert message in proc.stderr
        assert "Traceback" not in proc.stderr
