"""The local control socket behind `gracerun prestop` (a Kubernetes preStop hook).

Kubernetes runs the preStop hook first and sends SIGTERM only when it returns,
and the hook's time counts against the grace period.  So `gracerun prestop`
asks the running gracerun to start the shutdown now and blocks until the
pipeline reaches the stop phase; the SIGTERM that follows belongs to the same
shutdown and is absorbed (supervisor.py).  The shutdown runs once, whichever
trigger comes first, and a second preStop just waits alongside the first.

Protocol: one line per connection.  The client sends "prestop\\n"; the server
answers "stopping\\n" once the stop phase has begun (or at once if it has),
then closes.  The socket is created with mode 0600: only its owner (the user
gracerun runs as) may trigger a shutdown.  Works on both loops (add_reader).
"""

from __future__ import annotations

import logging
import os
import socket
import stat
from typing import Any

from gracerun.core.lifecycle import Event, State, Transition
from gracerun.core.log import event
from gracerun.core.supervisor import Supervisor
from gracerun.errors import GracerunError, UsageError

_MAX_CLIENTS = 16  # listen backlog, and accepts per wake-up
_MAX_OPEN = 64  # connections held at once
_MAX_REQUEST = 64
_REQUEST_TIMEOUT = 5.0  # a client that connects and says nothing is dropped
_ACCEPT_PAUSE = 1.0


class _Client:
    """One connection: what it sent so far, and the timer that drops it if idle."""

    __slots__ = ("buf", "conn", "timer")

    def __init__(self, conn: socket.socket, timer: Any) -> None:
        self.conn = conn
        self.buf = b""
        self.timer = timer


class ControlServer:
    def __init__(self, sup: Supervisor, path: str) -> None:
        self.sup = sup
        self.path = path
        self._sock: socket.socket | None = None
        self._reading: set[_Client] = set()  # still sending their request
        self._waiting: set[_Client] = set()  # asked for prestop, wait for the stop phase
        sup.lifecycle.subscribe(self._on_event)

    def open(self) -> None:
        """Bind the socket (mode 0600), replacing a stale one left by a dead gracerun."""
        if os.path.lexists(self.path):
            if not stat.S_ISSOCK(os.lstat(self.path).st_mode):
                raise UsageError(f"control.socket: {self.path} exists and is not a socket; "
                                 "refusing to replace it")
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                probe.connect(self.path)
            except OSError:
                os.unlink(self.path)  # nobody listens: stale
            else:
                probe.close()
                raise UsageError(f"control.socket: {self.path} is in use by another gracerun")
            finally:
                probe.close()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o177)
        try:
            sock.bind(self.path)
        except OSError as exc:
            sock.close()
            raise UsageError(f"control.socket: cannot bind {self.path}: {exc.strerror}") from None
        finally:
            os.umask(old_umask)
        sock.listen(_MAX_CLIENTS)
        sock.setblocking(False)
        self._sock = sock
        self.sup.loop.add_reader(sock.fileno(), self._accept)
        self.sup.on_finish.append(lambda _tl: self.close())

    def close(self) -> None:
        for client in list(self._waiting):
            self._finish(client, b"stopping\n")
        for client in list(self._reading):
            self._finish(client, b"")
        if self._sock is not None:
            self.sup.loop.remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None
            try:
                os.unlink(self.path)
            except OSError:
                pass

    def _accept(self) -> None:
        assert self._sock is not None
        for _ in range(_MAX_CLIENTS):
            try:
                conn, _ = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                # Out of descriptors (EMFILE/ENFILE) or similar: stop listening
                # for a second instead of spinning on a readable socket.
                event(logging.WARNING, "control socket: cannot accept; pausing",
                      error=exc.strerror or str(exc))
                self.sup.loop.remove_reader(self._sock.fileno())
                self.sup.loop.call_later(_ACCEPT_PAUSE, self._resume)
                return
            if len(self._reading) + len(self._waiting) >= _MAX_OPEN:
                conn.close()  # a flood of clients must not exhaust our descriptors
                continue
            conn.setblocking(False)
            client = _Client(conn, None)
            client.timer = self.sup.loop.call_later(_REQUEST_TIMEOUT, self._expire, client)
            self._reading.add(client)
            self.sup.loop.add_reader(conn.fileno(), self._read, client)

    def _resume(self) -> None:
        if self._sock is not None:
            self.sup.loop.add_reader(self._sock.fileno(), self._accept)

    def _expire(self, client: _Client) -> None:
        if client in self._reading:
            self._finish(client, b"")

    def _read(self, client: _Client) -> None:
        try:
            data = client.conn.recv(_MAX_REQUEST)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:  # hung up before a whole request: nothing to answer
            self._finish(client, b"")
            return
        client.buf += data
        if b"\n" not in client.buf and len(client.buf) < _MAX_REQUEST:
            return
        self._stop_reading(client)
        command = client.buf.split(b"\n", 1)[0].strip()
        if command != b"prestop":
            self._finish(client, b"error unknown command\n")
            return
        event(logging.INFO, "preStop hook received")
        self.sup.begin_shutdown("preStop hook", from_prestop=True)
        if self.sup.lifecycle.stopping:
            self._finish(client, b"stopping\n")
        else:
            self._waiting.add(client)

    def _on_event(self, event: Event) -> None:
        if isinstance(event, Transition) and event.state >= State.STOP:
            for client in list(self._waiting):
                self._finish(client, b"stopping\n")

    def _stop_reading(self, client: _Client) -> None:
        if client in self._reading:
            self._reading.discard(client)
            self.sup.loop.remove_reader(client.conn.fileno())
            if client.timer is not None:
                client.timer.cancel()

    def _finish(self, client: _Client, reply: bytes) -> None:
        """Answer (never raising SIGPIPE at a client that left) and close."""
        self._stop_reading(client)
        self._waiting.discard(client)
        if reply:
            try:
                client.conn.send(reply, socket.MSG_NOSIGNAL)
            except OSError:
                pass
        client.conn.close()


def request_prestop(path: str, timeout: float) -> str:
    """Client side: trigger the shutdown and wait for the stop phase."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(path)
        sock.sendall(b"prestop\n")
        reply = b""
        for _ in range(16):
            chunk = sock.recv(64)
            if not chunk:
                break
            reply += chunk
            if b"\n" in reply:
                break
    except FileNotFoundError:
        raise GracerunError(f"no gracerun control socket at {path} (is gracerun running "
                            f"with control.socket set?)") from None
    except TimeoutError:
        raise GracerunError(f"gracerun did not reach the stop phase within {timeout:g}s") \
            from None
    except OSError as exc:
        raise GracerunError(f"cannot talk to gracerun at {path}: {exc.strerror or exc}") \
            from None
    finally:
        sock.close()
    return reply.decode(errors="replace").strip()
