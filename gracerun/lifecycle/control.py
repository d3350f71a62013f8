"""The local control socket behind `gracerun prestop` (a Kubernetes preStop hook).

Kubernetes runs the preStop hook first and sends SIGTERM only when it returns,
and the hook's time counts against the grace period.  So `gracerun prestop`
asks the running gracerun to start the shutdown now and blocks until the
pipeline reaches the stop phase; the SIGTERM that follows belongs to the same
shutdown and is absorbed (supervisor.py).  The shutdown runs once, whichever
trigger comes first, and a second preStop just waits alongside the first.

Protocol: one line per connection.  The client sends "prestop\\n"; the server
answers "stopping\\n" once the stop phase has begun (or at once if it has),
then closes.  Works on both loops (add_reader).

Who may stop the service: gracerun's own user and root, nobody else.
    - The default socket lives in a directory only gracerun's user can create
      into (config.load.default_control_socket(): /run/gracerun as root), made
      0700 here and refused unless it is a real directory of that user that
      neither group nor others can write to; so no one else can bind the path
      first.
    - Every directory on the way is reached through files.open_dir() (owned by
      gracerun's user or root, no foreign symlinks), and the socket is bound
      through that directory's descriptor with mode 0600.  A stale socket is
      replaced only if it is a socket of ours that nobody listens on.
    - Both ends check the other's credentials (SO_PEERCRED): the server
      answers only clients of its own uid or root; `gracerun prestop` talks
      only to a server of its own uid or root, so an impostor socket on an
      explicitly configured path is refused, not obeyed.
"""

from __future__ import annotations

import errno
import os
import socket
import stat
import struct
import time
from typing import Any

from gracerun.config.load import default_control_socket
from gracerun.core.lifecycle import Event, State, Transition
from gracerun.core.log import INFO, WARNING, event
from gracerun.core.supervisor import Supervisor
from gracerun.errors import GracerunError, UsageError
from gracerun.observe import files

_MAX_CLIENTS = 16  # listen backlog, and accepts per wake-up
_MAX_OPEN = 64  # connections held at once
_MAX_REQUEST = 64
_REQUEST_TIMEOUT = 5.0  # a client that connects and says nothing is dropped
_ACCEPT_PAUSE = 1.0
_UCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


def peer_credentials(sock: socket.socket) -> tuple[int, int, int]:
    """(pid, uid, gid) of the process at the other end of a connected unix socket."""
    return _UCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size))


class _Client:
    """One connection: who it is, what it sent so far, and the timer that drops it if idle."""

    __slots__ = ("buf", "conn", "pid", "timer", "uid")

    def __init__(self, conn: socket.socket) -> None:
        self.conn = conn
        self.buf = b""
        self.timer: Any = None
        try:
            self.pid, self.uid, _ = peer_credentials(conn)
        except OSError:
            self.pid, self.uid = 0, -1


class ControlServer:
    def __init__(self, sup: Supervisor, path: str) -> None:
        self.sup = sup
        self.path = path
        # The default path must be in a private directory; an explicit one only
        # on a trusted path (the peer checks guard the rest).
        self.private = os.path.abspath(path) == default_control_socket()
        self._sock: socket.socket | None = None
        self._dir_fd: int | None = None
        self._bound: tuple[int, int] | None = None  # (st_dev, st_ino) of our socket file
        self._reading: set[_Client] = set()  # still sending their request
        self._waiting: set[_Client] = set()  # asked for prestop, wait for the stop phase
        sup.lifecycle.subscribe(self._on_event)

    def open(self) -> None:
        """Bind the socket (mode 0600) as the module docstring says; UsageError if unsafe."""
        parent, name = os.path.split(os.path.abspath(self.path))
        try:
            dir_fd = files.open_dir(parent, create=self.private)
        except OSError as exc:
            raise UsageError(f"control.socket: {self.path}: cannot use {parent}: "
                             f"{exc.strerror or exc}") from None
        try:
            if self.private:
                self._check_private(parent, os.fstat(dir_fd))
            self._replace_stale(dir_fd, name)
            sock = self._bind(dir_fd, name)
        except BaseException:
            os.close(dir_fd)
            raise
        self._dir_fd = dir_fd
        sock.listen(_MAX_CLIENTS)
        sock.setblocking(False)
        self._sock = sock
        self.sup.loop.add_reader(sock.fileno(), self._accept)
        self.sup.on_finish.append(lambda _tl: self.close())

    def _check_private(self, parent: str, st: os.stat_result) -> None:
        """The default directory: ours alone to create entries in (we make it 0700)."""
        uid = os.geteuid()
        if st.st_uid != uid or st.st_mode & 0o022:
            raise UsageError(f"control.socket: {parent} must be a directory of uid {uid} "
                             f"that only it can write to (gracerun makes it 0700), but it "
                             f"belongs to uid {st.st_uid} with mode "
                             f"{stat.S_IMODE(st.st_mode):04o}; refusing to listen there")

    def _where(self, dir_fd: int, name: str) -> str:
        """A path to `name` in the checked directory that cannot be redirected meanwhile."""
        via = f"/proc/self/fd/{dir_fd}/{name}"
        return via if os.path.isdir(f"/proc/self/fd/{dir_fd}") else self.path

    def _replace_stale(self, dir_fd: int, name: str) -> None:
        try:
            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(st.st_mode):
            raise UsageError(f"control.socket: {self.path} exists and is not a socket; "
                             "refusing to replace it")
        if st.st_uid != os.geteuid():
            raise UsageError(f"control.socket: {self.path} is a socket of uid {st.st_uid}, "
                             f"not ours; refusing to replace it")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.settimeout(1.0)
            probe.connect(self._where(dir_fd, name))
        except ConnectionRefusedError:
            os.unlink(name, dir_fd=dir_fd)  # nobody listens: stale
        except OSError as exc:  # a full backlog (EAGAIN) is a live listener, too busy
            raise UsageError(f"control.socket: {self.path} may be in use (connecting to "
                             f"it: {exc.strerror or exc}); refusing to replace it") from None
        else:
            raise UsageError(f"control.socket: {self.path} is in use by another gracerun")
        finally:
            probe.close()

    def _bind(self, dir_fd: int, name: str) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o177)
        try:
            sock.bind(self._where(dir_fd, name))
            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except OSError as exc:
            sock.close()
            raise UsageError(f"control.socket: cannot bind {self.path}: "
                             f"{exc.strerror or exc}") from None
        finally:
            os.umask(old_umask)
        self._bound = (st.st_dev, st.st_ino)
        return sock

    def close(self) -> None:
        for client in list(self._waiting):
            self._finish(client, b"stopping\n")
        for client in list(self._reading):
            self._finish(client, b"")
        if self._sock is not None:
            self.sup.loop.remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None
        if self._dir_fd is not None:
            name = os.path.basename(self.path)
            try:
                # Only the socket we bound: never a file someone put in its place.
                st = os.stat(name, dir_fd=self._dir_fd, follow_symlinks=False)
                if (st.st_dev, st.st_ino) == self._bound:
                    os.unlink(name, dir_fd=self._dir_fd)
            except OSError:
                pass
            os.close(self._dir_fd)
            self._dir_fd = None

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
                event(WARNING, "control socket: cannot accept; pausing",
                      error=exc.strerror or str(exc))
                self.sup.loop.remove_reader(self._sock.fileno())
                self.sup.loop.call_later(_ACCEPT_PAUSE, self._resume)
                return
            if len(self._reading) + len(self._waiting) >= _MAX_OPEN:
                conn.close()  # a flood of clients must not exhaust our descriptors
                continue
            conn.setblocking(False)
            client = _Client(conn)
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
        if client.uid not in files.trusted_uids():
            # Only gracerun's own user and root may stop the service.  The request
            # is read first, so the client hears why instead of a broken pipe.
            event(WARNING, "control socket: refused a client of another user",
                  uid=client.uid, pid=client.pid)
            self._finish(client, b"error permission denied\n")
            return
        if command != b"prestop":
            self._finish(client, b"error unknown command\n")
            return
        event(INFO, "preStop hook received")
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
    """Client side: trigger the shutdown and wait for the stop phase; return the answer.

    `timeout` (> 0) bounds everything: connecting, the peer check, sending and
    waiting for the answer.  Raises GracerunError when no gracerun listens,
    when the socket belongs to a process of another user (neither ours nor
    root: an impostor), or when the time runs out.
    """
    if not timeout > 0:
        raise UsageError(f"prestop: the timeout must be more than 0, got {timeout:g}")
    deadline = time.monotonic() + timeout

    def left() -> float:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError
        return remaining

    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        while True:
            sock.settimeout(left())
            try:
                sock.connect(path)
                break
            except BlockingIOError:  # the listen backlog is full: gracerun is busy accepting
                time.sleep(min(0.01, left()))
        _, uid, _ = peer_credentials(sock)
        if uid not in files.trusted_uids():
            raise GracerunError(f"the control socket {path} is not gracerun's: it is served "
                                f"by uid {uid} (expected uid {os.geteuid()} or root); "
                                f"not sending it anything")
        sock.settimeout(left())
        sock.sendall(b"prestop\n")
        reply = b""
        for _ in range(16):
            sock.settimeout(left())
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
        if exc.errno == errno.ECONNREFUSED:
            raise GracerunError(f"no gracerun listens on {path} (a stale socket?)") from None
        raise GracerunError(f"cannot talk to gracerun at {path}: {exc.strerror or exc}") \
            from None
    finally:
        sock.close()
    return reply.decode(errors="replace").strip()
